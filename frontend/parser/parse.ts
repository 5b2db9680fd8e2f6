import { KilnError } from '../../cache/errors.js';
import { trimLeftSpace } from '../shell/go-unicode.js';
import { createDirectiveReader } from './directives.js';
import { chompLeadingTabs, findHeredocOpeners, type HeredocOpener } from './heredoc.js';
import { buildInstruction, canHoldHeredocs } from './instruction.js';
import {
  firstColumn,
  isBlankLine,
  isCommentLine,
  type PhysicalLines,
  splitPhysicalLines,
  trimContinuation,
  trimLineEnd,
} from './lines.js';
import type { Heredoc, InstructionNode, ParsedDockerfile, ParseWarning } from './types.js';

export interface ParseOptions {
  /** The file name used in messages and error locations. */
  file: string;
}

/**
 * Dockerfile text to instructions with BuildKit's line rules: parser directives at the top,
 * continuation lines, comments and blank lines inside continuations, heredoc bodies.
 * Throws KilnError('PARSE_ERROR') with the file, line, column and text of the offending line.
 */
export function parseDockerfile(text: string, options: ParseOptions): ParsedDockerfile {
  const { file } = options;
  const { lines, terminated } = splitPhysicalLines(text);
  const directiveReader = createDirectiveReader();
  const directives = directiveReader.directives;
  const instructions: InstructionNode[] = [];
  const warnings: ParseWarning[] = [];

  const lineText = (lineNo: number): string => trimLineEnd(lines[lineNo - 1] ?? '');
  const fail = (message: string, at: { line: number; column?: number; hint?: string }): never => {
    throw new KilnError('PARSE_ERROR', message, {
      location: { file, line: at.line, column: at.column ?? firstColumn(lineText(at.line)), text: lineText(at.line) },
      hint: at.hint,
    });
  };
  // The physical line and column where `token` first appears within an instruction's lines.
  const find = (token: string | undefined, from: number, to: number): { line: number; column?: number } => {
    if (token !== undefined && token !== '') {
      for (let lineNo = from; lineNo <= to; lineNo++) {
        const at = lineText(lineNo).indexOf(token);
        if (at >= 0) return { line: lineNo, column: Array.from(lineText(lineNo).slice(0, at)).length + 1 };
      }
    }
    return { line: from };
  };

  let index = 0;
  while (index < lines.length) {
    const lineNo = index + 1;
    let first = trimLeftSpace(trimLineEnd(lines[index]!));
    directiveReader.offer(first, { file, line: lineNo, text: lineText(lineNo) });
    if (isCommentLine(first)) first = '';
    index++;

    const startLine = lineNo;
    let { text: joined, continues } = trimContinuation(first, directives.escape);
    if (!continues && joined === '') continue;

    let emptyLine: number | undefined;
    while (continues && index < lines.length) {
      const raw = lines[index]!;
      const current = trimLineEnd(raw);
      directiveReader.offer(current, { file, line: index + 1, text: current });
      index++;
      if (isCommentLine(raw)) continue;
      if (isBlankLine(current)) {
        emptyLine ??= index;
        continue;
      }
      const piece = trimContinuation(current, directives.escape);
      joined += piece.text;
      continues = piece.continues;
    }
    const headerEnd = index;

    const built = buildInstruction(joined, directives.escape);
    if (!built.ok) {
      const at = find(built.token, startLine, headerEnd);
      return fail(`${built.message} at ${file}:${at.line}`, { ...at, hint: built.hint });
    }
    const node = built.node;
    if (emptyLine !== undefined) {
      warnings.push({
        message: `Empty continuation line inside ${keywordOf(joined)} at ${file}:${emptyLine}`,
        line: emptyLine,
      });
    }

    if (canHoldHeredocs(node) && joined.includes('<<')) {
      let openers: HeredocOpener[];
      try {
        openers = findHeredocOpeners(joined);
      } catch (err) {
        if (!(err instanceof KilnError)) throw err;
        const at = find('<<', startLine, headerEnd);
        return fail(`Invalid heredoc in ${keywordOf(joined)} at ${file}:${at.line}: ${err.message}`, at);
      }
      const heredocs: Heredoc[] = [];
      for (const opener of openers) {
        const body = readHeredocBody({ lines, terminated }, index, opener);
        if (body === undefined) {
          const at = find(opener.word, startLine, headerEnd);
          return fail(`Unterminated heredoc ${JSON.stringify(opener.name)} started at ${file}:${at.line}`, {
            ...at,
            hint: `End the body with a line holding only ${opener.name}`,
          });
        }
        index = body.next;
        heredocs.push(toHeredoc(opener, body.content));
      }
      node.heredocs = heredocs;
      if (node.next !== undefined) node.next.heredocs = heredocs;
    }

    node.startLine = startLine;
    node.endLine = index;
    if (node.next !== undefined) {
      node.next.startLine = startLine;
      node.next.endLine = index;
    }
    instructions.push(node);
  }

  if (instructions.length === 0) {
    return fail(`The Dockerfile ${JSON.stringify(file)} has no instructions`, {
      line: Math.max(lines.length, 1),
      column: 1,
      hint: 'A Dockerfile needs at least a FROM instruction',
    });
  }
  return { directives, instructions, warnings };
}

/**
 * The lines from `start` up to the delimiter line, each with its line ending; `next` is the index
 * after the delimiter. Undefined when the file ends first.
 */
function readHeredocBody(
  source: PhysicalLines,
  start: number,
  opener: HeredocOpener,
): { content: string; next: number } | undefined {
  let content = '';
  for (let index = start; index < source.lines.length; index++) {
    const raw = source.lines[index]!;
    const candidate = opener.chomp ? trimLineEnd(raw).replace(/^\t+/, '') : trimLineEnd(raw);
    if (candidate === opener.name) return { content, next: index + 1 };
    content += raw + (source.terminated[index] ? '\n' : '');
  }
  return undefined;
}

function toHeredoc(opener: HeredocOpener, content: string): Heredoc {
  const heredoc: Heredoc = {
    name: opener.name,
    content: opener.chomp ? chompLeadingTabs(content) : content,
    chomp: opener.chomp,
    expand: opener.expand,
  };
  if (opener.fd !== undefined) heredoc.fd = opener.fd;
  return heredoc;
}

function keywordOf(line: string): string {
  return line.trim().split(/\s/, 1)[0] ?? '';
}
