import { spawn } from 'node:child_process';
import { copyFileSync, cpSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, kilnContainers, mountsUnder, REPO, storeWithBase, tempDir } from '../helpers/kiln.js';

const ERRORS = join(REPO, 'fixtures/skeleton/errors');
const STACK = /^\s+at .*\.js:\d+/m;

describe('bad input and failures', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let ctx: string;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    ctx = join(REPO, 'fixtures/skeleton');
  });
  afterAll(async () => {
    await cleanupStore();
  });

  const build = (file: string, ...extra: string[]) => kiln(root, ['build', '--progress', 'plain', '-f', join(ERRORS, file), ...extra, ctx]);

  it('a failing RUN: exit 1, the step, Dockerfile:LINE, exit code and its output, no tag, nothing left', async () => {
    const r = await build('Dockerfile.fail', '-t', 'test/fail:1');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Dockerfile.fail:2');
    expect(r.stderr).toContain('[2/2] RUN echo out-$((6*7)) >&2 && false');
    expect(r.stderr).toMatch(/exit code 1/);
    expect(r.stderr).toMatch(/^  out-42$/m);
    expect(r.stderr).not.toMatch(STACK);
    const images = await kiln(root, ['images']);
    expect(images.stdout).not.toContain('test/fail');
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
  });

  it('an unknown stage in COPY --from suggests the nearest stage', async () => {
    const r = await build('Dockerfile.badstage');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Cannot find stage or image "buildr" referenced by COPY --from at Dockerfile.badstage:4');
    expect(r.stderr).toContain('Did you mean the stage "builder"?');
    expect(r.stderr).not.toMatch(STACK);
  });

  it('a missing COPY source names the file and the line', async () => {
    const r = await build('Dockerfile.missing');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Source "nothere.txt" not found in the build context');
    expect(r.stderr).toContain('Dockerfile.missing:2');
  });

  it('a COPY source outside the context is refused', async () => {
    const r = await build('Dockerfile.outside');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Source "../../etc/passwd" is outside the build context');
    expect(r.stderr).toContain('Dockerfile.outside:2');
  });

  it('an unknown base image is a located error', async () => {
    const r = await build('Dockerfile.nobase');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('No such image "test/nope:1" in the store at Dockerfile.nobase:1');
    expect(r.stderr).toMatch(/^ 1 \| FROM test\/nope:1$/m);
  });

  it('an unknown instruction is located and gets a suggestion', async () => {
    const r = await build('Dockerfile.unknown');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Unknown instruction "WORKDIRR" at Dockerfile.unknown:3');
    expect(r.stderr).toContain('Did you mean "WORKDIR"?');
  });

  it('a missing context or Dockerfile', async () => {
    const a = await kiln(root, ['build', '/nonexistent/context']);
    expect(a.code).toBe(1);
    expect(a.stderr).toContain('The build context "/nonexistent/context" does not exist');
    const t = tempDir();
    try {
      const b = await kiln(root, ['build', t.path]);
      expect(b.code).toBe(1);
      expect(b.stderr).toContain(`Cannot read the Dockerfile "${t.path}/Dockerfile": no such file`);
    } finally {
      await t.cleanup();
    }
  });

  it('usage errors exit 2', async () => {
    const r = await kiln(root, ['build', '--no-such-flag', ctx]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Unknown flag "--no-such-flag"');
    const run = await kiln(root, ['run', 'test/nope:1']);
    expect(run.code).toBe(125);
    expect(run.stderr).toContain('No such image "test/nope:1"');
  });

  it('Ctrl-C during a RUN cancels cleanly: exit 130, nothing mounted, running or leased', async () => {
    const child = spawn(KILN, ['build', '--progress', 'plain', '-t', 'test/sleep:1', '-f', join(ERRORS, 'Dockerfile.sleep'), ctx], {
      env: { ...process.env, KILN_ROOT: root },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const started = new Promise<void>((resolve) => {
      child.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
        if (/ started$/m.test(stderr)) resolve();
      });
    });
    const exited = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    await started;
    child.kill('SIGINT');
    const code = await exited;
    expect(code).toBe(130);
    expect(stderr).toMatch(/cancelled/i);
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
    const images = await kiln(root, ['images']);
    expect(images.stdout).not.toContain('test/sleep');
    expect(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
    expect(readdirSync(join(root, 'tmp'))).toEqual([]);
  });

  it('existing images survive all of the above', async () => {
    const r = await kiln(root, ['run', '--rm', 'test/base:1', 'cat', '/etc/passwd']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('dev:x:1001:1001');
  });
});

describe('mount points made only to run a step stay out of the layer', () => {
  it('FROM scratch: RUN leaves no /proc, /dev, /sys or /etc in the layer', async () => {
    const t = tempDir();
    try {
      const ctx = join(t.path, 'ctx');
      cpSync(join(REPO, 'fixtures/scratch'), ctx, { recursive: true });
      copyFileSync('/bin/busybox', join(ctx, 'busybox'));
      const dest = join(t.path, 'fs');
      const r = await kiln(join(t.path, 'root'), ['build', '-o', `type=local,dest=${dest}`, ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(readdirSync(dest).sort()).toEqual(['bin', 'data']);
    } finally {
      await t.cleanup();
    }
  });
});
