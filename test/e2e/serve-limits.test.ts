import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, type KilnResult, kilnContainers, mountsUnder, storeAndContext, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type Served, startServe } from './serve-helpers.js';

const MiB = 1024 ** 2;

function getJson<T>(socket: string, path: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: socket, path }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(JSON.parse(text) as T));
      })
      .on('error', reject);
  });
}

/** This process's cgroup directory in the v1 hierarchy of `controller` (where runc puts ours, relatively). */
function ownCgroupDir(controller: string): string {
  const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.split(':')[1]?.split(',').includes(controller));
  return join('/sys/fs/cgroup', controller, line!.split(':')[2]!);
}

/** Step cgroups (`kiln-ID/step`) that no running container owns: what a step must not leave. */
function leftoverCgroups(): string[] {
  const running = new Set((JSON.parse(execFileSync('runc', ['list', '--format', 'json'], { encoding: 'utf8' }) || '[]') ?? []).map((c: { id: string }) => c.id));
  return ['memory', 'pids', 'cpu'].flatMap((c) => {
    const dir = ownCgroupDir(c);
    return readdirSync(dir).filter((n) => n.startsWith('kiln-') && !running.has(n) && existsSync(join(dir, n, 'step'))).map((n) => join(dir, n));
  });
}

/** A client build whose progress can be watched while it runs. */
function startBuild(home: string, args: string[]): { output: () => string; done: Promise<KilnResult> } {
  const child = spawn(KILN, args, { env: { ...process.env, KILN_ROOT: join(home, 'no-store'), XDG_CACHE_HOME: join(home, 'cache') }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<KilnResult>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128, stdout: out, stderr: err });
    }),
  );
  return { output: () => err, done };
}

