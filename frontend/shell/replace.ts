import type { ShellPattern } from './pattern.js';
import { isDigit, isLetter } from './go-unicode.js';

/**
 * `${var//pattern/text}` replaces every match the way Go's `Regexp.ReplaceAllString` does, which
 * the results must agree with: an empty match right after another match is not replaced, and
 * `$0` / `${0}` in the text stand for the match while `$$` is a dollar sign.
 */
export function replaceAllMatches(value: string, pattern: ShellPattern, template: string): string {
  let out = '';
  let lastMatchEnd = 0;
  let searchPos = 0;
  while (searchPos <= value.length) {
    const match = pattern.find(value, searchPos);
    if (match === null) break;
    const start = match.index;
    const end = match.end;
    out += value.slice(lastMatchEnd, start);
    if (end > lastMatchEnd || start === 0) out += expandTemplate(template, value.slice(start, end));
    lastMatchEnd = end;
    const width = charWidthAt(value, searchPos);
    if (searchPos + width > end) {
      searchPos += width;
    } else if (searchPos + 1 > end) {
      searchPos++;
    } else {
      searchPos = end;
    }
  }
  return out + value.slice(lastMatchEnd);
}

/** `${var/pattern/text}`: the first match only, and the text is inserted as it is. */
export function replaceFirstMatch(value: string, pattern: ShellPattern, text: string): string {
  const match = pattern.find(value, 0);
  if (match === null) return value;
  return value.slice(0, match.index) + text + value.slice(match.end);
}

function charWidthAt(s: string, index: number): number {
  if (index >= s.length) return 0;
  const code = s.codePointAt(index)!;
  return code > 0xffff ? 2 : 1;
}

/**
 * Go's template expansion with a pattern that has no capture groups (every parenthesis in a
 * shell pattern is literal): only group 0 exists.
 */
function expandTemplate(template: string, whole: string): string {
  let out = '';
  let rest = template;
  for (;;) {
    const dollar = rest.indexOf('$');
    if (dollar < 0) break;
    out += rest.slice(0, dollar);
    rest = rest.slice(dollar + 1);
    if (rest.startsWith('$')) {
      out += '$';
      rest = rest.slice(1);
      continue;
    }
    const ref = readReference(rest);
    if (ref === undefined) {
      out += '$';
      continue;
    }
    rest = rest.slice(ref.length);
    if (ref.name === '0') out += whole;
  }
  return out + rest;
}

function readReference(s: string): { name: string; length: number } | undefined {
  const braced = s.startsWith('{');
  const chars = Array.from(braced ? s.slice(1) : s);
  let name = '';
  for (const ch of chars) {
    if (!isLetter(ch) && !isDigit(ch) && ch !== '_') break;
    name += ch;
  }
  if (name === '') return undefined;
  let length = name.length;
  if (braced) {
    if (chars[Array.from(name).length] !== '}') return undefined;
    length += 2;
  }
  return { name, length };
}
