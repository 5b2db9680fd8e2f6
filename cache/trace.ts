/**
 * Phase timings for benchmarks: with KILN_TRACE set to a file path, the process appends one JSON
 * line of accumulated milliseconds per phase when it exits. Costs nothing when unset.
 */
import { appendFileSync } from 'node:fs';

const target = process.env.KILN_TRACE;
const totals = new Map<string, { ms: number; count: number }>();

if (target) {
  process.on('exit', () => {
    appendFileSync(target, `${JSON.stringify(Object.fromEntries(totals))}\n`);
  });
}

export async function traced<T>(phase: string, fn: () => Promise<T>): Promise<T> {
  if (!target) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    const t = totals.get(phase) ?? { ms: 0, count: 0 };
    t.ms += performance.now() - start;
    t.count++;
    totals.set(phase, t);
  }
}

const crashAt = process.env.KILN_CRASH_AT;

/**
 * Fault injection for the crash tests: with KILN_CRASH_AT naming this point, the process kills
 * itself here exactly as `kill -9` would. Costs one comparison when unset.
 */
export function crashPoint(point: string): void {
  if (crashAt === point) process.kill(process.pid, 'SIGKILL');
}

const faultAt = process.env.KILN_FAULT_AT;

/**
 * Fault injection for the failure tests: with KILN_FAULT_AT=POINT=KIND naming this point, the
 * process fails here as a defect would: `throw` throws an unexpected error, `reject` leaves a
 * promise rejected with no handler, `uncaught` throws from a timer. Costs one comparison when
 * unset.
 */
export function faultPoint(point: string): void {
  if (faultAt === undefined || !faultAt.startsWith(`${point}=`)) return;
  const kind = faultAt.slice(point.length + 1);
  if (kind === 'throw') throw new TypeError(`Injected fault at ${point}`);
  if (kind === 'reject') void Promise.reject(new Error(`Injected unhandled rejection at ${point}`));
  if (kind === 'uncaught') {
    setImmediate(() => {
      throw new Error(`Injected uncaught exception at ${point}`);
    });
  }
}
