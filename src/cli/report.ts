import { caretExcerpt, formatLocation, KilnError, VertexError } from '../../cache/errors.js';

/** One paragraph for a failure: what failed, where, why, and what to do. Never a stack trace. */
export function formatError(err: unknown): string {
  if (!(err instanceof KilnError)) {
    const message = err instanceof Error ? err.message : String(err);
    return `error: ${message}\n(This is a bug in Kiln: please report it with the command that caused it.)\n`;
  }
  const out: string[] = [];
  if (err instanceof VertexError) {
    const where = err.location ? ` at ${formatLocation({ file: err.location.file, line: err.location.line })}` : '';
    out.push(`error: step ${err.vertex} failed${where}`);
    if (err.location?.text !== undefined) out.push(` ${err.location.line} | >>> ${err.location.text}`);
    if (err.tail.length > 0) {
      out.push('last lines of its output:');
      for (const line of err.tail) out.push(`  ${line}`);
    }
    out.push(err.message);
  } else {
    out.push(`error: ${err.message}`);
    const excerpt = err.location ? caretExcerpt(err.location) : undefined;
    if (excerpt) out.push(excerpt);
  }
  if (err.hint) out.push(`hint: ${err.hint}`);
  return `${out.join('\n')}\n`;
}
