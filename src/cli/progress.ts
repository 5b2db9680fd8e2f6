import type { ProgressEvent } from '../../solver/progress.js';
import { usageError } from './args.js';
import { PlainPrinter } from './plain.js';
import { errorEvent, formatError, type ReportOptions } from './report.js';
import { drawFinished, TtyState, type Activity, type Line } from './tty-state.js';

/** How a build shows its progress on stderr. `auto` becomes `tty` on a terminal, else `plain`. */
export const PROGRESS_MODES = ['auto', 'tty', 'plain', 'rawjson', 'quiet'] as const;
export type ProgressMode = Exclude<(typeof PROGRESS_MODES)[number], 'auto'>;

export interface BuildOutcome {
  imageId: string;
  tags: string[];
  /** The last line instead of `Built ID as TAGS` (a pull or a push says what it did). */
  summary?: string;
}

/** How the view reports failures, and what the tty header calls the work (default: building). */
export interface ViewOptions extends ReportOptions {
  activity?: Activity;
}

/** Shows one build: its events while it runs, then its result or its failure, in one mode. */
export interface ProgressView {
  handle(e: ProgressEvent): void;
  succeed(result: BuildOutcome): Promise<void>;
  fail(err: unknown): Promise<void>;
}

/** The flag wins over `KILN_PROGRESS`; either may say `auto`. */
export function resolveProgressMode(flag: string | undefined, env: string | undefined, isTTY: boolean): ProgressMode {
  const value = flag ?? (env === '' ? undefined : env) ?? 'auto';
  if (!(PROGRESS_MODES as readonly string[]).includes(value)) {
    const source = flag !== undefined ? '--progress' : 'KILN_PROGRESS';
    throw usageError(`Invalid ${source} "${value}": expected auto, tty, plain, rawjson or quiet`);
  }
  if (value === 'auto') return isTTY ? 'tty' : 'plain';
  return value as ProgressMode;
}

/** A command's progress mode: `quiet` with --quiet, else from --progress and KILN_PROGRESS. */
export function commandProgressMode(options: Record<string, unknown>): ProgressMode {
  return options.quiet === true ? 'quiet' : resolveProgressMode(options.progress as string | undefined, process.env.KILN_PROGRESS, process.stderr.isTTY === true);
}

/**
 * What push and pull print as docker does: their lines on stdout unless --quiet, and no
 * per-layer line under the live view, which draws each layer itself.
 */
export function transferOutput(
  options: Record<string, unknown>,
  stdout: (s: string) => void,
): { quiet: boolean; mode: ProgressMode; say: (s: string) => void; sayLayer: (s: string) => void } {
  const quiet = options.quiet === true;
  const mode = commandProgressMode(options);
  const say = (s: string) => {
    if (!quiet) stdout(`${s}\n`);
  };
  return { quiet, mode, say, sayLayer: mode === 'tty' ? () => {} : say };
}

export async function openProgressView(mode: ProgressMode, stream: NodeJS.WriteStream, report: ViewOptions): Promise<ProgressView> {
  const write = (s: string) => void stream.write(s);
  switch (mode) {
    case 'tty':
      return ttyView(stream, report);
    case 'plain':
      return plainView(write, report);
    case 'rawjson':
      return rawJsonView(write, report);
    case 'quiet':
      return {
        handle() {},
        async succeed() {},
        async fail(err) {
          write(formatError(err, report));
        },
      };
  }
}

/**
 * A build still running after this long gets the live view; one done sooner (a cached rebuild)
 * is drawn once, finished, without loading ink and react at all.
 */
const LIVE_AFTER_MS = 150;

