import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/**
 * Path escapes through real builds: nothing outside the context is read, nothing outside the
 * rootfs is written. Canary files on the host carry a marker that must never show up in an
 * image, and host directories that a build aims at must stay as they were.
 */
const MARKER = 'KILN-HOST-CANARY-7f3a';
// Names written through links to the host's / are unique per run, so a leftover cannot pass for one.
const TAG = `kiln-canary-${process.pid}-${Date.now()}`;

describe('path escapes through real builds', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let ctx: string;
  let outside: string;
  let hostdir: string;
  let canary: string;
  let canaryTime: number;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-sec-paths-');
    ctx = join(work.path, 'ctx');
    outside = join(work.path, 'outside');
    hostdir = join(work.path, 'hostdir');
    mkdirSync(join(ctx, 'sub'), { recursive: true });
    mkdirSync(outside);
    mkdirSync(hostdir);
    canary = join(outside, 'secret');
    writeFileSync(canary, `${MARKER}\n`);
    canaryTime = statSync(canary).mtimeMs;
    writeFileSync(join(ctx, 'file'), 'in the context\n');
    symlinkSync('../outside/secret', join(ctx, 'rel-link'));
    symlinkSync(canary, join(ctx, 'abs-link'));
    symlinkSync('../outside', join(ctx, 'dir-link'));
    symlinkSync(outside, join(ctx, 'sub/abs-dir-link'));
  });

  afterAll(async () => {
    await cleanupStore?.();
    await work?.cleanup();
  });

  /** Builds `dockerfile` with the context; returns the result and the exported rootfs tar. */
  async function build(name: string, dockerfile: string, options: { ignore?: string } = {}) {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    if (options.ignore !== undefined) writeFileSync(join(ctx, '.dockerignore'), options.ignore);
    else if (existsSync(join(ctx, '.dockerignore'))) execFileSync('rm', [join(ctx, '.dockerignore')]);
    const out = join(work.path, `${name}.tar`);
    const r = await kiln(root, ['build', '--progress', 'plain', '-o', `type=tar,dest=${out}`, ctx]);
    return { ...r, tar: existsSync(out) ? out : undefined };
  }

  /** Every file's bytes in a rootfs tar, concatenated: the marker must not be among them. */
  const contents = (tar: string) => execFileSync('tar', ['-xOf', tar], { maxBuffer: 256 << 20 }).toString('latin1');
  const listing = (tar: string) => execFileSync('tar', ['-tvf', tar], { encoding: 'utf8', maxBuffer: 64 << 20 });

  const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at .*\.js:\d+/m);

  it('resolves COPY sources with "..", absolute paths and links inside the context', async () => {
    for (const [i, src] of ['../outside/secret', canary, '/../../outside/secret', 'dir-link/secret', 'sub/abs-dir-link/secret'].entries()) {
      const r = await build(`src-${i}`, `FROM test/base:1\nCOPY ${src} /got\n`);
      noStackTrace(r.stderr);
      // Either the path is not found in the context, or what was copied is not the host file.
      if (r.code === 0) expect(contents(r.tar!), src).not.toContain(MARKER);
      else expect(r.stderr, src).toMatch(/not found|no such|does not exist|outside/i);
    }
  });

  it('copies links that point out of the context as links, never their targets', async () => {
    const r = await build('links', 'FROM test/base:1\nCOPY . /ctx/\nCOPY rel-link abs-link /single/\nADD dir-link /added/\n');
    noStackTrace(r.stderr);
    if (r.code === 0) {
      expect(contents(r.tar!)).not.toContain(MARKER);
      expect(listing(r.tar!)).toMatch(/ctx\/rel-link -> \.\.\/outside\/secret/);
    } else {
      expect(r.stderr).toMatch(/not found|no such|does not exist/i);
    }
  });

  it('keeps writes through links in the image inside the rootfs', async () => {
    const r = await build('dest', [
      'FROM test/base:1',
      `RUN ln -s / /escape && ln -s ../../../../../../.. /up && ln -s ${hostdir} /into-host && mkdir -p /deep/a && ln -s ../../.. /deep/a/b`,
      `COPY file /escape/tmp/${TAG}-root`,
      `COPY file /up/tmp/${TAG}-dotdot`,
      'COPY file /into-host/via-abs',
      `COPY file /deep/a/b/${TAG}-relative`,
      'ADD file /into-host/added',
      `WORKDIR /into-host/workdir`,
      `RUN echo run > ${hostdir}/from-run`,
      'COPY --chmod=777 file /into-host/',
    ].join('\n'));
    expect(r.code, r.stderr).toBe(0);
    // The host directory the links name stays empty; the files are in the image at that path.
    expect(readdirSync(hostdir)).toEqual([]);
    const files = listing(r.tar!);
    const rel = hostdir.slice(1);
    for (const f of [`tmp/${TAG}-root`, `tmp/${TAG}-dotdot`, `${rel}/via-abs`, `${TAG}-relative`, `${rel}/added`, `${rel}/workdir/`, `${rel}/from-run`, `${rel}/file`]) {
      expect(files, f).toContain(f);
    }
    expect(existsSync(`/tmp/${TAG}-root`)).toBe(false);
    expect(existsSync(`/tmp/${TAG}-dotdot`)).toBe(false);
    expect(existsSync(`/${TAG}-relative`)).toBe(false);
  });

  it('resolves COPY --from links inside the source stage, not on the host', async () => {
    const r = await build('from', [
      'FROM test/base:1 AS src',
      `RUN ln -s ${canary} /leak && ln -s ${outside} /leakdir && ln -s ../../../../..${canary} /updir`,
      'FROM test/base:1',
      'COPY --from=src /leak /leak-copied',
      'COPY --from=src /updir /updir-copied',
      `RUN --mount=type=bind,from=src,source=/leakdir,target=/m ls /m > /listing || true`,
    ].join('\n'));
    noStackTrace(r.stderr);
    if (r.code === 0) expect(contents(r.tar!)).not.toContain(MARKER);
    const r2 = await build('from-dir', `FROM test/base:1 AS src\nRUN ln -s ${outside} /leakdir\nFROM test/base:1\nCOPY --from=src /leakdir/secret /got\n`);
    noStackTrace(r2.stderr);
    if (r2.code === 0) expect(contents(r2.tar!)).not.toContain(MARKER);
    else expect(r2.stderr).toMatch(/not found|no such|does not exist/i);
  });

  it('keeps a bind mount of the context inside the context', async () => {
    const r = await build('bind', [
      'FROM test/base:1',
      'RUN --mount=type=bind,source=../outside,target=/m cat /m/secret > /a || true',
      'RUN --mount=type=bind,source=dir-link,target=/m cat /m/secret > /b || true',
      'RUN --mount=type=bind,target=/m cat /m/rel-link > /c || true',
    ].join('\n'));
    noStackTrace(r.stderr);
    if (r.code === 0) expect(contents(r.tar!)).not.toContain(MARKER);
  });

  it('does not let .dockerignore exceptions reach above the context', async () => {
    const r = await build('ignore', 'FROM test/base:1\nCOPY . /ctx/\n', { ignore: '*\n!..\n!../outside\n!../outside/secret\n!/../outside/secret\n!rel-link\n' });
    noStackTrace(r.stderr);
    if (r.code === 0) {
      expect(contents(r.tar!)).not.toContain(MARKER);
      expect(listing(r.tar!)).not.toMatch(/ctx\/outside/);
    }
  });

  it('leaves the host canaries as they were', () => {
    expect(readFileSync(canary, 'utf8')).toBe(`${MARKER}\n`);
    expect(statSync(canary).mtimeMs).toBe(canaryTime);
    expect(readdirSync(outside)).toEqual(['secret']);
    expect(readdirSync(hostdir)).toEqual([]);
    expect(mountsUnder(root)).toEqual([]);
  });
});
