import { trimSpace } from '../shell/go-unicode.js';
import { parseArguments } from './arguments.js';
import { extractFlags } from './flags.js';
import type { InstructionNode } from './types.js';

export type InstructionResult =
  | { ok: true; node: InstructionNode }
  | { ok: false; message: string; hint?: string; token?: string };

const BLANKS = /[\t\v\f\r ]+/;

/**
 * One logical line (continuations joined) to a node: the instruction word, its flags, then the
 * arguments by that instruction's rules. Line numbers and heredocs are filled in by the caller.
 */
export function buildInstruction(line: string, escape: string): InstructionResult {
  const trimmed = trimSpace(line);
  const gap = BLANKS.exec(trimmed);
  const keyword = gap === null ? trimmed : trimmed.slice(0, gap.index);
  let flags: string[] = [];
  let rest = '';
  if (gap !== null) {
    const split = extractFlags(trimmed.slice(gap.index + gap[0].length), escape);
    flags = split.flags;
    rest = trimSpace(split.rest);
  }
  const name = keyword.toLowerCase();
  const parsed = parseArguments(name, rest, escape);
  if (!parsed.ok) return parsed;

  const node: InstructionNode = {
    name,
    original: line,
    flags,
    args: parsed.args,
    json: parsed.json,
    heredocs: [],
    startLine: 0,
    endLine: 0,
  };
  if (parsed.nested !== undefined) {
    // Only one level can be valid; refusing the second keeps `ONBUILD ONBUILD ...` repeated
    // thousands of times from costing a pass over the rest of the line per level.
    if (name === 'onbuild' && /^onbuild(\s|$)/i.test(parsed.nested)) {
      return { ok: false, message: 'ONBUILD cannot hold ONBUILD', token: 'ONBUILD' };
    }
    const nested = buildInstruction(parsed.nested, escape);
    if (!nested.ok) return nested;
    node.next = nested.node;
  }
  return { ok: true, node };
}

const HEREDOC_INSTRUCTIONS = new Set(['run', 'copy', 'add']);

/** RUN, COPY and ADD in shell form (also as ONBUILD's instruction) may open heredocs. */
export function canHoldHeredocs(node: InstructionNode): boolean {
  const target = node.name === 'onbuild' && node.next !== undefined ? node.next : node;
  return HEREDOC_INSTRUCTIONS.has(target.name) && !target.json;
}
