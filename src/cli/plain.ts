import type { ProgressEvent } from '../../solver/progress.js';
import { humanSize } from './format.js';

/**
 * BuildKit's plain progress format: `#N name` when a step starts, `#N 0.123 line` for its
 * output, `#N CACHED` / `#N DONE 0.4s` / `#N ERROR: …` at its end, a blank line between groups.
 */
export class PlainPrinter {
  private current = 0;
  private readonly names = new Map<number, string>();
  private readonly starts = new Map<number, number>();
  private readonly partial = new Map<number, string>();
  private readonly warnings: ProgressEvent[] = [];
  /** When each blob of a step began to move, by `id name`. */
  private readonly transfers = new Map<string, number>();

  constructor(private readonly write: (s: string) => void) {}

  handle(e: ProgressEvent): void {
    switch (e.type) {
      case 'vertex.start':
        this.names.set(e.id, e.name);
        this.starts.set(e.id, e.time);
        this.header(e.id, true);
        return;
      case 'vertex.cached':
        this.header(e.id);
        this.write(`#${e.id} CACHED\n`);
        return;
      case 'vertex.log': {
        const text = (this.partial.get(e.id) ?? '') + e.data;
        const lines = text.split('\n');
        this.partial.set(e.id, lines.pop() ?? '');
        if (lines.length === 0) return;
        this.header(e.id);
        const t = ((e.time - (this.starts.get(e.id) ?? e.time)) / 1000).toFixed(3);
        for (const line of lines) this.write(`#${e.id} ${t} ${line.replace(/\r$/, '')}\n`);
        return;
      }
      case 'vertex.done':
        this.flush(e.id, e.time);
        this.header(e.id);
        this.write(`#${e.id} DONE ${(e.duration / 1000).toFixed(1)}s\n`);
        return;
      case 'vertex.error':
        this.flush(e.id, e.time);
        this.header(e.id);
        this.write(`#${e.id} ERROR: ${e.message}\n`);
        return;
      case 'vertex.miss':
        this.header(e.id);
        this.write(`#${e.id} cache miss: ${e.reason}\n`);
        return;
      case 'warning':
        this.warnings.push(e);
        return;
      case 'info':
        this.write(`${e.message}\n`);
        return;
      case 'transfer': {
        // A line when a blob starts and one when it is done; the bytes between are for live views.
        const key = `${e.id} ${e.name}`;
        const start = this.transfers.get(key);
        if (start === undefined) {
          this.transfers.set(key, e.time);
          this.header(e.id);
          this.write(`#${e.id} ${e.name} ${humanSize(e.current)} / ${humanSize(e.total)}\n`);
        }
        if (e.done) {
          this.header(e.id);
          this.write(`#${e.id} ${e.name} ${humanSize(e.current)} / ${humanSize(e.total)} ${((e.time - (start ?? e.time)) / 1000).toFixed(1)}s done\n`);
        }
        return;
      }
    }
  }

  /** Lint and other warnings, listed once at the end of a build. */
  finish(): void {
    if (this.warnings.length === 0) return;
    this.write(`\n${this.warnings.length} warning${this.warnings.length === 1 ? '' : 's'} found:\n`);
    for (const w of this.warnings) {
      if (w.type !== 'warning') continue;
      const where = w.location ? ` (${w.location.file}:${w.location.line})` : '';
      this.write(` - ${w.rule ? `${w.rule}: ` : ''}${w.message}${where}\n`);
    }
  }

  private flush(id: number, time: number): void {
    const rest = this.partial.get(id);
    if (rest) {
      this.partial.delete(id);
      this.handle({ type: 'vertex.log', id, stream: 1, data: `${rest}\n`, time });
    }
  }

  private header(id: number, force = false): void {
    if (this.current === id && !force) return;
    if (this.current !== 0) this.write('\n');
    this.current = id;
    this.write(`#${id} ${this.names.get(id) ?? ''}\n`);
  }
}