async function waitFor(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  for (const end = Date.now() + ms; !check(); ) {
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The files read back are cgroup v1's, as on this host (hybrid mode); under v2 alone the same
 * limits are memory.max, pids.max and cpu.weight.
 */
describe('kiln serve: cgroup limits of each RUN step', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let n = 0;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-limits-')];
    served = await startServe(store.root, join(work.path, 'kiln.sock'), ['--step-memory', '256m', '--step-pids', '64', '--step-cpu-shares', '256']);
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  const context = (dockerfile: string) => {
    const ctx = join(work.path, `ctx${n++}`);
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return ctx;
  };
  const buildArgs = (ctx: string) => ['--host', `unix://${served!.socket}`, 'build', '--progress', 'plain', '--no-cache', ctx];
  const build = (dockerfile: string) => startBuild(work.path, buildArgs(context(dockerfile))).done;

  it('says what it applies when it starts', () => {
    expect(served!.log()).toMatch(/^Limits of each RUN step: memory 256MiB, 64 processes, CPU weight 256$/m);
  });

  it('puts each step in a cgroup of its own that carries the limits', async () => {
    const step = startBuild(work.path, buildArgs(context('FROM test/base:1\nRUN echo started && sleep 3\n')));
    await waitFor('the step to start', () => /^#\d+ [\d.]+ started$/m.test(step.output()));
    const id = kilnContainers(store.root)[0]!;
    const pid = (JSON.parse(execFileSync('runc', ['state', id], { encoding: 'utf8' })) as { pid: number }).pid;
    const cgroupOf = (controller: string) => {
      const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1]?.split(',').includes(controller))!;
      return join('/sys/fs/cgroup', controller, line.split(':')[2]!);
    };
    expect(cgroupOf('memory')).toBe(join(ownCgroupDir('memory'), id, 'step'));
    expect(readFileSync(join(cgroupOf('memory'), 'memory.limit_in_bytes'), 'utf8').trim()).toBe(String(256 * MiB));
    if (existsSync(join(cgroupOf('memory'), 'memory.memsw.limit_in_bytes'))) {
      // No swap beyond the memory limit.
      expect(readFileSync(join(cgroupOf('memory'), 'memory.memsw.limit_in_bytes'), 'utf8').trim()).toBe(String(256 * MiB));
    }
    expect(readFileSync(join(cgroupOf('pids'), 'pids.max'), 'utf8').trim()).toBe('64');
    expect(readFileSync(join(cgroupOf('cpu'), 'cpu.shares'), 'utf8').trim()).toBe('256');
    const r = await step.done;
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(ownCgroupDir('memory'), id))).toBe(false);
    expect(existsSync(join(ownCgroupDir('pids'), id))).toBe(false);
  });

  it('holds a fork bomb to its process limit while another client builds and the server answers', async () => {
    // A classic bomb, then sleeps spawned until fork fails, kept for a while: busybox sh gives up
    // on a failed fork, so the spawning runs in a subshell whose exit frees the slot `sleep 4` takes.
    const bomb = startBuild(
      work.path,
      buildArgs(context(`FROM test/base:1\nRUN sh -c 'f(){ f|f& }; f' 2>/dev/null; (i=0; while sleep 60 & do i=$((i+1)); echo $i > /n; done) 2>/dev/null; read n < /n; echo "sleeps=$n"; sleep 4; exit 7\n`)),
    );
    await waitFor('the bomb to fill its cgroup', () => /^#\d+ [\d.]+ sleeps=\d+$/m.test(bomb.output()));
    const other = await build('FROM test/base:1\nRUN for i in $(seq 20); do sleep 0.1 & done; wait; echo other-done\n');
    expect(other.code, other.stderr).toBe(0);
    expect(other.stderr).toMatch(/^#\d+ [\d.]+ other-done$/m);
    const images = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'images']);
    expect(images.code, images.stderr).toBe(0);
    const r = await bomb.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/did not complete successfully: exit code 7/);
    // The shell, the subshell and the sleeps (and what is left of the bomb) share 64 pids; without
    // the limit the loop would run on to 4096, or to the host's pid_max.
    const sleeps = Number(/sleeps=(\d+)/.exec(r.stderr)![1]);
    expect(sleeps).toBeGreaterThan(0);
    expect(sleeps).toBeLessThanOrEqual(62);
  });

  it('kills a memory hog with an error naming the limit, and lets a step under it through', async () => {
    const hog = await build('FROM test/base:1\nRUN head -c 600m /dev/zero | tail\n');
    expect(hog.code).toBe(1);
    expect(hog.stderr).toContain('Process "/bin/sh -c head -c 600m /dev/zero | tail" exceeded the memory limit of 256MiB and was killed (exit code 137)');
    const fits = await build('FROM test/base:1\nRUN head -c 100m /dev/zero | tail | wc -c\n');
    expect(fits.code, fits.stderr).toBe(0);
    expect(fits.stderr).toMatch(/^#\d+ [\d.]+ 104857600$/m);
    expect(fits.stderr).not.toContain('memory limit');
  });

  it('kills a memory hog of kiln run through the server the same way, with the exit code docker gives', async () => {
    const r = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'run', 'test/base:1', 'sh', '-c', 'head -c 600m /dev/zero | tail']);
    expect(r.stderr).toContain('Process "sh -c head -c 600m /dev/zero | tail" exceeded the memory limit of 256MiB and was killed (exit code 137)');
    expect(r.code).toBe(137);
  });

  it('reports the limits in kiln info and what the kernel can limit in docker info, with the host\'s memory', async () => {
    const info = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'info', '--format', 'json']);
    expect(info.code, info.stderr).toBe(0);
    const json = JSON.parse(info.stdout) as { resources: { memTotal: number; stepLimits: unknown; cgroups: { version: number; memory: boolean; pids: boolean } } };
    expect(json.resources.memTotal).toBe(totalmem());
    expect(json.resources.stepLimits).toEqual({ memory: 256 * MiB, pids: 64, cpuShares: 256 });
    expect(json.resources.cgroups).toMatchObject({ version: 1, memory: true, pids: true });
    const text = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'info']);
    expect(text.stdout).toMatch(/^Step limits: +memory 256MiB, 64 processes, CPU weight 256$/m);
    const docker = await getJson<Record<string, unknown>>(served!.socket, '/v1.41/info');
    expect(docker.MemTotal).toBe(totalmem());
    expect(docker).toMatchObject({ MemoryLimit: true, PidsLimit: true, CPUShares: true, CgroupVersion: '1', CgroupDriver: 'cgroupfs' });
    expect(docker.SecurityOptions).toEqual(['name=seccomp,profile=builtin', 'name=no-new-privileges']);
  });

  it('leaves no container, cgroup or mount behind', async () => {
    expect(kilnContainers(store.root)).toEqual([]);
    // Other files' steps may be ending this instant, their cgroups a moment from removal: what
    // is left must stay left to count.
    for (let i = 0; i < 50 && leftoverCgroups().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(leftoverCgroups()).toEqual([]);
    expect(mountsUnder(store.root)).toEqual([]);
  });
});

