import { KilnError } from '../../cache/errors.js';
import { trimLeftSpace } from '../shell/go-unicode.js';
import type { Directives } from './types.js';

/**
 * Parser directives (`# name=value`) are read only from the lines at the very top of the file;
 * the first line that is not a known directive ends them, even a blank line or another comment.
 */
export interface DirectiveReader {
  readonly directives: Directives;
  /** Offers the next processed line; throws for a repeated directive or a bad escape value. */
  offer(line: string, where: { file: string; line: number; text: string }): void;
}

// Go's `\s` in the reference pattern: tab, newline, form feed, carriage return, space.
const DIRECTIVE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*([^\n]+?)[\t\n\f\r ]*$/;
const NAMES = new Set(['syntax', 'escape', 'check']);

export function createDirectiveReader(): DirectiveReader {
  const directives: Directives = { escape: '\\' };
  const seen = new Set<string>();
  let done = false;

  return {
    directives,
    offer(line, where) {
      if (done) return;
      const match = line.startsWith('#') ? DIRECTIVE.exec(trimLeftSpace(line.slice(1))) : null;
      const name = match?.[1]?.toLowerCase();
      if (!match || name === undefined || !NAMES.has(name)) {
        done = true;
        return;
      }
      const value = match[2]!;
      const location = { file: where.file, line: where.line, column: columnOf(where.text, value), text: where.text };
      if (seen.has(name)) {
        throw new KilnError('PARSE_ERROR', `The "${name}" parser directive is given more than once at ${where.file}:${where.line}`, {
          location,
          hint: 'Keep one of them',
        });
      }
      seen.add(name);
      if (name === 'escape') {
        if (value !== '\\' && value !== '`') {
          throw new KilnError('PARSE_ERROR', `Invalid escape directive ${JSON.stringify(value)} at ${where.file}:${where.line}`, {
            location,
            hint: 'The escape character must be "\\" or "`"',
          });
        }
        directives.escape = value;
      } else if (name === 'syntax') {
        directives.syntax = value;
      } else {
        directives.check = value;
      }
    },
  };
}

function columnOf(text: string, value: string): number {
  const at = text.lastIndexOf(value);
  return at < 0 ? 1 : Array.from(text.slice(0, at)).length + 1;
}
