/**
 * Compiles a regular expression written in Go's RE2 syntax into a matcher with the same meaning.
 * Ignore patterns pass user text through to the expression (classes, escapes, `^`), so e.g.
 * `[[:alpha:]]` and `\d` must mean what Go makes of them, and a range like `l-O` must fail the
 * way it fails in Go. Only what an ignore pattern can produce is supported: no flags, no capture
 * names. Throws SyntaxError.
 *
 * Matching runs the expression as a Thompson automaton, one pass over the text with a set of
 * states, as Go's own engine does: time is at most the text's length times the program's size,
 * whatever the pattern. JavaScript's backtracking engine took exponential time on `*a*a*a*b`.
 */
type Range = [number, number];

const MAX = 0x10ffff;

const PERL_CLASSES: Record<string, Range[]> = {
  d: [[0x30, 0x39]],
  s: [[0x09, 0x0a], [0x0c, 0x0d], [0x20, 0x20]],
  w: [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]],
};

const POSIX_CLASSES: Record<string, Range[]> = {
  alnum: [[0x30, 0x39], [0x41, 0x5a], [0x61, 0x7a]],
  alpha: [[0x41, 0x5a], [0x61, 0x7a]],
  ascii: [[0x00, 0x7f]],
  blank: [[0x09, 0x09], [0x20, 0x20]],
  cntrl: [[0x00, 0x1f], [0x7f, 0x7f]],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [[0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]],
  space: [[0x09, 0x0d], [0x20, 0x20]],
  upper: [[0x41, 0x5a]],
  word: [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]],
  xdigit: [[0x30, 0x39], [0x41, 0x46], [0x61, 0x66]],
};

const SIMPLE_ESCAPES: Record<string, number> = { a: 0x07, f: 0x0c, n: 0x0a, r: 0x0d, t: 0x09, v: 0x0b };

function complement(ranges: Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Range[] = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX) out.push([next, MAX]);
  return out;
}

const hexEscape = (cp: number): string => `\\u{${cp.toString(16)}}`;
const rangesToClassBody = (ranges: Range[]): string =>
  ranges.map(([lo, hi]) => (lo === hi ? hexEscape(lo) : `${hexEscape(lo)}-${hexEscape(hi)}`)).join('');

function isAsciiAlnum(ch: string): boolean {
  return /^[0-9A-Za-z]$/.test(ch);
}

