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
  | { type: 'info'; message: string };

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
