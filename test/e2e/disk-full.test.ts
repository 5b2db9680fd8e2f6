import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseTar, kiln, kilnContainers, mountsUnder, tempDir } from '../helpers/kiln.js';

/**
 * A store on a small tmpfs: a RUN that writes more than fits, and a RUN whose output fits but
 * whose snapshot blob does not. Each fails with exit 1 and an error that says where the disk is
 * full and what to do; the store verifies; once the disk is larger the same builds succeed and
 * the image built before still runs.
 */
describe('a full disk under the store', () => {
  let work: ReturnType<typeof tempDir>;
  let mnt: string;
  let root: string;
  let ctx: string;

  const dockerfile = (name: string, text: string) => {
    const f = join(work.path, name);
    writeFileSync(f, text);
    return f;
  };

  const expectWhole = async () => {
    const verify = await kiln(root, ['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toContain('no problems');
    expect(readdirSync(join(root, 'tmp'))).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
    const run = await kiln(root, ['run', '--rm', 'full/before:1', 'cat', '/ok']);
    expect(run.stdout).toBe('ok\n');
  };

  beforeAll(async () => {
    work = tempDir('kiln-disk-full-');
    mnt = join(work.path, 'mnt');
    mkdirSync(mnt);
    // 40 MiB: the base image and one small image take about 3 MiB of it.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt]);
    root = join(mnt, 'store');
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    const imported = await kiln(root, ['import', '--change', 'CMD ["sh"]', baseTar(), 'test/base:1']);
    expect(imported.code, imported.stderr).toBe(0);
    const before = await kiln(root, ['build', '-q', '-t', 'full/before:1', '-f', dockerfile('Dockerfile.before', 'FROM test/base:1\nRUN echo ok > /ok\n'), ctx]);
    expect(before.code, before.stderr).toBe(0);
  });

  afterAll(async () => {
    // Unmounted even when a case failed: tempDir's cleanup unmounts what is left below it.
    await work?.cleanup();
  });

  const tooBig = () => dockerfile('Dockerfile.run', 'FROM test/base:1\nRUN head -c 60000000 /dev/zero > /big && echo wrote\n');
  // 25 MB of random bytes fit in the upper directory, but their compressed copy does not.
  const blobTooBig = () => dockerfile('Dockerfile.blob', 'FROM test/base:1\nRUN head -c 25000000 /dev/urandom > /big && echo wrote\n');

  it('a RUN that writes more than fits fails with exit 1, naming the store and what to do', async () => {
    const r = await kiln(root, ['build', '--progress', 'plain', '-f', tooBig(), ctx]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`the store's disk at "${root}" has no space left on device`);
    expect(r.stderr).toMatch(/^hint: Free space on that disk \(kiln prune/m);
    expect(r.stderr).not.toMatch(/SQLITE|database or disk is full|^\s+at /m);
    await expectWhole();
  });

  it('a snapshot blob that does not fit fails with exit 1, naming the file it was writing', async () => {
    const r = await kiln(root, ['build', '--progress', 'plain', '-f', blobTooBig(), ctx]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`No space left on device for "${root}/tmp/blob-[^"]+" while writing a blob`));
    expect(r.stderr).toMatch(/^hint: Free space on that disk/m);
    expect(r.stderr).not.toMatch(/ENOSPC|^\s+at /m);
    await expectWhole();
  });

  it('once the disk is larger, the same builds succeed', async () => {
    execFileSync('mount', ['-o', 'remount,size=256m', mnt]);
    for (const [file, tag] of [[tooBig(), 'full/run:1'], [blobTooBig(), 'full/blob:1']] as const) {
      const r = await kiln(root, ['build', '-q', '-t', tag, '-f', file, ctx]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await kiln(root, ['run', '--rm', 'full/run:1', 'wc', '-c', '/big'])).stdout.trim()).toBe('60000000 /big');
    expect((await kiln(root, ['run', '--rm', 'full/blob:1', 'wc', '-c', '/big'])).stdout.trim()).toBe('25000000 /big');
    await expectWhole();
  });
});
