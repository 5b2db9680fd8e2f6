import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type TestRegistry, startRegistry, tempDocker } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

/**
 * The SIGKILL sweep: `kiln build`, `kiln push` and `kiln serve` each killed at chosen instants of
 * their work (KILN_CRASH_AT makes the process kill itself there, as `kill -9` would; the points
 * are `crashPoint()` calls in the code). After each kill the next command recovers the store,
 * `kiln store verify` finds no problem, nothing is left mounted or running, what was committed
 * before the kill still runs, and doing the same work again succeeds. One store per group.
 */

/** Twenty points: ten in a local build, three in a push, seven in a build service. */
const BUILD_POINTS = ['checksum', 'run', 'blob-write', 'blob-rename', 'snapshot', 'index-commit', 'image-commit', 'tag-commit', 'layer-unpack', 'gc'] as const;
const PUSH_POINTS = ['push-blob', 'push-manifest', 'push-tag'] as const;
/** `cached-export` is `image-commit` reached by a build whose steps are all cached: its export. */
const SERVE_POINTS = ['context-upload', 'run', 'blob-rename', 'snapshot', 'index-commit', 'tag-commit', 'cached-export'] as const;

const KILLED = 128;

const stepsCached = (log: string) => (log.match(/^#\d+ CACHED$/gm) ?? []).length;

/** The store is whole: verify is clean, and no mount, container or half-written file remains. */
async function expectRecovered(root: string): Promise<void> {
  const verify = await kiln(root, ['store', 'verify']);
  expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  expect(verify.stdout).toContain('no problems');
  expect(mountsUnder(root)).toEqual([]);
  expect(kilnContainers(root)).toEqual([]);
  expect(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
  expect(readdirSync(join(root, 'tmp'))).toEqual([]);
}

async function expectRuns(root: string, ref: string, path: string, content: string): Promise<void> {
  const run = await kiln(root, ['run', '--rm', ref, 'cat', path]);
  expect(run.code, run.stderr).toBe(0);
  expect(run.stdout).toBe(content);
}

/** A context of its own for each point, so the checksum, the COPY and the RUN are new work. */
function context(work: string, name: string, dockerfile: string): string {
  const dir = join(work, `ctx-${name}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'data.txt'), `${name}\n`);
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  return dir;
}

const stepsFor = (name: string) => `FROM test/base:1\nCOPY data.txt /data.txt\nRUN echo started && echo ${name} > /out && head -c 200000 /dev/urandom > /noise\n`;

describe('SIGKILL sweep: kiln build', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-sweep-build-')];
    const ok = await kiln(store.root, ['build', '-q', '-t', 'sweep/committed:1', context(work.path, 'committed', stepsFor('committed'))]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  afterAll(async () => {
    await store?.cleanup();
    await work?.cleanup();
  });

  for (const point of BUILD_POINTS) {
    it(`killed at "${point}": the store recovers and the work redone succeeds`, async () => {
      const root = store.root;
      let args: string[];
      let check: () => Promise<void>;
      if (point === 'layer-unpack') {
        const tar = join(work.path, 'layer.tar');
        const src = join(work.path, 'layer-src');
        mkdirSync(join(src, 'etc'), { recursive: true });
        for (let i = 0; i < 20; i++) writeFileSync(join(src, 'etc', `f${i}`), `${i}\n`);
        execFileSync('tar', ['-C', src, '-cf', tar, '.']);
        args = ['import', tar, 'sweep/imported:1'];
        check = async () => {
          const r = await kiln(root, ['inspect', '-f', '{{len .RootFS.Layers}}', 'sweep/imported:1']);
          expect(r.stdout.trim()).toBe('1');
        };
      } else if (point === 'gc') {
        args = ['prune', '-a', '-f'];
        check = async () => {
          const du = await kiln(root, ['du']);
          expect(du.code, du.stderr).toBe(0);
        };
      } else {
        const ctx = context(work.path, point, stepsFor(point));
        const tags = ['-t', `sweep/${point}:a`, '-t', `sweep/${point}:b`];
        args = ['build', '--progress', 'plain', ...tags, ctx];
        check = async () => {
          for (const t of ['a', 'b']) await expectRuns(root, `sweep/${point}:${t}`, '/out', `${point}\n`);
        };
      }
      const dead = await kiln(root, args, { env: { KILN_CRASH_AT: point } });
      expect(dead.code, dead.stderr).toBe(KILLED);
      await expectRecovered(root);
      if (point === 'tag-commit') {
        // The tags move together or not at all.
        for (const t of ['a', 'b']) expect((await kiln(root, ['inspect', `sweep/${point}:${t}`])).code).toBe(1);
      }
      await expectRuns(root, 'sweep/committed:1', '/out', 'committed\n');
      const again = await kiln(root, args);
      expect(again.code, again.stderr).toBe(0);
      await check();
      await expectRecovered(root);
    });
  }
});

describe('SIGKILL sweep: kiln push', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let reg: TestRegistry;
  let docker: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;
  let ctx: string;
  let image: string;

  /** What skopeo, a client of its own, reads from the registry: the manifest digest. */
  const remoteDigest = (ref: string) =>
    (JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' })) as { Digest: string }).Digest;
  const remoteMissing = (ref: string) => {
    expect(() => execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${ref}`], { stdio: 'pipe' })).toThrow(/manifest unknown|not found/i);
  };

  beforeAll(async () => {
    work = tempDir('kiln-sweep-push-');
    docker = tempDocker();
    env = { DOCKER_CONFIG: docker.dir, KILN_REGISTRY_RETRY_MS: '10' };
    [reg, store] = await Promise.all([startRegistry(), storeWithBase()]);
    ctx = context(work.path, 'push', stepsFor('pushed'));
    const r = await kiln(store.root, ['build', '-q', '-t', `${reg.host}/sweep/app:1`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    image = r.stdout.trim();
  });

  afterAll(async () => {
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
    docker?.cleanup();
  });

  for (const point of PUSH_POINTS) {
    it(`killed at "${point}": the store recovers and the push redone leaves a valid manifest`, async () => {
      const root = store.root;
      const refs = point === 'push-tag' ? [`${reg.host}/sweep/app:t1`, `${reg.host}/sweep/app:t2`] : [`${reg.host}/sweep/app:${point}`];
      // A push of several names at once is `build --push`; its steps are all cached here.
      const args = point === 'push-tag' ? ['build', '--push', ...refs.flatMap((r) => ['-t', r]), ctx] : ['push', refs[0]!];
      if (point !== 'push-tag') expect((await kiln(root, ['tag', image, refs[0]!])).code).toBe(0);
      const dead = await kiln(root, args, { env: { ...env, KILN_CRASH_AT: point } });
      expect(dead.code, dead.stderr).toBe(KILLED);
      await expectRecovered(root);
      await expectRuns(root, `${reg.host}/sweep/app:1`, '/out', 'pushed\n');
      // Killed before its manifest, a name is absent from the registry; after, it is whole.
      if (point === 'push-tag') remoteDigest(refs[0]!);
      remoteMissing(refs.at(-1)!);
      const again = await kiln(root, args, { env });
      expect(again.code, again.stderr).toBe(0);
      const manifest = (await kiln(root, ['inspect', '-f', '{{json .Descriptor}}', refs[0]!])).stdout;
      const digest = (JSON.parse(manifest) as { digest: string }).digest;
      for (const r of refs) expect(remoteDigest(r)).toBe(digest);
      // skopeo copies every blob the manifest names, checking each digest.
      const out = join(work.path, `pulled-${point}`);
      execFileSync('skopeo', ['copy', '--src-tls-verify=false', `docker://${refs.at(-1)!}`, `oci:${out}:x`], { stdio: 'pipe' });
      await expectRecovered(root);
    });
  }
});

describe('SIGKILL sweep: kiln serve', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let socket: string;

  const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${socket}`, ...args], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-sweep-serve-')];
    socket = join(work.path, 'kiln.sock');
    served = await startServe(store.root, socket);
    const ok = await remote(['build', '-q', '-t', 'sweep/committed:1', context(work.path, 'committed', stepsFor('committed'))]);
    expect(ok.code, ok.stderr).toBe(0);
    await served.stop();
    served = undefined;
  });

  afterAll(async () => {
    await served?.crash();
    await store?.cleanup();
    await work?.cleanup();
  });

  for (const point of SERVE_POINTS) {
    it(`a server killed at "${point}": restarted, it recovers and the build redone succeeds`, async () => {
      // A server a failed case left behind would hold the socket.
      await served?.crash();
      const root = store.root;
      const cached = point === 'cached-export';
      const name = cached ? 'committed' : point;
      const ctx = cached ? join(work.path, 'ctx-committed') : context(work.path, point, stepsFor(point));
      // New names, so that the export of the cached build writes a new image record.
      const args = ['build', '--progress', 'plain', '--label', `sweep=${point}`, '-t', `sweep/${point}:a`, '-t', `sweep/${point}:b`, ctx];
      served = await startServe(root, socket, [], { env: { KILN_CRASH_AT: cached ? 'image-commit' : point } });
      const dead = await remote(args);
      expect(dead.code).not.toBe(0);
      expect(await served.exit()).toBe('SIGKILL');
      served = undefined;
      await expectRecovered(root);
      await expectRuns(root, 'sweep/committed:1', '/out', 'committed\n');
      served = await startServe(root, socket);
      const again = await remote(args);
      expect(again.code, again.stderr).toBe(0);
      for (const t of ['a', 'b']) await expectRuns(root, `sweep/${point}:${t}`, '/out', `${name}\n`);
      if (cached) expect(stepsCached(again.stderr)).toBe(2);
      await served.stop();
      served = undefined;
      await expectRecovered(root);
    });
  }
});
