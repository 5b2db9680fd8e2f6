import { KilnError } from '../../cache/errors.js';

/**
 * Go's filepath.Match (and path.Match, the same on Unix): `*` is any run of characters but `/`,
 * `?` one character but `/`, `[...]` a class of characters and ranges (`^` negates; `!` does
 * too, as Kiln has always accepted it), `\` escapes the next character.
 *
 * Matching follows Go's algorithm: the pattern is cut into chunks at each `*`, and each chunk
 * takes its leftmost match, never revisited. A chunk has no `*` inside, so it is tried at most
 * once per position of the name: time is bounded by the name's length times the pattern's,
 * whatever the pattern. (A backtracking RegExp took exponential time on `a*a*a*a*b`.)
 *
 * Unlike Go, which notices some malformed patterns only when a match reaches them, the whole
 * pattern is checked when compiled, so a malformed one fails whatever it is matched against.
 */
export type Matcher = (name: string) => boolean;

/**
 * Work done by every match so far: one unit per character compared. Tests read it to show that
 * a match stays bounded by the name's length times the pattern's.
 */
export const matchWork = { steps: 0 };

type Item = { k: 'lit'; cp: number } | { k: 'any' } | { k: 'class'; negated: boolean; ranges: [number, number][] };

interface Chunk {
  /** Whether a `*` comes before the chunk. */
  star: boolean;
  items: Item[];
}

const SLASH = 0x2f;

/**
 * Compiles a pattern; throws KilnError('INVALID_PATTERN') when it is malformed, naming
 * `options.source` (the whole pattern as written, when this is one segment of it) or the pattern.
 */
export function compileMatch(pattern: string, options: { source?: string } = {}): Matcher {
  let chunks: Chunk[];
  try {
    chunks = parse(pattern);
  } catch (err) {
    if (!(err instanceof PatternSyntax)) throw err;
    throw new KilnError('INVALID_PATTERN', `Invalid pattern "${options.source ?? pattern}": ${err.message}`, {
      hint: 'Patterns use Go filepath.Match syntax; escape a literal "[", "*", "?" or "\\" with a backslash',
    });
  }
  return (name) => matchChunks(chunks, Array.from(name, (c) => c.codePointAt(0)!));
}

/** The description of what is wrong with a pattern, or undefined when it is well formed. */
export function patternSyntaxError(pattern: string): string | undefined {
  try {
    parse(pattern);
    return undefined;
  } catch (err) {
    if (err instanceof PatternSyntax) return err.message;
    throw err;
  }
}

class PatternSyntax extends Error {}

function parse(pattern: string): Chunk[] {
  const cps = Array.from(pattern, (c) => c.codePointAt(0)!);
  const chunks: Chunk[] = [{ star: false, items: [] }];
  let i = 0;
  const classChar = (): number => {
    let cp = cps[i];
    if (cp === undefined) throw new PatternSyntax('a character class is not closed');
    if (cp === 0x2d || cp === 0x5d) throw new PatternSyntax(`a character class item cannot start with "${String.fromCodePoint(cp)}"`);
    if (cp === 0x5c) {
      cp = cps[++i];
      if (cp === undefined) throw new PatternSyntax('a character class is not closed');
    }
    i++;
    return cp;
  };
  while (i < cps.length) {
    const cp = cps[i]!;
    if (cp === 0x2a) {
      while (cps[i] === 0x2a) i++;
      chunks.push({ star: true, items: [] });
      continue;
    }
    const items = chunks.at(-1)!.items;
    if (cp === 0x3f) {
      items.push({ k: 'any' });
      i++;
    } else if (cp === 0x5c) {
      const escaped = cps[i + 1];
      if (escaped === undefined) throw new PatternSyntax('a backslash at the end escapes nothing');
      items.push({ k: 'lit', cp: escaped });
      i += 2;
    } else if (cp === 0x5b) {
      i++;
      const negated = cps[i] === 0x5e || cps[i] === 0x21;
      if (negated) i++;
      const ranges: [number, number][] = [];
      while (ranges.length === 0 || cps[i] !== 0x5d) {
        const lo = classChar();
        let hi = lo;
        if (cps[i] === 0x2d) {
          i++;
          hi = classChar();
          if (hi < lo) throw new PatternSyntax(`the range "${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}" is reversed`);
        }
        ranges.push([lo, hi]);
      }
      i++;
      items.push({ k: 'class', negated, ranges });
    } else {
      items.push({ k: 'lit', cp });
      i++;
    }
  }
  return chunks;
}

/** Matches the chunk at `at`: the position after it, or -1. */
function matchChunk(items: readonly Item[], name: readonly number[], at: number): number {
  for (const item of items) {
    matchWork.steps++;
    const cp = name[at];
    if (cp === undefined) return -1;
    if (item.k === 'lit') {
      if (cp !== item.cp) return -1;
    } else if (item.k === 'any') {
      if (cp === SLASH) return -1;
    } else if (item.ranges.some(([lo, hi]) => lo <= cp && cp <= hi) === item.negated) {
      // Classes may match `/`, as in Go: only `*` and `?` stop at a separator.
      return -1;
    }
    at++;
  }
  return at;
}

function matchChunks(chunks: readonly Chunk[], name: readonly number[]): boolean {
  let at = 0;
  next: for (let c = 0; c < chunks.length; c++) {
    const { star, items } = chunks[c]!;
    const last = c === chunks.length - 1;
    if (star && items.length === 0) {
      // A trailing `*` takes the rest of the name unless a `/` is in it.
      for (let j = at; j < name.length; j++) if (name[j] === SLASH) return false;
      return true;
    }
    // The last chunk must end the name; an earlier one takes its leftmost match.
    const end = matchChunk(items, name, at);
    if (end >= 0 && (!last || end === name.length)) {
      at = end;
      continue;
    }
    if (!star) return false;
    for (let from = at; from < name.length && name[from] !== SLASH; from++) {
      const e = matchChunk(items, name, from + 1);
      if (e >= 0 && (!last || e === name.length)) {
        at = e;
        continue next;
      }
    }
    return false;
  }
  return at === name.length;
}
