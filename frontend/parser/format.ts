import { trimSpace } from '../shell/go-unicode.js';
import { goQuote, goQuoteList } from './go-quote.js';
import type { InstructionNode, ParsedDockerfile } from './types.js';

/**
 * The parse tree in the reference parser's printed form, one `(instruction ...)` per line:
 * the conformance corpus compares against this text byte for byte.
 */
export function formatParseTree(parsed: ParsedDockerfile): string {
  return parsed.instructions.map((node) => `(${formatNode(node)})\n`).join('');
}

function formatNode(node: InstructionNode): string {
  let out = node.name;
  if (node.flags.length > 0) out += ` ${goQuoteList(node.flags)}`;
  for (const arg of node.args) out += ` ${goQuote(arg)}`;
  if (node.next !== undefined) out += ` (${formatNode(node.next)})`;
  return trimSpace(out);
}
