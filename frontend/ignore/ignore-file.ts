import { KilnError } from '../../cache/errors.js';
import { trimSpace } from '../shell/go-unicode.js';
import { cleanPath } from './clean-path.js';
import { createIgnoreMatcher } from './matcher.js';

const BOM = '\uFEFF';

/**
 * Reads a .dockerignore file into its pattern list: comment lines (`#` in column 1) and blank
 * lines go, each pattern is trimmed and cleaned, and a leading `/` is dropped because patterns
 * are relative to the context root. `!` keeps its place in front; a lone `!` is kept and only
 * fails once a matcher is built from it, unless `file` is given: then every pattern is checked
 * here and a bad one fails with its file and line, as a Dockerfile error does.
 */
export function parseIgnoreFile(text: string, options: { file?: string } = {}): string[] {
  const body = text.startsWith(BOM) ? text.slice(BOM.length) : text;
  const lines = body.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const patterns: string[] = [];
  for (const [index, rawLine] of lines.entries()) {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (line.startsWith('#')) continue;
    let pattern = trimSpace(line);
    if (pattern === '') continue;
    const exception = pattern.startsWith('!');
    if (exception) pattern = trimSpace(pattern.slice(1));
    if (pattern !== '') {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    patterns.push(exception ? `!${pattern}` : pattern);
    if (options.file !== undefined) checkPattern(patterns.at(-1)!, { file: options.file, line: index + 1, text: line });
  }
  return patterns;
}

function checkPattern(pattern: string, location: { file: string; line: number; text: string }): void {
  try {
    createIgnoreMatcher([pattern]);
  } catch (err) {
    if (!(err instanceof KilnError) || err.code !== 'IGNORE_PATTERN') throw err;
    throw new KilnError(err.code, `${err.message} at ${location.file}:${location.line}`, {
      hint: err.hint,
      location: { ...location, column: 1 },
    });
  }
}
