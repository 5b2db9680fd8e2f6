import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { loadCorpus, type Corpus } from './corpus.js';
import { buildArgs, mutate, TOKENS } from './mutate.js';
import { createRng, type Rng } from './prng.js';

const REPO = resolve(import.meta.dirname, '../..');

export interface FuzzCase {
  id: number;
  dockerfile?: string;
  buildArgs?: Record<string, string>;
  ignore?: string;
  target?: string;
  check?: boolean;
  triggers?: string[];
  word?: string;
  env?: Record<string, string>;
  escape?: '\\' | '`';
}

export interface FuzzOutcome {
  id: number;
  ms: number;
  kind: 'graph' | 'error' | 'ignore-error' | 'unlocated' | 'crash' | 'hang';
  code?: string;
  error?: { name: string; message: string; stack: string };
}

/** Case `id` of a run, made from the seed and the id alone, so any one case can be replayed. */
export function makeCase(corpus: Corpus, seed: number, id: number): FuzzCase {
  const rng: Rng = createRng((seed ^ Math.imul(id + 1, 0x9e3779b1)) >>> 0);
  if (rng.chance(0.15)) {
    const env: Record<string, string> = {};
    for (const k of ['A', 'B', 'PWD', 'HOME']) if (rng.chance(0.5)) env[k] = mutate(rng.pick(corpus.words), rng, TOKENS, 1);
    return { id, word: mutate(rng.pick(corpus.words), rng, TOKENS), env, escape: rng.chance(0.2) ? '`' : '\\' };
  }
  const donors = corpus.dockerfiles;
  const dockerfile = mutate(rng.pick(donors), rng, donors);
  return {
    id,
    dockerfile,
    buildArgs: buildArgs(rng),
    ...(rng.chance(0.5) ? { ignore: mutate(rng.pick(corpus.ignores), rng, corpus.ignores, rng.int(4)) } : {}),
    ...(rng.chance(0.1) ? { target: rng.pick(['build', '0', '1', 'two', 'nope', '']) } : {}),
    ...(rng.chance(0.1) ? { check: true } : {}),
    triggers: Array.from({ length: rng.int(3) }, () => mutate(rng.pick(['COPY . /src', 'RUN make', 'ENV A=b', 'ONBUILD RUN x', 'FROM x', 'ADD a b']), rng, TOKENS, rng.int(3))),
  };
}

export interface FuzzReport {
  outcomes: FuzzOutcome[];
  slowest: FuzzOutcome | undefined;
}

/**
 * Runs cases [from, to) of `seed` in worker threads against dist/, `perCaseMs` being the most
 * one case may take before it counts as a hang (its worker is then replaced).
 */
export async function runFuzz(options: { seed: number; from?: number; to: number; workers?: number; perCaseMs?: number; batch?: number }): Promise<FuzzReport> {
  const dist = resolve(REPO, 'dist');
  if (!existsSync(resolve(dist, 'frontend/dockerfile/compile.js'))) throw new Error('dist/ is missing: run "npm run build" first');
  const corpus = loadCorpus();
  const perCaseMs = options.perCaseMs ?? 5_000;
  const batch = options.batch ?? 200;
  let next = options.from ?? 0;
  const outcomes: FuzzOutcome[] = [];

  const lane = async (): Promise<void> => {
    while (next < options.to) {
      const start = next;
      const end = Math.min(options.to, start + batch);
      next = end;
      let pending = Array.from({ length: end - start }, (_, i) => makeCase(corpus, options.seed, start + i));
      while (pending.length > 0) {
        const done = await runBatch(dist, pending, perCaseMs);
        outcomes.push(...done);
        const finished = new Set(done.map((o) => o.id));
        pending = pending.filter((c) => !finished.has(c.id));
      }
    }
  };
  await Promise.all(Array.from({ length: options.workers ?? 2 }, lane));
  outcomes.sort((a, b) => a.id - b.id);
  const slowest = outcomes.filter((o) => o.kind !== 'hang').reduce<FuzzOutcome | undefined>((s, o) => (s === undefined || o.ms > s.ms ? o : s), undefined);
  return { outcomes, slowest };
}

/** One worker for one batch; on a hang it reports what finished plus the hung case. */
function runBatch(dist: string, cases: FuzzCase[], perCaseMs: number): Promise<FuzzOutcome[]> {
  const progress = new SharedArrayBuffer(4);
  const current = new Int32Array(progress);
  Atomics.store(current, 0, -1);
  // The main thread's stack is about 1 MiB: a worker with more would hide a stack overflow.
  const worker = new Worker(new URL('./worker.mjs', import.meta.url), { workerData: { dist, progress }, resourceLimits: { maxOldGenerationSizeMb: 512, stackSizeMb: 1 } });
  return new Promise((resolvePromise, reject) => {
    let last = -1;
    let since = Date.now();
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearInterval(watchdog);
      void worker.terminate();
      fn();
    };
    const watchdog = setInterval(() => {
      const now = Atomics.load(current, 0);
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (now >= 0 && Date.now() - since > perCaseMs) {
        // The finished cases are lost with the thread; the caller reruns them in a new one.
        finish(() => resolvePromise([{ id: now, ms: Date.now() - since, kind: 'hang' }]));
      }
    }, Math.min(250, perCaseMs / 4));
    worker.on('message', (msg: 'ready' | FuzzOutcome[]) => {
      if (msg === 'ready') worker.postMessage(cases);
      else finish(() => resolvePromise(msg));
    });
    worker.on('error', (err) => {
      // A thread that dies (out of memory, a stack overflow outside any try) fails its current case.
      const now = Atomics.load(current, 0);
      if (now >= 0) finish(() => resolvePromise([{ id: now, ms: 0, kind: 'crash', error: { name: err.name, message: err.message, stack: '' } }]));
      else finish(() => reject(err));
    });
  });
}
