/**
 * Shell wildcard patterns of `${var#pattern}`, `${var%pattern}` and `${var/pattern/text}`:
 * `*` is any run of characters, `?` one character, and a backslash makes `*`, `?` or itself
 * literal. Bracket expressions are not supported, as in BuildKit, so `[` is literal.
 */

/** Thrown for a malformed pattern; the caller adds the word being expanded. */
export class PatternSyntaxError extends Error {
  override readonly name = 'PatternSyntaxError';
}

type Token = { kind: 'text'; text: string } | { kind: 'any' } | { kind: 'star' };

function tokens(pattern: string): Token[] {
  const chars = Array.from(pattern);
  const out: Token[] = [];
  const text = (t: string) => {
    const last = out.at(-1);
    if (last?.kind === 'text') last.text += t;
    else out.push({ kind: 'text', text: t });
  };
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === '*') {
      // `**` matches what `*` does.
      if (out.at(-1)?.kind !== 'star') out.push({ kind: 'star' });
    } else if (ch === '?') {
      out.push({ kind: 'any' });
    } else if (ch === '\\') {
      const next = chars[i + 1];
      // `}` and `/` are escaped only to get them past the `${...}` parser; they are plain text here.
      if (next === '}' || next === '/') continue;
      if (next !== '*' && next !== '?' && next !== '\\') {
        throw new PatternSyntaxError(next === undefined ? 'trailing backslash' : `invalid escape "\\${next}"`);
      }
      text(next);
      i++;
    } else {
      text(ch);
    }
  }
  return out;
}

/** A pattern's matches in a value, found the way a backtracking regular expression finds them. */
export interface ShellPattern {
  /** The leftmost match starting at or after `from`, or null. */
  find(value: string, from: number): { index: number; end: number } | null;
  /** The end of a match at the start of `value`, or -1. */
  prefix(value: string): number;
}

/**
 * More states than this (pattern length times value length) is refused rather than tried: a
 * match remembers each one it found to fail.
 */
const MAX_STATES = 1 << 26;

/**
 * Compiles a pattern. `greedy` stars take as much as they can first (`##`, `%%`, `/`), others as
 * little. Matches are those a backtracking regular expression (`.*` or `.*?` for a star, `.`
 * for `?`, neither crossing a newline as in Go) would find, but every (pattern position, value
 * position) that failed once is remembered, so no value and pattern take more than their
 * product in steps: a backtracking RegExp took exponential time over `a*a*a*...b`.
 */
export function compileShellPattern(pattern: string, options: { greedy: boolean }): ShellPattern {
  const toks = tokens(pattern);
  const m = toks.length;
  let memoFor: string | undefined;
  let failed = new Uint8Array(0);
  // One pending choice: the pattern position, the value position, and which branch comes next.
  const stack: number[] = [];

  const width = (value: string, at: number) => (value.codePointAt(at)! > 0xffff ? 2 : 1);

  /** The end of the match of the whole pattern starting at `start`, or -1. */
  const matchAt = (value: string, start: number): number => {
    const n = value.length;
    const key = (pi: number, si: number) => pi * (n + 1) + si;
    /** The states a state may go on to, in the order a backtracking matcher tries them. */
    const choices = (pi: number, si: number): number[] => {
      const t = toks[pi]!;
      const step = si < n && value[si] !== '\n' ? si + width(value, si) : -1;
      if (t.kind === 'text') return value.startsWith(t.text, si) ? [pi + 1, si + t.text.length] : [];
      if (t.kind === 'any') return step < 0 ? [] : [pi + 1, step];
      const more = step < 0 ? [] : [pi, step];
      return options.greedy ? [...more, pi + 1, si] : [pi + 1, si, ...more];
    };
    // Frames of three: pattern position, value position, the index of the next choice to try.
    stack.length = 0;
    stack.push(0, start, 0);
    while (stack.length > 0) {
      const top = stack.length - 3;
      const pi = stack[top]!;
      const si = stack[top + 1]!;
      if (pi === m) return si;
      const c = choices(pi, si);
      let b = stack[top + 2]!;
      while (b < c.length && failed[key(c[b]!, c[b + 1]!)] === 1) b += 2;
      if (b < c.length) {
        stack[top + 2] = b + 2;
        stack.push(c[b]!, c[b + 1]!, 0);
      } else {
        // No choice leads anywhere from here, whatever the start: never try it again.
        failed[key(pi, si)] = 1;
        stack.length = top;
      }
    }
    return -1;
  };

  const prepare = (value: string) => {
    if (memoFor === value) return;
    const states = (m + 1) * (value.length + 1);
    if (states > MAX_STATES) throw new PatternSyntaxError(`the pattern and the value are too long to match (${m} parts and ${value.length} characters)`);
    failed = new Uint8Array(states);
    memoFor = value;
  };

  return {
    prefix(value) {
      prepare(value);
      return matchAt(value, 0);
    },
    find(value, from) {
      prepare(value);
      for (let s = from; s <= value.length; s += s < value.length ? width(value, s) : 1) {
        const end = matchAt(value, s);
        if (end >= 0) return { index: s, end };
      }
      return null;
    },
  };
}

function reverseString(s: string): string {
  return Array.from(s).reverse().join('');
}

/** Reverses a pattern but keeps each escape in front of the character it escapes. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const out: string[] = new Array<string>(chars.length);
  const last = chars.length - 1;
  for (let i = 0; i <= last; ) {
    const ch = chars[i]!;
    const at = last - i;
    if (ch === '\\' && i !== last) {
      out[at - 1] = ch;
      out[at] = chars[i + 1]!;
      i += 2;
    } else {
      out[at] = ch;
      i++;
    }
  }
  return out.join('');
}

/** `${value#pattern}` (shortest) or `${value##pattern}` (longest, `greedy`). */
export function trimPatternPrefix(value: string, pattern: string, greedy: boolean): string {
  const end = compileShellPattern(pattern, { greedy }).prefix(value);
  return end < 0 ? value : value.slice(end);
}

/**
 * `${value%pattern}` or `${value%%pattern}`. A match is found leftmost, not rightmost, so both
 * the value and the pattern are reversed and the prefix rule applies.
 */
export function trimPatternSuffix(value: string, pattern: string, greedy: boolean): string {
  return reverseString(trimPatternPrefix(reverseString(value), reversePattern(pattern), greedy));
}