export function goRegExp(source: string): GoRegExp {
  const chars = Array.from(source);
  let pos = 0;
  const fail = (detail: string): never => {
    throw new SyntaxError(detail);
  };

  // A character escape (shared by classes and sequences), after the backslash was consumed.
  const escapedChar = (): number => {
    const ch = chars[pos++];
    if (ch === undefined) return fail('trailing backslash at end of expression');
    const code = ch.codePointAt(0)!;
    if (code < 0x80 && !isAsciiAlnum(ch)) return code;
    if (ch >= '0' && ch <= '7') {
      // One lone non-zero digit would be a backreference, which RE2 rejects.
      if (ch !== '0' && !/^[0-7]$/.test(chars[pos] ?? '')) return fail(`invalid escape sequence "\\${ch}"`);
      let value = code - 0x30;
      for (let n = 1; n < 3 && /^[0-7]$/.test(chars[pos] ?? ''); n++) value = value * 8 + (chars[pos++]!.codePointAt(0)! - 0x30);
      return value;
    }
    if (ch === 'x') {
      if (chars[pos] === '{') {
        const close = chars.indexOf('}', pos);
        const digits = close < 0 ? '' : chars.slice(pos + 1, close).join('');
        if (!/^[0-9A-Fa-f]+$/.test(digits) || Number.parseInt(digits, 16) > MAX) return fail('invalid escape sequence "\\x{"');
        pos = close + 1;
        return Number.parseInt(digits, 16);
      }
      const digits = chars.slice(pos, pos + 2).join('');
      if (!/^[0-9A-Fa-f]{2}$/.test(digits)) return fail('invalid escape sequence "\\x"');
      pos += 2;
      return Number.parseInt(digits, 16);
    }
    if (SIMPLE_ESCAPES[ch] !== undefined) return SIMPLE_ESCAPES[ch];
    return fail(`invalid escape sequence "\\${ch}"`);
  };

  // `\pL`, `\p{Greek}`, `\PL`, `\p{^Greek}` after the backslash; returns a JS class item.
  const unicodeClass = (): string => {
    let negated = chars[pos++] === 'P';
    let name: string;
    if (chars[pos] === '{') {
      const close = chars.indexOf('}', pos);
      if (close < 0) return fail('invalid character class range "\\p{"');
      name = chars.slice(pos + 1, close).join('');
      pos = close + 1;
    } else {
      name = chars[pos++] ?? fail('invalid character class range "\\p"');
    }
    if (name.startsWith('^')) {
      negated = !negated;
      name = name.slice(1);
    }
    if (name === 'Any') return negated ? '' : rangesToClassBody([[0, MAX]]);
    for (const candidate of [name, `Script=${name}`]) {
      try {
        new RegExp(`\\p{${candidate}}`, 'u');
        return `\\${negated ? 'P' : 'p'}{${candidate}}`;
      } catch (err) {
        // Not this spelling of the property; the next candidate or the failure below decides.
        if (!(err instanceof SyntaxError)) throw err;
      }
    }
    return fail(`invalid character class range "\\p{${name}}"`);
  };

  const perlClass = (letter: string): Range[] => {
    const ranges = PERL_CLASSES[letter.toLowerCase()]!;
    return letter === letter.toUpperCase() ? complement(ranges) : ranges;
  };

  // A class as one code point test: its body, in JavaScript's syntax, goes to a RegExp that
  // only ever sees one character, so it costs the same on any text.
  const parseClass = (): Node => {
    pos++;
    let negated = false;
    if (chars[pos] === '^') {
      negated = true;
      pos++;
    }
    let body = '';
    for (let first = true; chars[pos] !== ']' || first; first = false) {
      if (pos >= chars.length) return fail('missing closing ]');
      if (chars[pos] === '[' && chars[pos + 1] === ':') {
        const close = chars.slice(pos + 2).join('').indexOf(':]');
        if (close >= 0) {
          const inner = Array.from(chars.slice(pos + 2).join('').slice(0, close));
          let name = inner.join('');
          const negatedGroup = name.startsWith('^');
          if (negatedGroup) name = name.slice(1);
          const ranges = POSIX_CLASSES[name];
          if (ranges === undefined) return fail(`invalid character class range "[:${inner.join('')}:]"`);
          body += rangesToClassBody(negatedGroup ? complement(ranges) : ranges);
          pos += 2 + inner.length + 2;
          continue;
        }
      }
      if (chars[pos] === '\\' && (chars[pos + 1] === 'p' || chars[pos + 1] === 'P')) {
        pos++;
        body += unicodeClass();
        continue;
      }
      if (chars[pos] === '\\' && /^[dDsSwW]$/.test(chars[pos + 1] ?? '')) {
        body += rangesToClassBody(perlClass(chars[pos + 1]!));
        pos += 2;
        continue;
      }
      const lo = classChar();
      let hi = lo;
      if (chars[pos] === '-' && pos + 1 < chars.length && chars[pos + 1] !== ']') {
        pos++;
        hi = classChar();
        if (hi < lo) return fail(`invalid character class range "${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}"`);
      }
      body += rangesToClassBody([[lo, hi]]);
    }
    pos++;
    if (body === '') return negated ? anyChar : { k: 'char', test: () => false };
    return classNode(`[${negated ? '^' : ''}${body}]`);
  };

  const classChar = (): number => {
    const ch = chars[pos];
    if (ch === undefined) return fail('missing closing ]');
    pos++;
    return ch === '\\' ? escapedChar() : ch.codePointAt(0)!;
  };

  const parseEscape = (): Node => {
    pos++;
    const ch = chars[pos];
    switch (ch) {
      case 'A':
        pos++;
        return { k: 'assert', what: 'begin' };
      case 'z':
        pos++;
        return { k: 'assert', what: 'end' };
      case 'b':
      case 'B':
        pos++;
        return { k: 'assert', what: ch === 'b' ? 'word' : 'notword' };
      case 'Q': {
        pos++;
        const end = chars.slice(pos).join('').indexOf('\\E');
        const text = end < 0 ? chars.slice(pos).join('') : chars.slice(pos).join('').slice(0, end);
        pos += Array.from(text).length + (end < 0 ? 0 : 2);
        return { k: 'cat', items: Array.from(text).map((c) => literal(c.codePointAt(0)!)) };
      }
      case 'p':
      case 'P':
        return classNode(`[${unicodeClass()}]`);
      case 'd':
      case 'D':
      case 's':
      case 'S':
      case 'w':
      case 'W':
        pos++;
        return classNode(`[${rangesToClassBody(perlClass(ch))}]`);
      default:
        return literal(escapedChar());
    }
  };

  /** Applies `*`, `+`, `?` or `{n,m}` (and a lazy `?` after it, which changes no match) to the last item. */
  const quantify = (items: Node[], min: number, max: number): void => {
    const last = items.at(-1);
    if (last === undefined || last.k === 'assert') fail('missing argument to repetition operator');
    if (last!.k === 'repeat' && !last!.grouped) fail('invalid nested repetition operator');
    items[items.length - 1] = { k: 'repeat', item: last!, min, max };
    if (chars[pos] === '?') pos++;
  };

  const parseAlternation = (depth: number): Node => {
    if (depth > MAX_DEPTH) return fail('expression nests too deeply');
    const branches: Node[] = [];
    let items: Node[] = [];
    while (pos < chars.length) {
      const ch = chars[pos]!;
      if (ch === ')') {
        if (depth === 0) return fail('unexpected )');
        break;
      }
      if (ch === '|') {
        pos++;
        branches.push({ k: 'cat', items });
        items = [];
      } else if (ch === '(') {
        if (chars[pos + 1] === '?') return fail('unsupported group syntax "(?"');
        pos++;
        const inner = parseAlternation(depth + 1);
        if (chars[pos] !== ')') return fail('missing closing )');
        pos++;
        items.push({ k: 'cat', items: [inner], grouped: true });
      } else if (ch === '[') {
        items.push(parseClass());
      } else if (ch === '\\') {
        items.push(parseEscape());
      } else if (ch === '.') {
        // Go's `.` excludes only the newline.
        items.push(notNewline);
        pos++;
      } else if (ch === '^' || ch === '$') {
        items.push({ k: 'assert', what: ch === '^' ? 'begin' : 'end' });
        pos++;
      } else if (ch === '*' || ch === '+' || ch === '?') {
        pos++;
        quantify(items, ch === '+' ? 1 : 0, ch === '?' ? 1 : -1);
      } else if (ch === '{') {
        const repeat = /^\{(\d+)(,(\d*))?\}/.exec(chars.slice(pos, pos + 16).join(''));
        if (repeat === null) {
          items.push(literal(0x7b));
          pos++;
          continue;
        }
        pos += repeat[0].length;
        const min = Number(repeat[1]);
        const max = repeat[2] === undefined ? min : repeat[3] === '' ? -1 : Number(repeat[3]);
        if (min > MAX_REPEAT || max > MAX_REPEAT || (max >= 0 && max < min)) return fail(`invalid repeat count "${repeat[0]}"`);
        quantify(items, min, max);
      } else {
        items.push(literal(ch.codePointAt(0)!));
        pos++;
      }
    }
    if (depth > 0 && chars[pos] !== ')') return fail('missing closing )');
    branches.push({ k: 'cat', items });
    return branches.length === 1 ? branches[0]! : { k: 'alt', items: branches };
  };

  const program = compile(parseAlternation(0));
  return { test: (text) => run(program, text, false), testWithParents: (text) => run(program, text, true) };
}

