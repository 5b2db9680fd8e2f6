import { KilnError } from '../../cache/errors.js';

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
  onPosition: (position: number) => void;
}

/**
 * At most `max` builds at once; the rest wait in arrival order and are told their place in the
 * line whenever it changes.
 */
export class BuildSlots {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly max: number) {}

  get active(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with a release function once a slot is free; rejects when `signal` aborts first. */
  async acquire(options: { signal: AbortSignal; onQueued?: (position: number) => void }): Promise<() => void> {
    options.signal.throwIfAborted();
    if (this.running < this.max) {
      this.running++;
      return this.releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, onPosition: options.onQueued ?? (() => {}) };
      this.waiting.push(waiter);
      waiter.onPosition(this.waiting.length);
      options.signal.addEventListener(
        'abort',
        () => {
          const i = this.waiting.indexOf(waiter);
          if (i < 0) return;
          this.waiting.splice(i, 1);
          this.announce(i);
          reject(options.signal.reason ?? new KilnError('CANCELLED', 'The build was cancelled while it waited for a slot'));
        },
        { once: true },
      );
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) {
        // The slot passes straight to the next build: `running` stays the same.
        next.resolve();
        this.announce(0);
      } else {
        this.running--;
      }
    };
  }

  private announce(from: number): void {
    for (let i = from; i < this.waiting.length; i++) this.waiting[i]!.onPosition(i + 1);
  }
}
