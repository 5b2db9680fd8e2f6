import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine.js';
import { getImage } from '../../src/image/local.js';
import { createSession } from '../../src/build/session.js';
import { vertex, type ExecMount, type ExecOp, type Vertex } from '../../solver/graph.js';
import type { ProgressEvent } from '../../solver/progress.js';
import type { Session } from '../../solver/worker.js';
import { kiln, mountsUnder, stepNumber, storeAndContext, storeWithBase, tempDir } from '../helpers/kiln.js';

/** RUN steps built as graphs directly, run through the real worker: runc on overlayfs. */
describe('RUN mounts', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let engine: Engine;
  let base: Vertex;
  let work: ReturnType<typeof tempDir>;
  let ctxDir: string;
  let context: Vertex;

  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
    engine = await Engine.open({ root });
    const img = await getImage(engine.store, 'test/base:1');
    base = vertex({ kind: 'image', ref: 'test/base:1', manifest: img.manifestDigest, platform: { os: 'linux', architecture: 'amd64' } }, [], {
      name: '[1/2] FROM test/base:1',
      hidden: true,
    });
    work = tempDir('kiln-mounts-');
    ctxDir = join(work.path, 'ctx');
    mkdirSync(join(ctxDir, 'src'), { recursive: true });
    writeFileSync(join(ctxDir, 'src', 'hello.txt'), 'hello from the context\n');
    context = vertex({ kind: 'context', name: 'context', source: ctxDir, exclude: [] }, [], { name: 'context' });
  });

  afterEach(() => {
    // Nothing a step set up may outlive it: no mounts under the store, no container of ours.
    expect(mountsUnder(root)).toEqual([]);
    expect(ourContainers(root)).toEqual([]);
  });

  afterAll(async () => {
    await engine?.close();
    await work?.cleanup();
    await cleanup();
  });

  /** Solves one RUN over the base (plus extra inputs); returns its output and layer files. */
  async function run(script: string, o: { mounts?: ExecMount[]; inputs?: Vertex[]; network?: ExecOp['network']; security?: ExecOp['security']; session?: Session; noCache?: boolean } = {}) {
    const op: ExecOp = {
      kind: 'exec',
      root: 0,
      args: ['/bin/sh', '-c', script],
      env: ['PATH=/bin'],
      cwd: '/',
      user: 'root',
      network: o.network ?? 'default',
      mounts: o.mounts,
      security: o.security,
    };
    const v = vertex(op, [base, ...(o.inputs ?? [])], { name: `[2/2] RUN ${script}`, stage: 's' });
    const events: ProgressEvent[] = [];
    const results = await engine.solver.solve([v], { noCache: o.noCache ?? true, progress: (e) => events.push(e), session: o.session });
    const solved = results.get(v.digest)!;
    const output = events.flatMap((e) => (e.type === 'vertex.log' ? [e.data] : [])).join('');
    const layerFiles = solved.layer ? listTree(engine.store.layerFs(solved.layer.diffId)) : [];
    return { output, layerFiles, events, key: solved.key };
  }

  it('a cache mount persists between builds and stays out of the layer', async () => {
    const mounts: ExecMount[] = [{ type: 'cache', target: '/var/cache/t', id: 'persist', sharing: 'shared', mode: 0o755, uid: 0, gid: 0 }];
    const first = await run('echo run >> /var/cache/t/runs; wc -l < /var/cache/t/runs', { mounts });
    expect(first.output.trim()).toBe('1');
    const second = await run('echo run >> /var/cache/t/runs; wc -l < /var/cache/t/runs; touch /made', { mounts });
    expect(second.output.trim()).toBe('2');
    // The mount point the runtime made for the run is gone from the layer, and so is the cache.
    expect(second.layerFiles).toEqual(['made']);
    expect(engine.store.db.allCacheMounts().map((m) => m.id)).toContain('persist');
  });

  it('a cache mount takes mode, owner and a seed from another input', async () => {
    const mounts: ExecMount[] = [{ type: 'cache', target: '/c', id: 'seeded', sharing: 'locked', mode: 0o750, uid: 1001, gid: 1001, input: 1, source: 'src' }];
    const r = await run('stat -c "%a %u:%g" /c; cat /c/hello.txt', { mounts, inputs: [context] });
    expect(r.output).toBe('750 1001:1001\nhello from the context\n');
  });

  it('private cache mounts in use at once are different directories; locked ones take turns', async () => {
    const cache = (sharing: 'private' | 'locked', id: string): ExecMount[] => [{ type: 'cache', target: '/c', id, sharing, mode: 0o755, uid: 0, gid: 0 }];
    const [a, b] = await Promise.all([
      run('echo a > /c/who; sleep 0.3; cat /c/who', { mounts: cache('private', 'priv') }),
      run('echo b > /c/who; sleep 0.3; cat /c/who', { mounts: cache('private', 'priv') }),
    ]);
    expect([a.output, b.output]).toEqual(['a\n', 'b\n']);
    const [c, d] = await Promise.all([
      run('echo c >> /c/log; sleep 0.3; echo c >> /c/log', { mounts: cache('locked', 'lock') }),
      run('echo d >> /c/log; sleep 0.3; echo d >> /c/log', { mounts: cache('locked', 'lock') }),
    ]);
    expect(c.output + d.output).toBe('');
    const log = await run('cat /c/log', { mounts: cache('locked', 'lock') });
    expect(['c\nc\nd\nd\n', 'd\nd\nc\nc\n']).toContain(log.output);
  });

  it('a bind mount shows the context read-only, or read-write with the writes thrown away', async () => {
    const ro = await run('cat /m/hello.txt; touch /m/x 2>/dev/null || echo read-only', {
      mounts: [{ type: 'bind', target: '/m', input: 1, source: 'src', readwrite: false }],
      inputs: [context],
    });
    expect(ro.output).toBe('hello from the context\nread-only\n');
    expect(ro.layerFiles).toEqual([]);
    const rw = await run('echo changed > /m/hello.txt; cat /m/hello.txt', {
      mounts: [{ type: 'bind', target: '/m', input: 1, source: 'src', readwrite: true }],
      inputs: [context],
    });
    expect(rw.output).toBe('changed\n');
    expect(rw.layerFiles).toEqual([]);
    expect(readFileSync(join(ctxDir, 'src', 'hello.txt'), 'utf8')).toBe('hello from the context\n');
  });

  it('a bind mount from another step shows that step\'s files, and its key follows the content', async () => {
    const producer = vertex(
      { kind: 'exec', root: 0, args: ['/bin/sh', '-c', 'mkdir /out && echo built > /out/f'], env: ['PATH=/bin'], cwd: '/', user: 'root', network: 'default' },
      [base],
      { name: '[build 2/2] RUN make', stage: 'build' },
    );
    const r = await run('cat /from/f', { mounts: [{ type: 'bind', target: '/from', input: 1, source: '/out', readwrite: false }], inputs: [producer] });
    expect(r.output).toBe('built\n');
    const before = await run('cat /m/hello.txt', { mounts: [{ type: 'bind', target: '/m', input: 1, source: 'src', readwrite: false }], inputs: [context] });
    writeFileSync(join(ctxDir, 'src', 'hello.txt'), 'hello again\n');
    try {
      const after = await run('cat /m/hello.txt', { mounts: [{ type: 'bind', target: '/m', input: 1, source: 'src', readwrite: false }], inputs: [context] });
      expect(after.key).not.toBe(before.key);
    } finally {
      writeFileSync(join(ctxDir, 'src', 'hello.txt'), 'hello from the context\n');
    }
  });

  it('a tmpfs mount is a tmpfs of the given size, and nothing written there is kept', async () => {
    const r = await run('grep " /scratch " /proc/mounts | cut -d" " -f3; df -k /scratch | tail -1 | awk "{print \\$2}"; echo x > /scratch/f', {
      mounts: [{ type: 'tmpfs', target: '/scratch', size: 4 * 1024 * 1024 }],
    });
    expect(r.output).toBe('tmpfs\n4096\n');
    expect(r.layerFiles).toEqual([]);
  });

  describe('secrets', () => {
    const value = 'correct-horse-battery-staple-4242';
    const secretFile = () => join(work.path, 'secret.txt');

    it('are mounted as files or variables and appear in no layer, key, record or progress', async () => {
      writeFileSync(secretFile(), value);
      const session = await createSession({ secrets: [{ id: 'tok', file: secretFile() }, { id: 'envtok', env: 'KILN_TEST_SECRET' }] }, { KILN_TEST_SECRET: value });
      const r = await run(
        'stat -c "%a %u" /run/secrets/tok; test "$(cat /run/secrets/tok)" = "$(cat /etc/tok)" && echo file-ok; test "$TOKEN" = "$(cat /run/secrets/tok)" && echo env-ok; echo done > /after',
        {
          mounts: [
            { type: 'secret', id: 'tok', required: true, mode: 0o400, uid: 1001, gid: 0 },
            { type: 'secret', id: 'tok', target: '/etc/tok', required: true, mode: 0o444, uid: 0, gid: 0 },
            { type: 'secret', id: 'envtok', env: 'TOKEN', required: true, mode: 0o400, uid: 0, gid: 0 },
          ],
          session,
        },
      );
      expect(r.output).toBe('400 1001\nfile-ok\nenv-ok\n');
      // The layer has the step's own file and none of the mount points made for the secrets.
      expect(r.layerFiles).toEqual(['after']);
      expect(JSON.stringify(r.events)).not.toContain(value);
      expect(r.key).not.toContain(value);
      // Nothing in the store holds it: not a blob, a layer, the index (keys, records) or a temp file.
      expect(grepTree(root, value)).toEqual([]);
    });

    it('a required secret that was not given fails the step; an optional one is skipped', async () => {
      await expect(run('true', { mounts: [{ type: 'secret', id: 'nope', required: true, mode: 0o400, uid: 0, gid: 0 }] })).rejects.toMatchObject({
        code: 'SECRET_MISSING',
        message: 'Secret "nope" was not given to the build',
      });
      const r = await run('test -e /run/secrets/nope || echo absent', { mounts: [{ type: 'secret', id: 'nope', required: false, mode: 0o400, uid: 0, gid: 0 }] });
      expect(r.output).toBe('absent\n');
    });
  });

  it('an ssh mount forwards the agent socket and sets SSH_AUTH_SOCK', async () => {
    const sock = join(work.path, 'agent.sock');
    const server: Server = createServer((c) => c.end('agent says hi\n'));
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const session = await createSession({ ssh: [{ id: 'default', socket: sock }] });
      const r = await run('test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK"', { mounts: [{ type: 'ssh', id: 'default', required: true, mode: 0o600, uid: 0, gid: 0 }], session });
      expect(r.output).toBe('/run/buildkit/ssh_agent.0\n');
      expect(r.layerFiles).toEqual([]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('--network=none has only a loopback interface, and it is up', async () => {
    const r = await run('ls /sys/class/net; cat /sys/class/net/lo/flags', { network: 'none' });
    expect(r.output).toBe('lo\n0x9\n');
    const host = await run('ls /sys/class/net | wc -l', { network: 'default' });
    expect(Number(host.output.trim())).toBeGreaterThan(1);
  });

  it('--security=insecure needs the entitlement, and then runs with every capability', async () => {
    await expect(run('true', { security: 'insecure' })).rejects.toMatchObject({ code: 'ENTITLEMENT_MISSING' });
    const session = await createSession({ allow: ['security.insecure'] });
    const r = await run('grep CapEff /proc/self/status', { security: 'insecure', session });
    const own = /^CapBnd:\s*(\w+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1];
    expect(r.output).toBe(`CapEff:\t${own}\n`);
    const sandbox = await run('grep CapEff /proc/self/status');
    expect(sandbox.output).toMatch(/^CapEff:\s+00000000a80425fb\n$/);
  });
});

/** Real builds through bin/kiln: a bind mount of the context as .dockerignore leaves it. */
describe('RUN --mount=type=bind of the build context', () => {
  let root: string, ctx: string, cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-bindctx-'));
    mkdirSync(join(ctx, 'app'), { recursive: true });
    mkdirSync(join(ctx, 'build'), { recursive: true });
    writeFileSync(join(ctx, 'app', 'main.txt'), 'main 1\n');
    writeFileSync(join(ctx, 'app', 'debug.log'), 'noise 1\n');
    writeFileSync(join(ctx, 'build', 'out.bin'), 'old output\n');
    writeFileSync(join(ctx, 'secret.txt'), 'do not ship\n');
    writeFileSync(join(ctx, '.dockerignore'), 'secret.txt\napp/*.log\nbuild\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM test/base:1',
        'RUN --mount=target=/ctx find /ctx | sort; cat /ctx/app/main.txt',
        'RUN --mount=source=app,target=/a,rw echo scratch > /a/new && ls /a && cat /a/main.txt',
        '',
      ].join('\n'),
    );
  });

  afterEach(() => {
    expect(mountsUnder(root)).toEqual([]);
    expect(ourContainers(root)).toEqual([]);
  });

  afterAll(() => cleanup?.());

  /** Builds the context; returns each RUN's output lines and whether it was cached. */
  async function build() {
    const r = await kiln(root, ['build', '--progress', 'plain', ctx]);
    expect(r.stderr).not.toMatch(/ERROR/);
    expect(r.code).toBe(0);
    const step = (pattern: string) => {
      const n = stepNumber(r.stderr, pattern);
      expect(n).toBeDefined();
      const lines = r.stderr.split('\n');
      return {
        cached: lines.includes(`#${n} CACHED`),
        output: lines.flatMap((l) => {
          const m = new RegExp(`^#${n} \\d+\\.\\d+ (.*)$`).exec(l);
          return m ? [m[1]!] : [];
        }),
      };
    };
    return { whole: step('RUN --mount=target=/ctx'), sub: step('RUN --mount=source=app') };
  }

  it('shows only what .dockerignore leaves, and only those files are in the step\'s key', async () => {
    const first = await build();
    expect(first.whole.cached).toBe(false);
    expect(first.whole.output).toEqual(['/ctx', '/ctx/.dockerignore', '/ctx/Dockerfile', '/ctx/app', '/ctx/app/main.txt', 'main 1']);
    expect(first.sub.output).toEqual(['main.txt', 'new', 'main 1']);
    // Writes through the read-write mount went to a throwaway layer, never to the context.
    expect(existsSync(join(ctx, 'app', 'new'))).toBe(false);

    // Ignored files change: both steps stay cached.
    writeFileSync(join(ctx, 'secret.txt'), 'still not shipped\n');
    writeFileSync(join(ctx, 'app', 'debug.log'), 'noise 2\n');
    writeFileSync(join(ctx, 'build', 'out.bin'), 'new output\n');
    const ignored = await build();
    expect(ignored.whole.cached).toBe(true);
    expect(ignored.sub.cached).toBe(true);

    // A mounted file changes: both steps run again and see the new content.
    writeFileSync(join(ctx, 'app', 'main.txt'), 'main 2\n');
    const edited = await build();
    expect(edited.whole.cached).toBe(false);
    expect(edited.whole.output.at(-1)).toBe('main 2');
    expect(edited.sub.cached).toBe(false);
    expect(edited.sub.output).toEqual(['main.txt', 'new', 'main 2']);
    // The context itself is untouched: the view was made of links, and they are gone.
    expect(readFileSync(join(ctx, 'secret.txt'), 'utf8')).toBe('still not shipped\n');
    expect(readdirSync(join(root, 'mnt'))).toEqual([]);
  });
});

/** Files and directories under `dir`, relative, sorted. */
function listTree(dir: string, prefix = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    return e.isDirectory() ? [rel, ...listTree(join(dir, e.name), rel)] : [rel];
  }).sort();
}

/** Files under `dir` whose bytes contain `needle` (as `grep -rl` would say). */
function grepTree(dir: string, needle: string): string[] {
  try {
    return execFileSync('grep', ['-rlaF', needle, dir], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch (err) {
    // grep exits 1 when nothing matches: that is the answer we want.
    if ((err as { status?: number }).status === 1) return [];
    throw err;
  }
}

/** Containers whose bundle lives in this store (other test files run their own). */
function ourContainers(root: string): string[] {
  const list = JSON.parse(execFileSync('runc', ['list', '-f', 'json'], { encoding: 'utf8' }) || '[]') as { id: string; bundle: string }[] | null;
  return (list ?? []).filter((c) => c.bundle.startsWith(root)).map((c) => c.id);
}
