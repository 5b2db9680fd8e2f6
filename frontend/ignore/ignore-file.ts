import { trimSpace } from '../shell/go-unicode.js';
import { cleanPath } from './clean-path.js';

const BOM = '\uFEFF';

/**
 * Reads a .dockerignore file into its pattern list: comment lines (`#` in column 1) and blank
 * lines go, each pattern is trimmed and cleaned, and a leading `/` is dropped because patterns
 * are relative to the context root. `!` keeps its place in front; a lone `!` is kept and only
 * fails once a matcher is built from it.
 */
export function parseIgnoreFile(text: string): string[] {
  const body = text.startsWith(BOM) ? text.slice(BOM.length) : text;
  const lines = body.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const patterns: string[] = [];
  for (const rawLine of lines) {
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
  }
  return patterns;
}
