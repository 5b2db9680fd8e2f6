import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreDb } from '../../cache/db.js';
import { digestOf } from '../../cache/digest.js';
import { KilnError, VertexError } from '../../cache/errors.js';
import { vertex, type ExecOp, type Vertex } from '../../solver/graph.js';
import type { ProgressEvent } from '../../solver/progress.js';
import { Solver } from '../../solver/solver.js';
import type { SolvedVertex, StepContext, Worker } from '../../solver/worker.js';
import { tempDir } from '../helpers/kiln.js';

/** A worker whose steps are promises the test controls. */
class FakeWorker implements Worker {
  runs: string[] = [];
  gates = new Map<string, { promise: Promise<void>; open: () => void }>();
  failing = new Set<string>();
  aborted: string[] = [];

  gate(name: string) {
    let open!: () => void;
    const promise = new Promise<void>((r) => (open = r));
    this.gates.set(name, { promise, open });
    return open;
  }

  async resolveImage() {
    return { snapshot: { layers: [] }, created: '2020-01-01T00:00:00.000Z' };
  }

  async contentKey() {
    return undefined;
  }

  async run(v: Vertex, _inputs: readonly SolvedVertex[], ctx: StepContext) {
    const name = (v.op as ExecOp).args.join(' ');
    this.runs.push(name);
    ctx.log(1, `running ${name}\n`);
    const g = this.gates.get(name);
    if (g) {
      await Promise.race([
        g.promise,
        new Promise((_, reject) =>
          ctx.signal.addEventListener('abort', () => {
            this.aborted.push(name);
            reject(new KilnError('CANCELLED', 'cancelled'));
          }, { once: true }),
        ),
      ]);
    }
    if (this.failing.has(name)) throw new KilnError('STEP_FAILED', `${name} failed`);
    const diffId = digestOf(name);
    return { diffId, blob: diffId, blobSize: 1, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
  }
}

function exec(args: string, root?: Vertex): Vertex {
  const op: ExecOp = { kind: 'exec', root: root ? 0 : -1, args: args.split(' '), env: [], cwd: '/', user: 'root', network: 'default' };
  return vertex(op, root ? [root] : [], { name: `RUN ${args}`, location: { file: 'Dockerfile', line: 1 } });
}

describe('the solver', () => {
  let t: ReturnType<typeof tempDir>;
  let db: StoreDb;
  let worker: FakeWorker;
  beforeEach(() => {
    t = tempDir();
    db = new StoreDb(`${t.path}/kiln.db`);
    worker = new FakeWorker();
  });
  afterEach(async () => {
    db.close();
    await t.cleanup();
  });

  // Layer rows must exist for a cache record to count as a hit.
  const recordLayers = (...names: string[]) => {
    for (const n of names) db.putLayer({ diffId: digestOf(n), blob: digestOf(n), blobSize: 1, mediaType: 'x' });
  };

  it('runs a shared input once and independent branches concurrently', async () => {
    const base = exec('base');
    const a = exec('a', base);
    const b = exec('b', base);
    const openA = worker.gate('a');
    const openB = worker.gate('b');
    const solver = new Solver(db, worker, { maxParallelism: 2 });
    const done = solver.solve([a, b]);
    await new Promise((r) => setTimeout(r, 20));
    expect(worker.runs.sort()).toEqual(['a', 'b', 'base']);
    openA();
    openB();
    const results = await done;
    expect(results.get(a.digest)!.snapshot.layers.map((l) => l.diffId)).toEqual([digestOf('base'), digestOf('a')]);
  });

  it('shares one execution between two solves of equal keys at the same time', async () => {
    const v = exec('slow');
    const open = worker.gate('slow');
    const solver = new Solver(db, worker);
    const first = solver.solve([v]);
    const second = solver.solve([exec('slow')]);
    await new Promise((r) => setTimeout(r, 20));
    open();
    await Promise.all([first, second]);
    expect(worker.runs).toEqual(['slow']);
  });

  it('a shared step survives one of its builds being cancelled, and both see its progress', async () => {
    const open = worker.gate('shared');
    const solver = new Solver(db, worker);
    const first = new AbortController();
    const eventsA: ProgressEvent[] = [];
    const eventsB: ProgressEvent[] = [];
    const a = solver.solve([exec('shared')], { signal: first.signal, progress: (e) => eventsA.push(e) });
    const b = solver.solve([exec('shared')], { progress: (e) => eventsB.push(e) });
    await new Promise((r) => setTimeout(r, 20));
    first.abort(new KilnError('CANCELLED', 'client went away', { exitCode: 130 }));
    await expect(a).rejects.toMatchObject({ code: 'CANCELLED' });
    open();
    const results = await b;
    expect([...results.values()][0]!.layer?.diffId).toBe(digestOf('shared'));
    expect(worker.runs).toEqual(['shared']);
    expect(eventsB.map((e) => e.type)).toEqual(expect.arrayContaining(['vertex.start', 'vertex.done']));
    expect(eventsA.some((e) => e.type === 'vertex.error')).toBe(true);
    expect(worker.aborted).toEqual([]);
  });

  it('a shared step is cancelled once every build waiting for it is', async () => {
    worker.gate('orphan');
    const solver = new Solver(db, worker);
    const c1 = new AbortController();
    const c2 = new AbortController();
    const p1 = solver.solve([exec('orphan')], { signal: c1.signal });
    const p2 = solver.solve([exec('orphan')], { signal: c2.signal });
    await new Promise((r) => setTimeout(r, 20));
    c1.abort(new KilnError('CANCELLED', 'one'));
    c2.abort(new KilnError('CANCELLED', 'two'));
    await expect(p1).rejects.toMatchObject({ message: 'one' });
    await expect(p2).rejects.toMatchObject({ message: 'two' });
    await new Promise((r) => setTimeout(r, 10));
    expect(worker.aborted).toEqual(['orphan']);
  });

  it('marks cache hits used in one write at the end, and only those last used over a minute ago', async () => {
    const [a, b] = [exec('a'), exec('b')];
    recordLayers('a', 'b');
    await new Solver(db, worker).solve([a, b]);
    const lastUsed = () => new Map((db.allCache()).map((r) => [r.description, r.lastUsed]));
    const stale = Date.now() - 5 * 60_000;
    db.db.prepare('UPDATE cache SET last_used = ? WHERE description = ?').run(stale, 'RUN a');
    const recent = lastUsed().get('RUN b')!;
    const before = Date.now();
    const results = await new Solver(db, worker).solve([exec('a'), exec('b')]);
    expect([...results.values()].every((r) => r.cached)).toBe(true);
    expect(lastUsed().get('RUN a')).toBeGreaterThanOrEqual(before);
    // Used within the minute: no write at all.
    expect(lastUsed().get('RUN b')).toBe(recent);
  });

  it('two solvers on one store (as two processes) run a key once: the second waits for the result', async () => {
    const otherDb = new StoreDb(`${t.path}/kiln.db`);
    try {
      const otherWorker = new FakeWorker();
      recordLayers('slow');
      const key = await keyOf('slow');
      const open = worker.gate('slow');
      const first = new Solver(db, worker).solve([exec('slow')]);
      await new Promise((r) => setTimeout(r, 20));
      expect(db.getRunning(key)).toBeDefined();
      const events: ProgressEvent[] = [];
      const second = new Solver(otherDb, otherWorker).solve([exec('slow')], { progress: (e) => events.push(e) });
      await new Promise((r) => setTimeout(r, 300));
      expect(otherWorker.runs).toEqual([]);
      open();
      const [a, b] = await Promise.all([first, second]);
      expect(otherWorker.runs).toEqual([]);
      expect(worker.runs).toEqual(['slow']);
      expect([...b.values()][0]!.created).toBe([...a.values()][0]!.created);
      expect(events.some((e) => e.type === 'vertex.log' && /^waiting for kiln process \d+, which is running this step\n$/.test(e.data))).toBe(true);
      // The claim is gone with the run.
      expect(db.allRunning()).toEqual([]);
    } finally {
      otherDb.close();
    }
  });

  it('takes over the run of a key whose owner is dead', async () => {
    const key = await keyOf('orphan');
    db.db.prepare('DELETE FROM cache').run();
    expect(db.claimRun(key, { pid: 2 ** 22 + 1, start: 'gone' })).toBe(true);
    await new Solver(db, worker).solve([exec('orphan')]);
    expect(worker.runs).toEqual(['orphan', 'orphan']);
    expect(db.allRunning()).toEqual([]);
  });

  /** The cache key of `exec(args)`, as a solve computes it (solved once in a store of its own). */
  async function keyOf(args: string): Promise<string> {
    const results = await new Solver(db, worker).solve([exec(args)]);
    const key = [...results.values()][0]!.key;
    if (args !== 'orphan') {
      // Forget the run: only the key was wanted.
      db.db.prepare('DELETE FROM cache WHERE key = ?').run(key);
      worker.runs = worker.runs.filter((r) => r !== args);
    }
    return key;
  }

  it('reuses recorded results and reports them as cached, keeping their creation time', async () => {
    const solver = new Solver(db, worker);
    const v = exec('x', exec('base'));
    const first = await solver.solve([v]);
    recordLayers('x', 'base');
    const events: ProgressEvent[] = [];
    const second = await solver.solve([v], { progress: (e) => events.push(e) });
    expect(worker.runs).toEqual(['base', 'x']);
    expect(second.get(v.digest)!.cached).toBe(true);
    expect(second.get(v.digest)!.created).toBe(first.get(v.digest)!.created);
    expect(events.filter((e) => e.type === 'vertex.cached')).toHaveLength(2);
    await solver.solve([v], { noCache: true });
    expect(worker.runs).toEqual(['base', 'x', 'base', 'x']);
  });

  it('a failing step cancels its running sibling and fails with the step and its output', async () => {
    const base = exec('base');
    const slow = exec('slow', base);
    const bad = exec('bad', base);
    worker.gate('slow');
    worker.failing.add('bad');
    const solver = new Solver(db, worker);
    const err = await solver.solve([slow, bad]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VertexError);
    expect((err as VertexError).vertex).toBe('RUN bad');
    expect((err as VertexError).tail).toEqual(['running bad']);
    expect(db.getCache('anything')).toBeUndefined();
  });

  it('cancellation by the caller rejects with the caller\'s reason', async () => {
    const v = exec('forever');
    worker.gate('forever');
    const controller = new AbortController();
    const solver = new Solver(db, worker);
    const p = solver.solve([v], { signal: controller.signal });
    await new Promise((r) => setTimeout(r, 10));
    controller.abort(new KilnError('CANCELLED', 'Interrupted', { exitCode: 130 }));
    await expect(p).rejects.toMatchObject({ code: 'CANCELLED', exitCode: 130 });
  });
});
