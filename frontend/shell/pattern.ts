/**
 * Shell wildcard patterns of `${var#pattern}`, `${var%pattern}` and `${var/pattern/text}`:
 * `*` is any run of characters, `?` one character, and a backslash makes `*`, `?` or itself
 * literal. Bracket expressions are not supported, as in BuildKit, so `[` is literal.
 */

/** Thrown for a malformed pattern; the caller adds the word being expanded. */
export class PatternSyntaxError extends Error {
  override readonly name = 'PatternSyntaxError';
}

const REGEXP_SPECIALS = new Set(['[', ']', '{', '}', '.', '+', '(', ')', '|', '^', '$']);

// Go's regexp `.` stops only at a newline; JavaScript's also stops at \r, U+2028 and U+2029.
const ANY_CHAR = '[^\\n]';

export function shellPatternToRegExp(pattern: string, options: { greedy: boolean; anchored: boolean }): RegExp {
  const chars = Array.from(pattern);
  let source = options.anchored ? '^' : '';
  const star = options.greedy ? `${ANY_CHAR}*` : `${ANY_CHAR}*?`;

  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (ch === '*') {
      source += star;
    } else if (ch === '?') {
      source += ANY_CHAR;
    } else if (ch === '\\') {
      const next = chars[i + 1];
      // `}` and `/` are escaped only to get them past the `${...}` parser; they are plain text here.
      if (next === '}' || next === '/') continue;
      if (next !== '*' && next !== '?' && next !== '\\') {
        throw new PatternSyntaxError(next === undefined ? 'trailing backslash' : `invalid escape "\\${next}"`);
      }
      source += `\\${next}`;
      i++;
    } else if (REGEXP_SPECIALS.has(ch)) {
      source += `\\${ch}`;
    } else {
      source += ch;
    }
  }
  return new RegExp(source, 'u');
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
  const match = shellPatternToRegExp(pattern, { greedy, anchored: true }).exec(value);
  return match === null ? value : value.slice(match.index + match[0].length);
}

/**
 * `${value%pattern}` or `${value%%pattern}`. A regular expression finds the leftmost match, not
 * the rightmost, so both the value and the pattern are reversed and the prefix rule applies.
 */
export function trimPatternSuffix(value: string, pattern: string, greedy: boolean): string {
  return reverseString(trimPatternPrefix(reverseString(value), reversePattern(pattern), greedy));
}
