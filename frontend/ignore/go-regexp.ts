/**
 * Compiles a regular expression written in Go's RE2 syntax into a JavaScript RegExp with the
 * same meaning. Ignore patterns pass user text through to the expression (classes, escapes,
 * `^`), so e.g. `[[:alpha:]]` and `\d` must mean what Go makes of them, and a range like `l-O`
 * must fail the way it fails in Go. Only what an ignore pattern can produce is supported: no
 * flags, no capture names, no alternation beyond a literal `|`. Throws SyntaxError.
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

const JS_SYNTAX = new Set(['^', '$', '\\', '.', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '/']);
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

function literal(ch: string): string {
  return JS_SYNTAX.has(ch) ? `\\${ch}` : ch;
}

function isAsciiAlnum(ch: string): boolean {
  return /^[0-9A-Za-z]$/.test(ch);
}

export function goRegExp(source: string): RegExp {
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

  const parseClass = (): string => {
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
    return body === '' ? (negated ? '[\\s\\S]' : '[]') : `[${negated ? '^' : ''}${body}]`;
  };

  const classChar = (): number => {
    const ch = chars[pos];
    if (ch === undefined) return fail('missing closing ]');
    pos++;
    return ch === '\\' ? escapedChar() : ch.codePointAt(0)!;
  };

  const parseEscape = (): string => {
    pos++;
    const ch = chars[pos];
    switch (ch) {
      case 'A':
        pos++;
        return '^';
      case 'z':
        pos++;
        return '$';
      case 'b':
      case 'B':
        pos++;
        return `\\${ch}`;
      case 'Q': {
        pos++;
        const end = chars.slice(pos).join('').indexOf('\\E');
        const text = end < 0 ? chars.slice(pos).join('') : chars.slice(pos).join('').slice(0, end);
        pos += Array.from(text).length + (end < 0 ? 0 : 2);
        return Array.from(text).map(literal).join('');
      }
      case 'p':
      case 'P':
        return `[${unicodeClass()}]`;
      case 'd':
      case 'D':
      case 's':
      case 'S':
      case 'w':
      case 'W':
        pos++;
        return `[${rangesToClassBody(perlClass(ch))}]`;
      default:
        return literal(String.fromCodePoint(escapedChar()));
    }
  };

  const parseSequence = (depth: number): string => {
    let out = '';
    while (pos < chars.length) {
      const ch = chars[pos]!;
      if (ch === ')') {
        if (depth === 0) return fail('unexpected )');
        return out;
      }
      if (ch === '(') {
        if (chars[pos + 1] === '?') return fail('unsupported group syntax "(?"');
        pos++;
        const inner = parseSequence(depth + 1);
        if (chars[pos] !== ')') return fail('missing closing )');
        pos++;
        out += `(?:${inner})`;
      } else if (ch === '[') {
        out += parseClass();
      } else if (ch === '\\') {
        out += parseEscape();
      } else if (ch === '.') {
        // Go's `.` excludes only the newline.
        out += '[^\\n]';
        pos++;
      } else if (ch === '^' || ch === '$' || ch === '|' || ch === '*' || ch === '+' || ch === '?') {
        out += ch;
        pos++;
      } else if (ch === '{') {
        const repeat = /^\{\d+(,\d*)?\}/.exec(chars.slice(pos).join(''));
        out += repeat === null ? '\\{' : repeat[0];
        pos += repeat === null ? 1 : repeat[0].length;
      } else {
        out += literal(ch);
        pos++;
      }
    }
    if (depth > 0) return fail('missing closing )');
    return out;
  };

  return new RegExp(parseSequence(0), 'u');
}
