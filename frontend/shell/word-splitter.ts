import { isSpace } from './go-unicode.js';

/**
 * Collects the output of an expansion into words. Text that came from a variable or from plain
 * input splits on whitespace; quoted text and escaped characters never split. A quoted empty
 * string does not make a word on its own, as in BuildKit.
 */
export interface WordSplitter {
  /** A character that splits on whitespace. */
  addChar(ch: string): void;
  /** A character that never splits. */
  addRawChar(ch: string): void;
  /** Text that splits on whitespace (the value of a variable). */
  addString(text: string): void;
  /** Text that never splits (a quoted string). */
  addRawString(text: string): void;
  finish(): string[];
}

export function createWordSplitter(): WordSplitter {
  const words: string[] = [];
  let current = '';
  let inWord = false;

  const addRawChar = (ch: string): void => {
    current += ch;
    inWord = true;
  };
  const addChar = (ch: string): void => {
    if (!isSpace(ch)) {
      addRawChar(ch);
    } else if (inWord && current.length > 0) {
      words.push(current);
      current = '';
      inWord = false;
    }
  };

  return {
    addChar,
    addRawChar,
    addString(text) {
      for (const ch of text) addChar(ch);
    },
    addRawString(text) {
      current += text;
      inWord = true;
    },
    finish() {
      if (current.length > 0) {
        words.push(current);
        current = '';
        inWord = false;
      }
      return words;
    },
  };
}
