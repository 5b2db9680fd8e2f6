import { isSpace } from '../shell/go-unicode.js';

/**
 * Splits text into words at unquoted whitespace, keeping quotes and escape characters exactly as
 * written: `a="b c" d\ e` gives `a="b c"` and `d\ e`. Inside single quotes the escape character
 * has no effect. Used for ENV, LABEL and ARG, whose values are expanded later.
 */
export function splitQuotedWords(text: string, escape: string): string[] {
  const chars = Array.from(text);
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: string | undefined;
  let quotedEmptyOk = false;

  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i]!;
    if (!inWord) {
      if (isSpace(ch)) continue;
      inWord = true;
    }
    if (quote === undefined) {
      if (isSpace(ch)) {
        if (quotedEmptyOk || word.length > 0) words.push(word);
        word = '';
        quotedEmptyOk = false;
        inWord = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        quotedEmptyOk = true;
      }
      if (ch === escape) {
        // An escape character at the very end is dropped.
        if (i + 1 === chars.length) continue;
        word += ch;
        i++;
        word += chars[i]!;
        continue;
      }
      word += ch;
      continue;
    }
    if (ch === quote) quote = undefined;
    if (ch === escape && quote !== "'") {
      if (i + 1 === chars.length) {
        quote = undefined;
        continue;
      }
      word += ch;
      i++;
      word += chars[i]!;
      continue;
    }
    word += ch;
  }
  if (inWord && (quotedEmptyOk || word.length > 0)) words.push(word);
  return words;
}