function ttyView(stream: NodeJS.WriteStream, report: ViewOptions): ProgressView {
  const state = new TtyState(Date.now(), report.activity);
  let live: Promise<ProgressView> | undefined;
  const timer = setTimeout(() => {
    // ink and react load here and nowhere else (see tty.ts); events fold into the state meanwhile.
    live = import('./tty.js').then((m) => m.openTtyView(stream, report, state));
    // Awaited by succeed() and fail(), which report a failure to load; until then it must not
    // count as unhandled.
    live.catch(() => {});
  }, LIVE_AFTER_MS);
  const width = () => Math.max(20, (stream.columns || 80) - 1);
  const drawn = (outcome: 'ok' | 'failed' | 'cancelled') => {
    state.close(outcome, Date.now());
    const lines = [...state.finished.map((f) => drawFinished(f, width())), ...state.live({ width: width(), rows: Infinity, now: Date.now() })];
    return lines.map((l) => `${paint(l)}\n`).join('');
  };
  return {
    handle: (e) => state.apply(e),
    async succeed(result) {
      clearTimeout(timer);
      if (live) return (await live).succeed(result);
      stream.write(drawn('ok') + ttyEpilogue(state, { result }, report));
    },
    async fail(err) {
      clearTimeout(timer);
      if (live) return (await live).fail(err);
      stream.write(drawn(isCancelled(err) ? 'cancelled' : 'failed') + ttyEpilogue(state, { err }, report));
    },
  };
}

/** What follows the tty view once it is done: warnings, then the image or the failure. */
export function ttyEpilogue(state: TtyState, end: { result: BuildOutcome } | { err: unknown }, report: ReportOptions): string {
  const warnings = formatWarnings(state.warnings);
  if ('result' in end) return `${warnings}${outcomeLine(end.result)}\n`;
  return `${warnings}\n${formatError(end.err, report)}`;
}

function outcomeLine(result: BuildOutcome): string {
  return result.summary ?? `Built ${result.imageId}${result.tags.length ? ` as ${result.tags.join(', ')}` : ''}`;
}

export function isCancelled(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { exitCode?: number }).exitCode === 130;
}

const TONE_CODES: Record<NonNullable<Line['tone']>, [string, string]> = {
  dim: ['\x1b[2m', '\x1b[22m'],
  error: ['\x1b[31m', '\x1b[39m'],
  ok: ['\x1b[32m', '\x1b[39m'],
  warn: ['\x1b[33m', '\x1b[39m'],
  bold: ['\x1b[1m', '\x1b[22m'],
};

/** A line with the colours ink would give it. */
function paint(line: Line): string {
  if (!line.tone) return line.text;
  const [on, off] = TONE_CODES[line.tone];
  return `${on}${line.text}${off}`;
}

function plainView(write: (s: string) => void, report: ReportOptions): ProgressView {
  const printer = new PlainPrinter(write);
  return {
    handle: (e) => printer.handle(e),
    async succeed(result) {
      printer.finish();
      write(`\n${outcomeLine(result)}\n`);
    },
    async fail(err) {
      printer.finish();
      write(`\n${formatError(err, report)}`);
    },
  };
}

/** One JSON object per line: the solver's events as they are, then a result or an error. */
function rawJsonView(write: (s: string) => void, report: ReportOptions): ProgressView {
  const line = (o: unknown) => write(`${JSON.stringify(o)}\n`);
  return {
    handle: line,
    async succeed(result) {
      line({ type: 'result', imageId: result.imageId, tags: result.tags });
    },
    async fail(err) {
      line(errorEvent(err, report));
    },
  };
}

/** Lint and other warnings, listed once at the end of a build. */
export function formatWarnings(warnings: readonly Extract<ProgressEvent, { type: 'warning' }>[]): string {
  if (warnings.length === 0) return '';
  const lines = [`\n${warnings.length} warning${warnings.length === 1 ? '' : 's'} found:`];
  for (const w of warnings) {
    const where = w.location ? ` (${w.location.file}:${w.location.line})` : '';
    lines.push(` - ${w.rule ? `${w.rule}: ` : ''}${w.message}${where}`);
  }
  return `${lines.join('\n')}\n`;
}
