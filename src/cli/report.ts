import { caretExcerpt, formatLocation, KilnError, VertexError } from '../../cache/errors.js';
import { dockerfileExcerpt } from './excerpt.js';

export interface ReportOptions {
  /** The text of a Dockerfile by the file name errors locate in, for the excerpt of a failing step. */
  source?: (file: string) => string | undefined;
}

/** One paragraph for a failure: what failed, where, why, and what to do. Never a stack trace. */
export function formatError(err: unknown, options: ReportOptions = {}): string {
  if (!(err instanceof KilnError)) {
    const message = err instanceof Error ? err.message : String(err);
    return `error: ${message}\n(This is a bug in Kiln: please report it with the command that caused it.)\n`;
  }
  const out: string[] = [];
  if (err instanceof VertexError) {
    const loc = err.location;
    const where = loc ? ` at ${formatLocation({ file: loc.file, line: loc.line })}` : '';
    out.push(`error: step ${err.vertex} failed${where}`);
    const text = loc ? options.source?.(loc.file) : undefined;
    const excerpt = loc && text !== undefined ? dockerfileExcerpt(text, loc.line) : [];
    if (excerpt.length > 0) out.push('--------------------', ...excerpt, '--------------------');
    else if (loc?.text !== undefined) out.push(` ${loc.line} | >>> ${loc.text}`);
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

/** The same failure as data, for `--progress rawjson`. */
export function errorEvent(err: unknown, options: ReportOptions = {}): Record<string, unknown> {
  if (!(err instanceof KilnError)) return { type: 'error', code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) };
  const event: Record<string, unknown> = { type: 'error', code: err.code, message: err.message, exitCode: err.exitCode };
  if (err.hint) event.hint = err.hint;
  if (err.location) event.location = { file: err.location.file, line: err.location.line, column: err.location.column };
  if (err instanceof VertexError) {
    event.step = err.vertex;
    const text = err.location ? options.source?.(err.location.file) : undefined;
    if (err.location && text !== undefined) event.excerpt = dockerfileExcerpt(text, err.location.line);
    event.tail = err.tail;
  }
  return event;
}
