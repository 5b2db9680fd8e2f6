import { isSpace } from '../shell/go-unicode.js';
import { parseJsonArray } from './json-array.js';
import { splitQuotedWords } from './words.js';

export type ArgumentsResult =
  | { ok: true; args: string[]; json: boolean; /** ONBUILD's instruction text. */ nested?: string }
  | { ok: false; message: string; hint?: string; /** Text to point the error at. */ token?: string };

type ArgumentParser = (text: string, context: { name: string; escape: string }) => ArgumentsResult;

const BLANKS = /[\t\v\f\r ]+/;

const plain = (args: string[], json = false): ArgumentsResult => ({ ok: true, args, json });

const notStrings = (name: string): ArgumentsResult => ({
  ok: false,
  message: `The JSON array of ${name.toUpperCase()} must hold only strings`,
  hint: 'Quote every element, as in ["echo", "hello"]',
  token: '[',
});

/** RUN, CMD, ENTRYPOINT, SHELL: a JSON array, or else the whole text as one argument. */
const jsonOrText: ArgumentParser = (text, { name }) => {
  if (text === '') return plain([]);
  const parsed = parseJsonArray(text);
  if (parsed.kind === 'strings') return plain(parsed.values, true);
  if (parsed.kind === 'not-strings') return notStrings(name);
  return plain([text]);
};

/** FROM, EXPOSE and the fallback of ADD, COPY, VOLUME: split on blanks, quotes kept. */
const blankSeparated: ArgumentParser = (text) => plain(text === '' ? [] : text.split(BLANKS));

/** ADD, COPY, VOLUME: a JSON array, or else the text split on blanks. */
const jsonOrList: ArgumentParser = (text, context) => {
  const parsed = parseJsonArray(text);
  if (parsed.kind === 'strings') return plain(parsed.values, true);
  if (parsed.kind === 'not-strings') return notStrings(context.name);
  return blankSeparated(text, context);
};

/** USER, WORKDIR, STOPSIGNAL, MAINTAINER: the whole text. */
const wholeText: ArgumentParser = (text) => plain(text === '' ? [] : [text]);

/** ARG: quote-aware words, as written. */
const quotedWords: ArgumentParser = (text, { escape }) => plain(splitQuotedWords(text, escape));

/**
 * ENV, LABEL: `KEY value with spaces` (legacy) gives key, value, "" while `K=v K2=v2` gives
 * key, value, "=" per pair. Values keep their quotes and escapes for expansion later.
 */
const keyValues: ArgumentParser = (text, { name, escape }) => {
  const words = splitQuotedWords(text, escape);
  if (words.length === 0) return plain([]);
  const keyword = name.toUpperCase();
  if (!words[0]!.includes('=')) {
    const match = BLANKS.exec(text);
    if (match === null) {
      return {
        ok: false,
        message: `Missing value for ${JSON.stringify(text)} in ${keyword}`,
        hint: `Write ${keyword} ${text}=value`,
        token: text,
      };
    }
    return plain([text.slice(0, match.index), text.slice(match.index + match[0].length), '']);
  }
  const args: string[] = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) {
      return {
        ok: false,
        message: `Missing "=" in ${JSON.stringify(word)} in ${keyword}`,
        hint: `Every item of ${keyword} must have the form name=value`,
        token: word,
      };
    }
    args.push(word.slice(0, eq), word.slice(eq + 1), '=');
  }
  return plain(args);
};

/** HEALTHCHECK: the type word (CMD, NONE, ...), then the rest as for CMD. */
const healthcheck: ArgumentParser = (text, context) => {
  const chars = Array.from(text);
  let sep = 0;
  while (sep < chars.length && !isSpace(chars[sep]!)) sep++;
  if (sep === 0) return plain([]);
  let next = sep;
  while (next < chars.length && isSpace(chars[next]!)) next++;
  const command = jsonOrText(chars.slice(next).join(''), context);
  if (!command.ok) return command;
  return plain([chars.slice(0, sep).join(''), ...command.args], command.json);
};

const onbuild: ArgumentParser = (text) => (text === '' ? plain([]) : { ok: true, args: [], json: false, nested: text });

/** Words the reference parser does not know keep no arguments but print one empty one. */
const unknown: ArgumentParser = () => plain(['']);

const PARSERS: Record<string, ArgumentParser> = {
  add: jsonOrList,
  arg: quotedWords,
  cmd: jsonOrText,
  copy: jsonOrList,
  entrypoint: jsonOrText,
  env: keyValues,
  expose: blankSeparated,
  from: blankSeparated,
  healthcheck,
  label: keyValues,
  maintainer: wholeText,
  onbuild,
  run: jsonOrText,
  shell: jsonOrText,
  stopsignal: wholeText,
  user: wholeText,
  volume: jsonOrList,
  workdir: wholeText,
};

/** `name` is the lowercased instruction word; `text` what follows its flags, trimmed. */
export function parseArguments(name: string, text: string, escape: string): ArgumentsResult {
  const parser = Object.hasOwn(PARSERS, name) ? PARSERS[name]! : unknown;
  return parser(text, { name, escape });
}
