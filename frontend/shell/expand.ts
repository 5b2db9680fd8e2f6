import { lexWord, type LexOptions, type VariableLookup } from './lexer.js';

export interface ExpandOptions {
  /** The Dockerfile's escape character (default `\`). */
  escape?: '\\' | '`';
  /** Keep quote characters in the result instead of removing them. */
  keepQuotes?: boolean;
  /** Keep escape characters in the result instead of applying them. */
  keepEscapes?: boolean;
  /** Leave `$NAME` / `${NAME...}` of unset variables as written instead of expanding them. */
  keepUnset?: boolean;
  /** Treat `'` and `"` as ordinary characters. */
  literalQuotes?: boolean;
}

export interface WordExpansion {
  value: string;
  /** Variables the word referenced that were set. */
  used: Set<string>;
  /** Variables the word referenced that were not set. */
  unset: Set<string>;
}

export interface WordsExpansion {
  words: string[];
  used: Set<string>;
  unset: Set<string>;
}

function lexOptions(options: ExpandOptions): LexOptions {
  return {
    escape: options.escape ?? '\\',
    keepQuotes: options.keepQuotes ?? false,
    keepEscapes: options.keepEscapes ?? false,
    keepUnset: options.keepUnset ?? false,
    literalQuotes: options.literalQuotes ?? false,
  };
}

/** Expands `word` as one word: quotes removed, escapes applied, variables substituted, no splitting. */
export function expandWord(word: string, lookup: VariableLookup, options: ExpandOptions = {}): string {
  return lexWord(word, lookup, lexOptions(options)).value;
}

/** As `expandWord`, and reports which variables the word referenced. */
export function expandWordWithInfo(word: string, lookup: VariableLookup, options: ExpandOptions = {}): WordExpansion {
  const { value, used, unset } = lexWord(word, lookup, lexOptions(options));
  return { value, used, unset };
}

/** Expands `word`, then splits it into words; quoted text and escaped blanks do not split. */
export function expandWords(word: string, lookup: VariableLookup, options: ExpandOptions = {}): string[] {
  return lexWord(word, lookup, lexOptions(options)).words;
}

/** As `expandWords`, and reports which variables the word referenced. */
export function expandWordsWithInfo(word: string, lookup: VariableLookup, options: ExpandOptions = {}): WordsExpansion {
  const { words, used, unset } = lexWord(word, lookup, lexOptions(options));
  return { words, used, unset };
}
