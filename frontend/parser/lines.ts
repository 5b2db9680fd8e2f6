import { isSpace, trimLeftSpace } from '../shell/go-unicode.js';

export interface PhysicalLines {
  /** Each line without its LF (a CR before the LF is still there). */
  lines: string[];
  /** Whether line i ended with LF (only the last line may not). */
  terminated: boolean[];
}

const BOM = '\uFEFF';

/** Splits the text on LF; a final LF does not start another line. A BOM on line 1 is dropped. */
export function splitPhysicalLines(text: string): PhysicalLines {
  const body = text.startsWith(BOM) ? text.slice(BOM.length) : text;
  if (body === '') return { lines: [], terminated: [] };
  const lines = body.split('\n');
  const terminated = lines.map(() => true);
  if (lines[lines.length - 1] === '') {
    lines.pop();
    terminated.pop();
  } else {
    terminated[terminated.length - 1] = false;
  }
  return { lines, terminated };
}

/** Drops trailing CR characters. */
export function trimLineEnd(line: string): string {
  return line.replace(/\r+$/, '');
}

/** A line whose first non-blank character is `#`. */
export function isCommentLine(line: string): boolean {
  return trimLeftSpace(line).startsWith('#');
}

export function isBlankLine(line: string): boolean {
  return trimLeftSpace(line) === '';
}

/**
 * A line continues when it ends with the escape character, optionally followed by spaces or
 * tabs, and that escape character is not itself escaped. The escape character and the blanks
 * after it are removed.
 */
export function trimContinuation(line: string, escape: string): { text: string; continues: boolean } {
  const body = line.replace(/[ \t]+$/, '');
  if (!body.endsWith(escape)) return { text: line, continues: false };
  if (body.length === escape.length) return { text: '', continues: true };
  if (body.slice(0, -escape.length).endsWith(escape)) return { text: line, continues: false };
  return { text: body.slice(0, -escape.length), continues: true };
}

/** Column (1-based) of the first non-blank character. */
export function firstColumn(line: string): number {
  let column = 1;
  for (const ch of line) {
    if (!isSpace(ch)) return column;
    column++;
  }
  return 1;
}
