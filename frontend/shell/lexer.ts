import { KilnError } from '../../cache/errors.js';
import { isDigit, isLetter } from './go-unicode.js';
import { compileShellPattern, PatternSyntaxError, trimPatternPrefix, trimPatternSuffix } from './pattern.js';
import { replaceAllMatches, replaceFirstMatch } from './replace.js';
import { createWordSplitter } from './word-splitter.js';

export type VariableLookup = (name: string) => string | undefined;

export interface LexOptions {
  escape: string;
  /** Keep quote characters in the output instead of removing them. */
  keepQuotes: boolean;
  /** Keep escape characters in the output instead of removing them. */
  keepEscapes: boolean;
  /** Leave references to unset variables as written instead of expanding them to nothing. */
  keepUnset: boolean;
  /** Treat quote characters as ordinary text. */
  literalQuotes: boolean;
}

export interface LexResult {
  /** The expansion as one word. */
  value: string;
  /** The expansion split into words. */
  words: string[];
  /** Names that were looked up and set. */
  used: Set<string>;
  /** Names that were looked up and not set. */
  unset: Set<string>;
}

const SPECIAL_PARAMETERS = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);
const HEREDOC_BLANKS = new Set(['\t', '\r', ' ']);

/**
 * One pass over a word with BuildKit's shell rules: quotes, escapes, `$name`, `${name}` and the
 * `${name<modifier>word}` forms. Produces the single-word and the split-into-words results at once.
 */
/** The longest word an expansion may produce (1 MiB of text, far beyond any real instruction). */
export const MAX_EXPANSION = 1 << 20;

const MAX_NESTING = 64;