/** Go's limit on `{n,m}`, and a bound on nesting that keeps the parser off the stack's end. */
const MAX_REPEAT = 1000;
const MAX_DEPTH = 1000;

type Node =
  | { k: 'char'; test: (cp: number) => boolean }
  | { k: 'cat'; items: Node[]; grouped?: boolean }
  | { k: 'alt'; items: Node[] }
  | { k: 'repeat'; item: Node; min: number; max: number; grouped?: undefined }
  | { k: 'assert'; what: Assertion };

type Assertion = 'begin' | 'end' | 'word' | 'notword';

const anyChar: Node = { k: 'char', test: () => true };
const notNewline: Node = { k: 'char', test: (cp) => cp !== 0x0a };
const literal = (cp: number): Node => ({ k: 'char', test: (c) => c === cp });

function classNode(jsClass: string): Node {
  const re = new RegExp(`^${jsClass}$`, 'u');
  return { k: 'char', test: (cp) => re.test(String.fromCodePoint(cp)) };
}

/** A compiled expression: matches anywhere in the text, as RegExp.test does. */
export interface GoRegExp {
  test(text: string): boolean;
  /**
   * Whether the expression matches the text or the part of it before any `/`: a path or one of
   * its parent directories, in one pass instead of one per parent.
   */
  testWithParents(text: string): boolean;
}

/**
 * Work done by every match so far: one unit per state entered. Tests read it to show that a
 * match is bounded by the text's length times the program's size.
 */
export const matchWork = { steps: 0 };

const enum Op {
  Char,
  Split,
  Jump,
  Assert,
  Match,
}

interface Program {
  op: Op[];
  /** Char: the test; Assert: the assertion. */
  arg: (((cp: number) => boolean) | Assertion | undefined)[];
  /** Split: the two next states; Jump: the one. */
  x: number[];
  y: number[];
}

