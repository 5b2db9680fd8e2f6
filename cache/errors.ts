/**
 * The one error type of Kiln. `code` is stable and machine-readable; `message` is one sentence
 * in sentence case without a trailing period, values quoted.
 */
export interface SourceLocation {
  file: string;
  line: number;
  column?: number;
  /** The text of the offending line, printed with a caret under `column`. */
  text?: string;
}

export interface KilnErrorOptions {
  hint?: string;
  cause?: unknown;
  location?: SourceLocation;
  /** Exit code the CLI uses for this error (default 1). */
  exitCode?: number;
}

export class KilnError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly location: SourceLocation | undefined;
  readonly exitCode: number;

  constructor(code: string, message: string, options: KilnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KilnError';
    this.code = code;
    this.hint = options.hint;
    this.location = options.location;
    this.exitCode = options.exitCode ?? 1;
  }
}

/** A failing build step: wraps its cause with the vertex name and location. */
export class VertexError extends KilnError {
  readonly vertex: string;
  /** The last lines of the step's output, for the error report. */
  readonly tail: string[];

  constructor(vertex: string, cause: KilnError, options: { location?: SourceLocation; tail?: string[] } = {}) {
    super(cause.code, cause.message, { cause, location: options.location ?? cause.location, hint: cause.hint });
    this.name = 'VertexError';
    this.vertex = vertex;
    this.tail = options.tail ?? [];
  }
}

export function isKilnError(err: unknown): err is KilnError {
  return err instanceof KilnError;
}

/** Formats a location as `file:line` or `file:line:column`. */
export function formatLocation(loc: SourceLocation): string {
  return loc.column === undefined ? `${loc.file}:${loc.line}` : `${loc.file}:${loc.line}:${loc.column}`;
}

/** The offending line with a caret under the column, for error output. */
export function caretExcerpt(loc: SourceLocation): string | undefined {
  if (loc.text === undefined) return undefined;
  const prefix = ` ${loc.line} | `;
  const lines = [`${prefix}${loc.text}`];
  if (loc.column !== undefined && loc.column > 0) {
    lines.push(`${' '.repeat(prefix.length + loc.column - 1)}^`);
  }
  return lines.join('\n');
}

/** Whether the disk (or a quota) ran out: ENOSPC, EDQUOT, or SQLite's SQLITE_FULL. */
export function isNoSpace(err: unknown): boolean {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

export const NO_SPACE_HINT = 'Free space on that disk (kiln prune removes build cache; -a all of it), or set KILN_ROOT to a store on a larger disk';

/** The error for a write into the store that found its disk full: where, and what to do. */
export function noSpaceError(path: string, doing: string, cause: unknown): KilnError {
  return new KilnError('NO_SPACE', `No space left on device for "${path}" while ${doing}`, { hint: NO_SPACE_HINT, cause });
}