export function lexWord(source: string, lookup: VariableLookup, options: LexOptions): LexResult {
  const chars = Array.from(source);
  let pos = 0;
  let rawEscapes = options.keepEscapes;
  let depth = 0;
  const used = new Set<string>();
  const unset = new Set<string>();

  const peek = (): string | undefined => chars[pos];
  const next = (): string | undefined => (pos < chars.length ? chars[pos++] : undefined);
  const fail = (detail: string): never => {
    const shown = source.length > 200 ? `${source.slice(0, 200)}…` : source;
    throw new KilnError('EXPANSION_ERROR', `Cannot expand ${JSON.stringify(shown)}: ${detail}`);
  };

  const getVariable = (name: string): string | undefined => {
    const value = lookup(name);
    if (value === undefined) unset.add(name);
    else used.add(name);
    return value;
  };

  // Runs `body`; when it fails because the input ended, reports `detail` instead.
  const untilEnd = <T>(body: () => T, detail: string): T => {
    try {
      return body();
    } catch (err) {
      if (err instanceof KilnError && peek() === undefined) fail(detail);
      throw err;
    }
  };

  const processStopOn = (stop: string | undefined, escapesRaw: boolean): { value: string; words: string[] } => {
    const saved = rawEscapes;
    rawEscapes = escapesRaw;
    try {
      let value = '';
      const words = createWordSplitter();
      for (let ch = peek(); ch !== undefined; ch = peek()) {
        if (stop !== undefined && ch === stop) {
          next();
          return { value, words: words.finish() };
        }
        if (ch === '$') {
          const expanded = processDollar();
          value += expanded;
          // Each variable can repeat a longer one (ENV B=$A$A, C=$B$B, ...): without a bound a
          // few lines of a Dockerfile grow a word until the process runs out of memory.
          if (value.length > MAX_EXPANSION) fail(`the result is longer than ${MAX_EXPANSION} characters`);
          words.addString(expanded);
          continue;
        }
        if (ch === '<') {
          const text = processPossibleHeredoc();
          value += text;
          words.addRawString(text);
          continue;
        }
        if (!options.literalQuotes && (ch === "'" || ch === '"')) {
          const text = ch === "'" ? processSingleQuote() : processDoubleQuote();
          value += text;
          words.addRawString(text);
          continue;
        }
        next();
        if (ch === options.escape) {
          if (rawEscapes) {
            words.addRawChar(ch);
            value += ch;
          }
          const escaped = next();
          // An escape character at the very end is dropped.
          if (escaped === undefined) break;
          words.addRawChar(escaped);
          value += escaped;
        } else {
          words.addChar(ch);
          value += ch;
        }
      }
      if (stop !== undefined) fail(`missing ${JSON.stringify(stop)}`);
      return { value, words: words.finish() };
    } finally {
      rawEscapes = saved;
    }
  };

  const processSingleQuote = (): string => {
    let out = '';
    const open = next()!;
    if (options.keepQuotes) out += open;
    for (;;) {
      const ch = next();
      if (ch === undefined) return fail('missing closing single quote');
      if (ch === "'") {
        if (options.keepQuotes) out += ch;
        return out;
      }
      out += ch;
    }
  };

  const processDoubleQuote = (): string => {
    let out = '';
    const open = next()!;
    if (options.keepQuotes) out += open;
    for (;;) {
      const ahead = peek();
      if (ahead === undefined) return fail('missing closing double quote');
      if (ahead === '"') {
        next();
        if (options.keepQuotes) out += ahead;
        return out;
      }
      if (ahead === '$') {
        out += processDollar();
        continue;
      }
      let ch = next()!;
      if (ch === options.escape) {
        if (rawEscapes) out += ch;
        const escaped = peek();
        // Inside double quotes the escape character only escapes `"`, `$` and itself.
        if (escaped === undefined) continue;
        if (escaped === '"' || escaped === '$' || escaped === options.escape) ch = next()!;
      }
      out += ch;
    }
  };

  const processName = (): string => {
    let name = '';
    for (let ch = peek(); ch !== undefined; ch = peek()) {
      if (name === '' && isDigit(ch)) {
        while (peek() !== undefined && isDigit(peek()!)) name += next()!;
        return name;
      }
      if (name === '' && SPECIAL_PARAMETERS.has(ch)) {
        next();
        return ch;
      }
      if (!isLetter(ch) && !isDigit(ch) && ch !== '_') break;
      name += next()!;
    }
    return name;
  };

  const processPossibleHeredoc = (): string => {
    next();
    if (peek() !== '<') return '<';
    next();
    let blanks = '';
    while (peek() !== undefined && HEREDOC_BLANKS.has(peek()!)) blanks += next()!;
    return `<<${blanks}`;
  };

  const processDollar = (): string => {
    next();
    if (peek() !== '{') {
      const name = processName();
      if (name === '') return '$';
      const value = getVariable(name);
      if (value === undefined && options.keepUnset) return `$${name}`;
      return value ?? '';
    }
    next();
    const first = peek();
    if (first === undefined) return fail('missing "}"');
    if (first === '{' || first === '}' || first === ':') return fail('bad substitution');

    const name = processName();
    let op = next();
    if (op === undefined) return fail('missing "}"');
    let modifier = op;
    if (op === '}') {
      const value = getVariable(name);
      if (value === undefined && options.keepUnset) return `\${${name}}`;
      return value ?? '';
    }
    if (op === '/') return processReplace(name);

    let nullIsUnset = false;
    if (op === ':') {
      nullIsUnset = true;
      op = next();
      modifier += op ?? '';
    } else if (!'+-?#%'.includes(op)) {
      return fail(`unsupported modifier ${JSON.stringify(modifier)}`);
    }
    const isPattern = op === '#' || op === '%';
    if (nullIsUnset && isPattern) return fail(`unsupported modifier ${JSON.stringify(modifier)}`);

    // Each nested `${a:-${b:-...}}` is one more call: stop at a depth no real word needs,
    // before the stack does.
    if (++depth > MAX_NESTING) fail(`variables nested more than ${MAX_NESTING} deep`);
    let word = untilEnd(() => processStopOn('}', isPattern).value, 'missing "}"');
    depth--;
    const value = getVariable(name);
    if (value === undefined && options.keepUnset) return `\${${name}${modifier}${word}}`;
    const empty = value === undefined || (nullIsUnset && value === '');

    switch (op) {
      case '-':
        return empty ? word : value!;
      case '+':
        return empty ? '' : word;
      case '?':
        if (value === undefined) return fail(word === '' ? `variable "${name}" is not set` : `${name}: ${word}`);
        if (nullIsUnset && value === '') return fail(word === '' ? `variable "${name}" is empty` : `${name}: ${word}`);
        return value;
      case '#':
      case '%': {
        const greedy = word.startsWith(op);
        if (greedy) word = word.slice(1);
        return withPattern(word, () =>
          op === '%' ? trimPatternSuffix(value ?? '', word, greedy) : trimPatternPrefix(value ?? '', word, greedy),
        );
      }
      default:
        return fail(`unsupported modifier ${JSON.stringify(modifier)}`);
    }
  };

  const processReplace = (name: string): string => {
    const all = peek() === '/';
    if (all) next();
    if (++depth > MAX_NESTING) fail(`variables nested more than ${MAX_NESTING} deep`);
    const pattern = untilEnd(() => processStopOn('/', true).value, 'missing "/" in substitution');
    const replacement = untilEnd(() => processStopOn('}', true).value, 'missing "}"');
    depth--;
    const value = getVariable(name);
    if (value === undefined && options.keepUnset) return `\${${name}/${pattern}/${replacement}}`;
    return withPattern(pattern, () => {
      const re = compileShellPattern(pattern, { greedy: true });
      return all ? replaceAllMatches(value ?? '', re, replacement) : replaceFirstMatch(value ?? '', re, replacement);
    });
  };

  const withPattern = (pattern: string, body: () => string): string => {
    try {
      return body();
    } catch (err) {
      if (err instanceof PatternSyntaxError || err instanceof SyntaxError) {
        return fail(`invalid pattern ${JSON.stringify(pattern)}: ${err.message}`);
      }
      throw err;
    }
  };

  const { value, words } = processStopOn(undefined, options.keepEscapes);
  return { value, words, used, unset };
}
