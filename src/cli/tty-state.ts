import type { ProgressEvent } from '../../solver/progress.js';
import { humanSize } from './format.js';

/**
 * The model behind the live terminal view: what each step is doing, folded from progress events,
 * and the lines to draw for it at a given width. Pure, so it is tested without a terminal; the
 * ink component in tty.ts only puts these lines on the screen.
 */

export type StepStatus = 'running' | 'cached' | 'done' | 'error';

export interface StepState {
  id: number;
  /** What the brackets of the step's name hold: `build 2/5`, `internal`. */
  label: string;
  instruction: string;
  /** The op kind of a graph vertex; absent for the build's own steps (loading, exporting). */
  kind?: string;
  status: StepStatus;
  start: number;
  end?: number;
  /** The last complete lines of its output. */
  lines: string[];
  partial: string;
  error?: string;
  /** Blobs the step moves (pulls, pushes, exports), in the order they started. */
  transfers?: Map<string, Transfer>;
}

export interface Transfer {
  name: string;
  current: number;
  total: number;
  start: number;
  time: number;
  done: boolean;
}

/** What the header says while running and once done: `[+] Building 1.2s`, `[+] Built in 1.2s`. */
export interface Activity {
  running: string;
  done: string;
}

export interface Line {
  text: string;
  tone?: 'dim' | 'error' | 'ok' | 'warn' | 'bold';
}

/** Output lines kept per running step; fewer are drawn when the terminal is short. */
const TAIL = 6;
const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class TtyState {
  readonly steps = new Map<number, StepState>();
  /** Steps and messages in the order they finished: each is drawn once, above the live area. */
  readonly finished: (StepState | Line)[] = [];
  readonly warnings: Extract<ProgressEvent, { type: 'warning' }>[] = [];
  outcome: 'running' | 'ok' | 'failed' | 'cancelled' = 'running';
  end?: number;

  constructor(
    readonly started: number,
    readonly activity: Activity = { running: 'Building', done: 'Built' },
  ) {}

  apply(e: ProgressEvent): void {
    switch (e.type) {
      case 'vertex.start': {
        if (this.steps.has(e.id)) return;
        const m = /^\[([^\]]*)\] (.*)$/s.exec(e.name);
        this.steps.set(e.id, { id: e.id, label: m?.[1] ?? '', instruction: m?.[2] ?? e.name, kind: e.kind, status: 'running', start: e.time, lines: [], partial: '' });
        return;
      }
      case 'vertex.cached':
        return this.finish(e.id, 'cached', e.time);
      case 'vertex.done':
        return this.finish(e.id, 'done', e.time);
      case 'vertex.error':
        return this.finish(e.id, 'error', e.time, e.message);
      case 'vertex.log': {
        const s = this.steps.get(e.id);
        if (!s) return;
        const parts = (s.partial + e.data).split('\n');
        s.partial = parts.pop() ?? '';
        s.lines.push(...parts.map(cleanLine));
        if (s.lines.length > TAIL) s.lines.splice(0, s.lines.length - TAIL);
        return;
      }
      case 'vertex.miss': {
        const s = this.steps.get(e.id);
        if (s) s.lines.push(`cache miss: ${e.reason}`);
        return;
      }
      case 'warning':
        this.warnings.push(e);
        return;
      case 'info':
        this.finished.push({ text: e.message, tone: 'dim' });
        return;
      case 'transfer': {
        const s = this.steps.get(e.id);
        if (!s) return;
        s.transfers ??= new Map();
        const t = s.transfers.get(e.name) ?? { name: e.name, current: 0, total: e.total, start: e.time, time: e.time, done: false };
        t.current = e.current;
        t.total = e.total;
        t.time = e.time;
        t.done ||= e.done === true;
        s.transfers.set(e.name, t);
        return;
      }
    }
  }

  /** The build ended; running steps are drawn as cancelled or failed with it. */
  close(outcome: 'ok' | 'failed' | 'cancelled', time: number): void {
    this.outcome = outcome;
    this.end = time;
    for (const s of [...this.steps.values()].sort((a, b) => a.id - b.id)) {
      if (s.status === 'running') this.finish(s.id, 'error', time, outcome === 'cancelled' ? 'cancelled' : 'stopped');
    }
  }

  /** Bytes moved by every step so far. */
  transferTotals(): { current: number; total: number } {
    let current = 0;
    let total = 0;
    for (const s of this.steps.values()) {
      for (const t of s.transfers?.values() ?? []) {
        current += t.current;
        total += t.total;
      }
    }
    return { current, total };
  }

  running(): StepState[] {
    return [...this.steps.values()].filter((s) => s.status === 'running').sort((a, b) => a.id - b.id);
  }

  /** `steps` and `cached` count the Dockerfile's own steps: not base images, loading or exporting. */
  counts(): { total: number; finished: number; steps: number; cached: number } {
    let finished = 0;
    let steps = 0;
    let cached = 0;
    for (const s of this.steps.values()) {
      if (s.status !== 'running') finished++;
      if (s.kind === undefined || s.kind === 'image' || s.kind === 'context') continue;
      steps++;
      if (s.status === 'cached') cached++;
    }
    return { total: this.steps.size, finished, steps, cached };
  }

  /** The live area: a header, each running step with the last lines of its output. */
  live(options: { width: number; rows: number; now: number }): Line[] {
    const { width, now } = options;
    const { total, finished, steps, cached } = this.counts();
    const elapsed = seconds((this.end ?? now) - this.started);
    if (this.outcome !== 'running') {
      const verb = this.outcome === 'ok' ? this.activity.done : this.outcome === 'cancelled' ? 'Cancelled' : 'Failed';
      const moved = this.transferTotals();
      // A pull or a push has no Dockerfile steps to count: it says what it moved instead.
      const tail = steps === 0 && moved.total > 0 ? `: ${humanSize(moved.total)}` : `: ${steps} step${steps === 1 ? '' : 's'}, ${cached} cached${steps > 0 ? ` (${Math.round((cached / steps) * 100)}%)` : ''}`;
      const summary = `[+] ${verb} in ${elapsed}${tail}`;
      return [{ text: fit(summary, width), tone: this.outcome === 'ok' ? 'ok' : 'error' }];
    }
    const out: Line[] = [{ text: fit(`[+] ${this.activity.running} ${elapsed} (${finished}/${total})${cached > 0 ? `, ${cached} cached` : ''}`, width), tone: 'bold' }];
    const running = this.running();
    // Keep the live area shorter than the terminal: ink redraws the whole screen otherwise.
    const budget = Math.max(1, options.rows - 2);
    const shown = running.slice(0, Math.max(1, Math.min(running.length, budget - 1)));
    const hidden = running.length - shown.length;
    const perStep = Math.max(0, Math.min(TAIL, Math.floor((budget - 1 - shown.length - (hidden > 0 ? 1 : 0)) / Math.max(1, shown.length))));
    const frame = SPINNER[Math.floor(now / 80) % SPINNER.length]!;
    for (const s of shown) {
      if (s.transfers?.size) {
        // Like docker pull: a line per blob with its bytes and rate, the step's totals beside it.
        const all = [...s.transfers.values()];
        const current = all.reduce((n, t) => n + t.current, 0);
        const total = all.reduce((n, t) => n + t.total, 0);
        const first = Math.min(...all.map((t) => t.start));
        out.push({ text: stepLine(s, `${humanSize(current)} / ${humanSize(total)} ${rate(current, now - first)} ${frame} ${seconds(now - s.start)}`, width) });
        for (const t of all.slice(-Math.max(1, perStep))) out.push({ text: fit(`   │ ${transferLine(t, now)}`, width), tone: t.done ? 'dim' : undefined });
        continue;
      }
      out.push({ text: stepLine(s, `${frame} ${seconds(now - s.start)}`, width) });
      const tail = [...s.lines, ...(s.partial ? [cleanLine(s.partial)] : [])].slice(-perStep);
      for (const l of perStep > 0 ? tail : []) out.push({ text: fit(`   │ ${l}`, width), tone: 'dim' });
    }
    if (hidden > 0) out.push({ text: fit(` … and ${hidden} more running`, width), tone: 'dim' });
    return out;
  }

  private finish(id: number, status: Exclude<StepStatus, 'running'>, time: number, error?: string): void {
    const s = this.steps.get(id);
    if (!s || s.status !== 'running') return;
    s.status = status;
    s.end = time;
    s.error = error;
    this.finished.push(s);
  }
}