describe('kiln serve: the default limits and the flags', () => {
  it('limits a step to half of the host\'s memory and 4096 processes unless told otherwise, and refuses bad values', async () => {
    const { root, work, cleanup } = await storeAndContext('kiln-limits-default-');
    try {
      const served = await startServe(root, join(work.path, 'kiln.sock'));
      await served.stop();
      const half = Math.floor(totalmem() / 2 / MiB) * MiB;
      const shown = half % 1024 ** 3 === 0 ? `${half / 1024 ** 3}GiB` : `${half / MiB}MiB`;
      expect(served.log()).toContain(`Limits of each RUN step: memory ${shown}, 4096 processes\n`);
      const none = await startServe(root, join(work.path, 'none.sock'), ['--step-memory', '0', '--step-pids', '0']);
      await none.stop();
      expect(none.log()).toContain('Limits of each RUN step: none\n');
      for (const [flag, value, message] of [
        ['--step-memory', 'lots', 'Invalid --step-memory "lots"'],
        ['--step-memory', '1m', 'Invalid --step-memory "1m"'],
        ['--step-pids', '-1', 'Invalid --step-pids "-1"'],
        ['--step-cpus', 'two', 'Invalid --step-cpus "two"'],
        ['--step-cpu-shares', '1', 'Invalid --step-cpu-shares "1"'],
      ]) {
        const r = await kiln(root, ['serve', '--addr', `unix://${join(work.path, 'bad.sock')}`, flag!, value!]);
        expect(r.code, `${flag} ${value}`).toBe(2);
        expect(r.stderr).toContain(message);
      }
    } finally {
      await cleanup();
    }
  });
});

describe('kiln build: docker build\'s limit flags', () => {
  let root: string;
  let ctx: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-limits-local-'));
  });

  afterAll(async () => {
    await cleanup?.();
  });

  const build = (dockerfile: string, args: string[]) => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return kiln(root, ['build', '--progress', 'plain', '--no-cache', ...args, ctx]);
  };

  it('applies --memory and --cpuset-cpus to each RUN step', async () => {
    const hog = await build('FROM test/base:1\nRUN grep Cpus_allowed_list /proc/self/status && head -c 300m /dev/zero | tail\n', ['--memory', '64m', '--cpuset-cpus', '0']);
    expect(hog.code).toBe(1);
    expect(hog.stderr).toMatch(/^#\d+ [\d.]+ Cpus_allowed_list:\t0$/m);
    expect(hog.stderr).toContain('exceeded the memory limit of 64MiB and was killed (exit code 137)');
    expect(leftoverCgroups()).toEqual([]);
  });

  it('refuses a bad value and, against a build service, any of them', async () => {
    const bad = await build('FROM test/base:1\n', ['--memory', '1k']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('Invalid --memory "1k"');
    const swap = await build('FROM test/base:1\n', ['--memory-swap', '1g']);
    expect(swap.code).toBe(2);
    expect(swap.stderr).toContain('"--memory-swap" needs "--memory"');
    const { root: serverRoot, cleanup: cleanupServer } = await storeWithBase();
    const work = tempDir('kiln-limits-host-');
    try {
      const served = await startServe(serverRoot, join(work.path, 'kiln.sock'));
      try {
        const remote = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served.socket}`, 'build', '--memory', '8g', ctx], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });
        expect(remote.code).toBe(2);
        expect(remote.stderr).toContain('"--memory" does not work against a build service (--host)');
      } finally {
        await served.stop();
      }
    } finally {
      await work.cleanup();
      await cleanupServer();
    }
  });
});
