import { isSpace } from '../shell/go-unicode.js';

/**
 * Splits the leading `--flag` words off an instruction's text. Collection stops at the first
 * word that does not start with `--`; a bare `--` stops it and is dropped. Inside a flag, quotes
 * are removed and the escape character takes the next character literally.
 */
export function extractFlags(text: string, escape: string): { flags: string[]; rest: string } {
  const chars = Array.from(text);
  const flags: string[] = [];
  let word = '';
  // A quoted empty value (`--x=""`) still makes a flag.
  let quotedEmptyOk = false;
  let quote: string | undefined;
  let inWord = false;

  const restFrom = (index: number): string => chars.slice(index).join('');
  const endWord = (): void => {
    if (quotedEmptyOk || word.length > 0) flags.push(word);
    word = '';
    quotedEmptyOk = false;
    inWord = false;
  };

  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (!inWord) {
      if (isSpace(ch)) continue;
      if (ch !== '-' || chars[i + 1] !== '-') return { flags, rest: restFrom(i) };
      inWord = true;
    }
    if (quote === undefined) {
      if (isSpace(ch)) {
        if (word === '--') return { flags, rest: restFrom(i) };
        endWord();
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        quotedEmptyOk = true;
        continue;
      }
    } else if (ch === quote) {
      quote = undefined;
      continue;
    }
    if (ch === escape) {
      // An escape character at the very end is dropped.
      if (i + 1 === chars.length) {
        quote = undefined;
        continue;
      }
      i++;
      word += chars[i]!;
      continue;
    }
    word += ch;
  }
  if (inWord && word !== '--') endWord();
  return { flags, rest: '' };
}
