import { KilnError } from '../../cache/errors.js';
import { expandWords } from '../shell/index.js';

export interface HeredocOpener {
  name: string;
  chomp: boolean;
  expand: boolean;
  fd?: number;
  /** The `<<NAME` word as written, for pointing at it in errors. */
  word: string;
}

// Go's `\s` after the operator: tab, newline, form feed, carriage return, space.
const HEREDOC_WORD = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;
const noVariables = (): undefined => undefined;

/**
 * The heredocs an instruction line opens, in order. The line is split into shell words with
 * quotes and escapes kept; each word of the form `[n]<<[-]NAME` opens one. A line the shell
 * lexer cannot split (an unterminated quote) opens none.
 */
export function findHeredocOpeners(line: string): HeredocOpener[] {
  let words: string[];
  try {
    words = expandWords(line, noVariables, { keepQuotes: true, keepEscapes: true, keepUnset: true });
  } catch (err) {
    if (!(err instanceof KilnError)) throw err;
    // Deliberately lenient: such a line is still a valid instruction, it just has no heredoc.
    return [];
  }
  const openers: HeredocOpener[] = [];
  for (const word of words) {
    const opener = parseOpener(word);
    if (opener !== undefined) openers.push(opener);
  }
  return openers;
}

/**
 * The delimiter is read twice, with quotes removed and kept: if the counts of quote characters
 * differ, part of it was quoted and the body is not expanded. Throws EXPANSION_ERROR for a
 * delimiter the shell lexer rejects.
 */
function parseOpener(word: string): HeredocOpener | undefined {
  const match = HEREDOC_WORD.exec(word);
  if (match === null || match[3] === '') return undefined;
  const delimiter = match[3]!;
  const bare = expandWords(delimiter, noVariables, { keepUnset: true });
  if (bare.length !== 1) return undefined;
  const raw = expandWords(delimiter, noVariables, { keepUnset: true, keepQuotes: true });
  const name = bare[0]!;
  const opener: HeredocOpener = {
    name,
    chomp: match[2] === '-',
    expand: raw.length === 1 && countQuotes(name) === countQuotes(raw[0]!),
    word,
  };
  if (match[1] !== '') opener.fd = Number.parseInt(match[1]!, 10);
  return opener;
}

function countQuotes(s: string): number {
  let n = 0;
  for (const ch of s) if (ch === '"' || ch === "'") n++;
  return n;
}

/** `<<-` bodies lose the leading tabs of every line. */
export function chompLeadingTabs(content: string): string {
  return content
    .split('\n')
    .map((line) => line.replace(/^\t+/, ''))
    .join('\n');
}
