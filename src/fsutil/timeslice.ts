import { setImmediate as nextTurn } from 'node:timers/promises';

/** How long synchronous file work may hold the event loop before it gives the loop a turn. */
const SLICE_MS = 15;

/**
 * Paces long synchronous file system work (copying or checksumming thousands of small files).
 * Synchronous calls cost about the system call itself, where each asynchronous one is a thread
 * pool round trip several times dearer; a walk that calls `pause()` between files still lets
 * progress, timers and other steps run at least every SLICE_MS. Use it as
 * `const wait = slice.pause(); if (wait) await wait;` so that most files cost no await at all.
 * Date.now() keeps the time: a millisecond clock serves a 15 ms slice, and the global
 * `performance` loads Node's perf_hooks (a dozen internal modules) on a cached build's path.
 */
export class TimeSlice {
  private until = Date.now() + SLICE_MS;

  constructor(private readonly signal?: AbortSignal) {
    signal?.throwIfAborted();
  }

  /** A promise to await when the slice is used up, else undefined. */
  pause(): Promise<void> | undefined {
    if (Date.now() < this.until) return undefined;
    return this.yieldTurn();
  }

  private async yieldTurn(): Promise<void> {
    await nextTurn();
    this.signal?.throwIfAborted();
    this.until = Date.now() + SLICE_MS;
  }
}
