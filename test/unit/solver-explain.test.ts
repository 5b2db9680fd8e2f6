import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreDb } from '../../cache/db.js';
import { digestOf, parseDigest } from '../../cache/digest.js';
import { explainMiss, ExplainCollector, stepIdentities, summarizeReasons } from '../../solver/explain.js';
import { vertex, type ExecOp, type Vertex } from '../../solver/graph.js';
import type { ProgressEvent } from '../../solver/progress.js';
import { Solver } from '../../solver/solver.js';
import type { ContentKey, SolvedVertex, Worker } from '../../solver/worker.js';
import { tempDir } from '../helpers/kiln.js';

/** A worker whose context files are a map the test edits between builds. */
class FakeWorker implements Worker {
  files: Record<string, string> = { 'app/main.go': 'v1', 'go.mod': 'mod' };
  runs: string[] = [];

  async resolveImage() {
    return { snapshot: { layers: [] }, created: '2020-01-01T00:00:00.000Z' };
  }

  async contentKey(v: Vertex): Promise<ContentKey | undefined> {
    if (v.op.kind !== 'file') return undefined;
    const files = { ...this.files };
    return { key: digestOf(JSON.stringify(files)), files: () => files };
  }

  async run(v: Vertex, _inputs: readonly SolvedVertex[]) {
    this.runs.push(v.meta.name);
    const diffId = digestOf(`${v.digest}${JSON.stringify(this.files)}`);
    return { diffId, blob: diffId, blobSize: 1, mediaType: 'application/vnd.oci.image.layer.v1.tar' };
  }
}

const M1 = parseDigest(`sha256:${'1'.repeat(64)}`);
const M2 = parseDigest(`sha256:${'2'.repeat(64)}`);

function graph(o: { manifest?: typeof M1; version?: string; cwd?: string } = {}) {
  const base = vertex({ kind: 'image', ref: 'base:1', manifest: o.manifest ?? M1, platform: { os: 'linux', architecture: 'amd64' } }, [], { name: '[1/3] FROM base:1', hidden: true });
  const ctx = vertex({ kind: 'context', name: 'context', source: '/ctx', exclude: [] }, [], { name: 'context' });
  const copy = vertex({ kind: 'file', base: 0, actions: [{ action: 'copy', from: 1, src: ['.'], dest: '/src', cwd: '/' }] }, [base, ctx], { name: '[2/3] COPY . /src', stage: 'build' });
  const op: ExecOp = { kind: 'exec', root: 0, args: ['sh', '-c', 'make'], env: [`VERSION=${o.version ?? '1'}`, 'PATH=/bin'], cwd: o.cwd ?? '/src', user: 'root', network: 'default' };
  const make = vertex(op, [copy], { name: '[3/3] RUN make', stage: 'build' });
  return { base, copy, make };
}