/** One entry of `finished` as drawn at the terminal's width when it is drawn. */
export function drawFinished(item: StepState | Line, width: number): Line {
  return 'id' in item ? finishedLine(item, width) : { ...item, text: fit(item.text, width) };
}

/** A finished step on one line: its time, CACHED, or ERROR. */
export function finishedLine(s: StepState, width: number): Line {
  const right = s.status === 'cached' ? 'CACHED' : s.status === 'error' ? `${s.error === 'cancelled' ? 'CANCELLED' : 'ERROR'} ${seconds((s.end ?? s.start) - s.start)}` : seconds((s.end ?? s.start) - s.start);
  return { text: stepLine(s, right, width), tone: s.status === 'error' ? 'error' : s.status === 'cached' ? 'dim' : undefined };
}

/** `=> #3 [build 2/5] RUN make ……… 1.2s`, the instruction cut to leave the right column whole. */
export function stepLine(s: Pick<StepState, 'id' | 'label' | 'instruction'>, right: string, width: number): string {
  const left = `=> #${s.id} ${s.label ? `[${s.label}] ` : ''}${s.instruction.replace(/\s*\n\s*/g, ' ')}`;
  const room = width - right.length - 1;
  if (room < 8) return fit(`${left} ${right}`, width);
  const l = fit(left, room);
  return `${l}${' '.repeat(Math.max(1, width - right.length - length(l)))}${right}`;
}

/** Cuts a line to `width` columns, with an ellipsis when something was cut. */
export function fit(text: string, width: number): string {
  const chars = Array.from(text);
  if (chars.length <= width) return text;
  return `${chars.slice(0, Math.max(0, width - 1)).join('')}…`;
}

function length(text: string): number {
  return Array.from(text).length;
}

/** Output as a person would read it: the last state of a \r-redrawn line, no control sequences. */
function cleanLine(line: string): string {
  const last = line.replace(/\r+$/, '').split('\r').pop() ?? '';
  return last.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\t/g, '    ').replace(/[\x00-\x1f\x7f]/g, '');
}

/** `sha256:0123456789ab  1.2MB / 3.4MB  820kB/s`, or `done` with its time once it is. */
export function transferLine(t: Transfer, now: number): string {
  const bytes = `${humanSize(t.current)} / ${humanSize(t.total)}`;
  const state = t.done ? `done ${seconds(t.time - t.start)}` : rate(t.current, now - t.start);
  return `${t.name.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, '$1')}  ${bytes}  ${state}`;
}

/** Bytes a second over `ms`, as docker shows it: `1.2MB/s`. */
export function rate(bytes: number, ms: number): string {
  return `${humanSize(ms > 0 ? Math.round((bytes * 1000) / ms) : 0)}/s`;
}

export function seconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}