function compile(root: Node): Program {
  const p: Program = { op: [], arg: [], x: [], y: [] };
  const emit = (op: Op, arg?: Program['arg'][number]): number => {
    p.op.push(op);
    p.arg.push(arg);
    p.x.push(-1);
    p.y.push(-1);
    return p.op.length - 1;
  };
  const gen = (n: Node): void => {
    switch (n.k) {
      case 'char':
        emit(Op.Char, n.test);
        return;
      case 'assert':
        emit(Op.Assert, n.what);
        return;
      case 'cat':
        for (const item of n.items) gen(item);
        return;
      case 'alt': {
        const jumps: number[] = [];
        n.items.forEach((item, i) => {
          if (i === n.items.length - 1) {
            gen(item);
            return;
          }
          const split = emit(Op.Split);
          p.x[split] = split + 1;
          gen(item);
          jumps.push(emit(Op.Jump));
          p.y[split] = p.op.length;
        });
        for (const j of jumps) p.x[j] = p.op.length;
        return;
      }
      case 'repeat': {
        for (let i = 0; i < n.min; i++) gen(n.item);
        if (n.max < 0) {
          const split = emit(Op.Split);
          p.x[split] = split + 1;
          gen(n.item);
          p.x[emit(Op.Jump)] = split;
          p.y[split] = p.op.length;
          return;
        }
        const splits: number[] = [];
        for (let i = n.min; i < n.max; i++) {
          const split = emit(Op.Split);
          p.x[split] = split + 1;
          splits.push(split);
          gen(n.item);
        }
        for (const s of splits) p.y[s] = p.op.length;
        return;
      }
    }
  };
  gen(root);
  emit(Op.Match);
  return p;
}

const isWord = (cp: number | undefined) => cp !== undefined && ((cp >= 0x30 && cp <= 0x39) || (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a) || cp === 0x5f);

/**
 * One pass over the text's code points with the set of live states (no state twice per
 * position), starting a new thread at every position: a search, not an anchored match.
 */
function run(p: Program, text: string, parents: boolean): boolean {
  const cps = Array.from(text, (c) => c.codePointAt(0)!);
  const n = cps.length;
  const seen = new Int32Array(p.op.length).fill(-1);
  let current: number[] = [];
  let next: number[] = [];
  const stack: number[] = [];
  // At a `/`, the text before it is a parent: it matches if a thread stopped only by an end of
  // text assertion there reaches the end without reading more (the other assertions see a `/`
  // as they would see the end: neither is a word character).
  const atEnd: number[] = [];
  const seenAtEnd = parents ? new Int32Array(p.op.length).fill(-1) : seen;
  const parentMatches = (at: number): boolean => {
    const pending = atEnd.splice(0);
    for (const start of pending) {
      stack.push(start);
      while (stack.length > 0) {
        const pc = stack.pop()!;
        if (seenAtEnd[pc] === at) continue;
        seenAtEnd[pc] = at;
        matchWork.steps++;
        const op = p.op[pc];
        if (op === Op.Match) {
          stack.length = 0;
          return true;
        }
        if (op === Op.Jump) stack.push(p.x[pc]!);
        else if (op === Op.Split) stack.push(p.y[pc]!, p.x[pc]!);
        else if (op === Op.Assert && (p.arg[pc] === 'end' || holds(p.arg[pc] as Assertion, cps, at))) stack.push(pc + 1);
      }
    }
    return false;
  };
  const add = (list: number[], start: number, at: number): boolean => {
    stack.push(start);
    while (stack.length > 0) {
      const pc = stack.pop()!;
      if (seen[pc] === at) continue;
      seen[pc] = at;
      matchWork.steps++;
      switch (p.op[pc]) {
        case Op.Match:
          stack.length = 0;
          return true;
        case Op.Char:
          list.push(pc);
          break;
        case Op.Jump:
          stack.push(p.x[pc]!);
          break;
        case Op.Split:
          stack.push(p.y[pc]!, p.x[pc]!);
          break;
        case Op.Assert:
          if (holds(p.arg[pc] as Assertion, cps, at)) stack.push(pc + 1);
          else if (parents && p.arg[pc] === 'end' && cps[at] === 0x2f) atEnd.push(pc + 1);
          break;
      }
    }
    return false;
  };
  for (let at = 0; at <= n; at++) {
    if (add(current, 0, at)) return true;
    if (at === n) break;
    const cp = cps[at]!;
    if (atEnd.length > 0 && parentMatches(at)) return true;
    next.length = 0;
    for (const pc of current) {
      matchWork.steps++;
      if ((p.arg[pc] as (cp: number) => boolean)(cp) && add(next, pc + 1, at + 1)) return true;
    }
    [current, next] = [next, current];
  }
  return false;
}

function holds(what: Assertion, cps: number[], at: number): boolean {
  switch (what) {
    case 'begin':
      return at === 0;
    case 'end':
      return at === cps.length;
    case 'word':
      return isWord(cps[at - 1]) !== isWord(cps[at]);
    case 'notword':
      return isWord(cps[at - 1]) === isWord(cps[at]);
  }
}