describe('cache-miss explanations', () => {
  let t: ReturnType<typeof tempDir>;
  let db: StoreDb;
  let worker: FakeWorker;
  let solver: Solver;
  beforeEach(() => {
    t = tempDir();
    db = new StoreDb(`${t.path}/kiln.db`);
    worker = new FakeWorker();
    solver = new Solver(db, worker);
  });
  afterEach(async () => {
    db.close();
    await t.cleanup();
  });

  async function build(g: ReturnType<typeof graph>, o: { buildArgs?: string[]; noCacheFilter?: string[] } = {}) {
    const events: ProgressEvent[] = [];
    // Layers must be recorded for records to count as hits (the fake worker makes none).
    const results = await solver.solve([g.make], { progress: (e) => events.push(e), scope: 'proj', buildArgs: o.buildArgs, noCacheFilter: o.noCacheFilter });
    for (const r of results.values()) if (r.layer) db.putLayer(r.layer);
    const misses = events.flatMap((e) => (e.type === 'vertex.miss' ? [[e.id, e.reason] as const] : []));
    return { events, misses: Object.fromEntries(misses) as Record<number, string> };
  }

  it('says nothing on a first build or a full hit', async () => {
    expect((await build(graph())).misses).toEqual({});
    const again = await build(graph());
    expect(again.misses).toEqual({});
    expect(again.events.filter((e) => e.type === 'vertex.cached')).toHaveLength(2);
  });

  it('names the changed file, and the step that depends on it names its input step', async () => {
    await build(graph());
    worker.files = { ...worker.files, 'app/main.go': 'v2', 'app/new.go': 'x' };
    const { misses } = await build(graph());
    expect(Object.values(misses)).toEqual(['file "app/main.go" changed, file "app/new.go" added', expect.stringMatching(/^input step #\d+ changed$/)]);
  });

  it('names a changed build arg, and the base image with both digests', async () => {
    await build(graph());
    expect(Object.values((await build(graph({ version: '2' }), { buildArgs: ['VERSION'] })).misses)).toEqual(['build arg "VERSION" changed']);
    expect(Object.values((await build(graph({ version: '2', manifest: M2 }), { buildArgs: ['VERSION'] })).misses)).toEqual([
      `base image changed (${M1} → ${M2})`,
      expect.stringMatching(/^input step #\d+ changed$/),
    ]);
  });

  it('compares with the latest version, including one taken from the cache', async () => {
    await build(graph({ cwd: '/a' }));
    await build(graph({ cwd: '/b' }));
    // Back to /a: a cache hit, which becomes the version the next miss is compared with.
    expect((await build(graph({ cwd: '/a' }))).misses).toEqual({});
    expect(Object.values((await build(graph({ cwd: '/c' }))).misses)).toEqual(['working directory changed ("/a" → "/c")']);
  });

  it('--no-cache-filter reruns only the named stage\'s steps', async () => {
    await build(graph());
    worker.runs = [];
    await build(graph(), { noCacheFilter: ['other'] });
    expect(worker.runs).toEqual([]);
    await build(graph(), { noCacheFilter: ['build'] });
    expect(worker.runs).toEqual(['[2/3] COPY . /src', '[3/3] RUN make']);
  });

  it('identities ignore the step counter and tell repeated instructions apart', () => {
    const a = graph().make;
    const renamed = vertex(a.op, a.inputs, { name: '[4/9] RUN make', stage: 'build' });
    expect(stepIdentities([a], 's').get(a.digest)).toBe(stepIdentities([renamed], 's').get(renamed.digest));
    expect(stepIdentities([a], 's').get(a.digest)).not.toBe(stepIdentities([a], 'other').get(a.digest));
    const twice = vertex({ ...(a.op as ExecOp), cwd: '/x' }, [a], { name: '[4/4] RUN make', stage: 'build' });
    const ids = stepIdentities([twice], 's');
    expect(ids.get(twice.digest)).not.toBe(ids.get(a.digest));
  });

  it('explains each kind of difference and sums up long lists', () => {
    const g = graph();
    const before = { op: g.make.op, inputs: [{ key: 'k1', kind: 'file' as const }], content: null };
    const op = { ...(g.make.op as ExecOp), args: ['sh', '-c', 'make all'], user: 'dev', env: ['PATH=/bin', 'NEW=1'] };
    const reasons = explainMiss(before, { op, inputs: [{ key: 'k1', kind: 'file' }], content: null }, g.make, { stepNumber: () => 4, buildArgs: new Set() });
    expect(reasons).toEqual(['command changed', 'environment variable "VERSION" removed', 'environment variable "NEW" added', 'user changed ("root" → "dev")']);
    expect(summarizeReasons(reasons)).toBe('command changed, environment variable "VERSION" removed, environment variable "NEW" added and 1 more');
    const same = { op: g.make.op, inputs: [{ key: 'k1', kind: 'file' as const }], content: null };
    const explain = (a: number | undefined, b: number | undefined) => explainMiss({ ...same, sourceDateEpoch: a }, { ...same, sourceDateEpoch: b }, g.make, { stepNumber: () => 4, buildArgs: new Set() });
    expect(explain(5, undefined)).toEqual(['SOURCE_DATE_EPOCH changed (5 → unset)']);
    expect(explain(undefined, 7)).toEqual(['SOURCE_DATE_EPOCH changed (unset → 7)']);
    expect(explain(7, 7)).toEqual(['cache key changed']);
  });

  it('the --explain report lists every step with its outcome and reasons', () => {
    const c = new ExplainCollector();
    c.handle({ type: 'vertex.start', id: 3, name: '[1/3] FROM base', time: 0, kind: 'image' });
    c.handle({ type: 'vertex.start', id: 4, name: '[2/3] COPY . /src', time: 0, kind: 'file' });
    c.handle({ type: 'vertex.cached', id: 4, name: '[2/3] COPY . /src', time: 0 });
    c.handle({ type: 'vertex.start', id: 5, name: '[3/3] RUN make', time: 0, kind: 'exec' });
    c.handle({ type: 'vertex.miss', id: 5, reason: 'x', reasons: ['build arg "V" changed', 'user changed'], time: 0 });
    c.handle({ type: 'vertex.start', id: 6, name: '[3/3] RUN test', time: 0, kind: 'exec' });
    expect(c.format()).toBe(
      'Cache report:\n#4 [2/3] COPY . /src: cached\n#5 [3/3] RUN make: ran\n    - build arg "V" changed\n    - user changed\n#6 [3/3] RUN test: ran (no earlier record)\n1 cached, 2 ran\n',
    );
  });
});
