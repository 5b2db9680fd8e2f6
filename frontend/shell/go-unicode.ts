/**
 * Character classes as Go's `unicode` package defines them. Dockerfile tooling in the Go world
 * splits and trims with these, and JavaScript's own `\s` and `trim()` disagree with them at the
 * edges (U+0085 is a Go space, U+FEFF is not), so everything that must agree with it uses these.
 */
const SPACE = /^\p{White_Space}$/u;
const LETTER = /^\p{L}$/u;
const DIGIT = /^\p{Nd}$/u;
const LEADING_SPACE = /^\p{White_Space}+/u;
const TRAILING_SPACE = /\p{White_Space}+$/u;

/** `unicode.IsSpace` for one character (code point). */
export function isSpace(ch: string): boolean {
  return SPACE.test(ch);
}

/** `unicode.IsLetter` for one character (code point). */
export function isLetter(ch: string): boolean {
  return LETTER.test(ch);
}

/** `unicode.IsDigit` for one character (code point). */
export function isDigit(ch: string): boolean {
  return DIGIT.test(ch);
}

/** `strings.TrimLeftFunc(s, unicode.IsSpace)`. */
export function trimLeftSpace(s: string): string {
  return s.replace(LEADING_SPACE, '');
}

/** `strings.TrimRightFunc(s, unicode.IsSpace)`. */
export function trimRightSpace(s: string): string {
  return s.replace(TRAILING_SPACE, '');
}

/** `strings.TrimSpace`. */
export function trimSpace(s: string): string {
  return trimRightSpace(trimLeftSpace(s));
}
