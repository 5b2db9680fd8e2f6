// Runs fuzz cases against the compiled frontend (dist/) in a worker thread, so that the parent
// can bound every case: a case that loops forever, synchronously or not, stops advancing the
// shared progress counter and the parent terminates this thread.
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';

const load = (rel) => import(pathToFileURL(`${workerData.dist}/${rel}`).href);
const { compileDockerfile } = await load('frontend/dockerfile/compile.js');
const { parseIgnoreFile, createIgnoreMatcher } = await load('frontend/ignore/index.js');
const { expandWord, expandWords } = await load('frontend/shell/index.js');
const { KilnError } = await load('cache/errors.js');
const { topoSort, canonicalJson } = await load('solver/graph.js');

const progress = new Int32Array(workerData.progress);
// Long names and deep paths too: a matcher that backtracks takes exponential time on them.
const IGNORE_PROBES = ['a', 'a/b', 'keep.tmp', 'x.tmp', 'docs/README.md', 'node_modules/x', '..', '../outside', 'build', '.', 'ab.log', '*',
  'a'.repeat(4000), `${'ab'.repeat(1000)}.c`, `${'a/'.repeat(300)}x.tmp`];

function imageConfig(config, architecture = 'amd64') {
  return { architecture, os: 'linux', config, rootfs: { type: 'layers', diff_ids: [] }, history: [] };
}

/** Base images the cases may name; ONBUILD triggers come from the case, as a hostile image's would. */
function resolverFor(c) {
  return {
    async resolve(ref) {
      if (ref.startsWith('missing')) throw new KilnError('IMAGE_NOT_FOUND', `Image "${ref}" not found in the store`, { hint: 'Import or pull it first' });
      const onbuild = ref.startsWith('onbuild') ? c.triggers : undefined;
      const arch = ref.startsWith('arm') ? 'arm64' : 'amd64';
      const hex = Buffer.from(ref).toString('hex').padEnd(64, '0').slice(0, 64).replace(/[^0-9a-f]/g, '0');
      return { ref, manifest: `sha256:${hex}`, config: imageConfig({ Env: ['PATH=/usr/bin:/bin'], Cmd: ['sh'], ...(onbuild ? { OnBuild: onbuild } : {}) }, arch) };
    },
  };
}

function describe(err) {
  if (err instanceof Error) {
    const frames = (err.stack ?? '').split('\n').filter((l) => l.startsWith('    at ')).slice(0, 5);
    return { name: err.name, message: err.message.slice(0, 300), stack: frames.join('\n') };
  }
  return { name: typeof err, message: String(err).slice(0, 300), stack: '' };
}

async function runDockerfile(c) {
  let exclude = [];
  if (c.ignore !== undefined) {
    try {
      exclude = parseIgnoreFile(c.ignore, { file: '.dockerignore' });
      const m = createIgnoreMatcher(exclude);
      for (const p of IGNORE_PROBES) {
        m.matches(p);
        m.canSkipDirectory(p);
      }
    } catch (err) {
      if (!(err instanceof KilnError)) throw err;
      // A bad pattern names its line of the file, as a Dockerfile error does.
      const loc = err.location;
      const lines = c.ignore.split('\n').length;
      if (loc?.file === '.dockerignore' && Number.isInteger(loc.line) && loc.line >= 1 && loc.line <= lines) return { kind: 'ignore-error', code: err.code };
      return { kind: 'unlocated', code: err.code, error: describe(err) };
    }
  }
  try {
    const def = await compileDockerfile({
      dockerfile: c.dockerfile,
      file: 'Dockerfile',
      buildArgs: c.buildArgs,
      target: c.target,
      check: c.check,
      context: { name: 'context', source: '/ctx', exclude },
      platform: { os: 'linux', architecture: 'amd64' },
      resolver: resolverFor(c),
    });
    // The graph must be whole: every vertex reachable, its definition serialisable.
    const vertices = def.root ? topoSort([def.root]) : [];
    for (const v of vertices) canonicalJson(v.op);
    JSON.stringify(def.image);
    return { kind: 'graph', vertices: vertices.length };
  } catch (err) {
    if (!(err instanceof KilnError)) return { kind: 'crash', error: describe(err) };
    const loc = err.location;
    const lines = c.dockerfile.split('\n').length;
    const located = loc !== undefined && loc.file === 'Dockerfile' && Number.isInteger(loc.line) && loc.line >= 1 && loc.line <= lines + 1;
    // A --target is given on the command line, not in the file: it has nothing to point at.
    if (located || err.code === 'TARGET_UNKNOWN') return { kind: 'error', code: err.code };
    return { kind: 'unlocated', code: err.code, error: describe(err) };
  }
}

function runWord(c) {
  const env = new Map(Object.entries(c.env));
  const lookup = (n) => env.get(n);
  try {
    expandWord(c.word, lookup, { escape: c.escape });
    expandWords(c.word, lookup, { escape: c.escape });
    return { kind: 'graph', vertices: 0 };
  } catch (err) {
    if (err instanceof KilnError) return { kind: 'error', code: err.code };
    return { kind: 'crash', error: describe(err) };
  }
}

parentPort.on('message', async (batch) => {
  const results = [];
  for (const c of batch) {
    Atomics.store(progress, 0, c.id);
    const started = performance.now();
    let outcome;
    try {
      outcome = c.word !== undefined ? runWord(c) : await runDockerfile(c);
    } catch (err) {
      outcome = { kind: 'crash', error: describe(err) };
    }
    results.push({ id: c.id, ms: performance.now() - started, ...outcome });
  }
  parentPort.postMessage(results);
});
parentPort.postMessage('ready');
