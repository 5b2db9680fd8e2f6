/** Progress is a stream of typed events, consumed alike by the CLI, the server and tests. */
export type ProgressEvent =
  /** `kind` is the op kind of a graph vertex; absent for the build's own bookkeeping steps. */
  | { type: 'vertex.start'; id: number; name: string; time: number; kind?: string }
  | { type: 'vertex.cached'; id: number; name: string; time: number }
  | { type: 'vertex.log'; id: number; stream: 1 | 2; data: string; time: number }
  | { type: 'vertex.done'; id: number; time: number; duration: number }
  | { type: 'vertex.error'; id: number; time: number; duration: number; message: string }
  /** A step that had a record for an earlier version misses: `reason` sums up `reasons`. */
  | { type: 'vertex.miss'; id: number; reason: string; reasons?: string[]; time: number }
  | { type: 'warning'; message: string; rule?: string; location?: { file: string; line: number } }
  | { type: 'info'; message: string }
  /**
   * Bytes of one blob moved by step `id` (a pull, a push, an export): `name` is the blob's digest,
   * sent when it starts, every so often while it moves, and once `done`.
   */
  | { type: 'transfer'; id: number; name: string; current: number; total: number; time: number; done?: boolean };

/** Where a registry client or an exporter reports the bytes of a blob it moves. */
export type TransferSink = (t: { name: string; current: number; total: number; done?: boolean }) => void;

/**
 * Counts the bytes of `source` for `sink` as they pass: once at the start, at most every
 * `everyMs` meanwhile (a progress view needs no more), and once at the end with `done`.
 */
export async function* countTransfer<T extends Uint8Array>(source: AsyncIterable<T>, sink: TransferSink | undefined, blob: { name: string; total: number; offset?: number; last?: boolean }, everyMs = 100): AsyncGenerator<T> {
  let current = blob.offset ?? 0;
  if (!sink) {
    yield* source;
    return;
  }
  if (current === 0) sink({ name: blob.name, current, total: blob.total });
  let told = Date.now();
  for await (const chunk of source) {
    current += chunk.byteLength;
    const now = Date.now();
    if (now - told >= everyMs) {
      told = now;
      sink({ name: blob.name, current, total: blob.total });
    }
    yield chunk;
  }
  if (blob.last !== false) sink({ name: blob.name, current, total: blob.total, done: true });
}
export type ProgressSink = (event: ProgressEvent) => void;

/** Hands out stable vertex numbers: `#1`, `#2`, … in the order names are first seen. */
export class ProgressNumbers {
  private next = 1;
  private readonly ids = new Map<string, number>();

  id(key: string): number {
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.next++;
      this.ids.set(key, id);
    }
    return id;
  }
}
