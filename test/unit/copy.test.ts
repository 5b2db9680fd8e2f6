import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CopyAction } from '../../solver/graph.js';
import { copyIntoRoot } from '../../src/worker/copy.js';
import { exclusionFor } from '../../src/sources/exclusion.js';
import { NO_EXCLUSION, selectSources } from '../../src/sources/select.js';
import { mountsUnder } from '../helpers/kiln.js';

let tmp: string;
let mounted: string | undefined;

beforeEach(() => {
  tmp = mkdtempSync('/dev/shm/kiln-copy-');
});

afterEach(() => {
  try {
    if (mounted) execFileSync('umount', [mounted]);
  } finally {
    mounted = undefined;
    rmSync(tmp, { recursive: true, force: true });
  }
  expect(mountsUnder(tmp)).toEqual([]);
});

/** A writable overlay over `lower`, as a COPY step sees its base; returns the merged root. */
function overlayOver(lower: string): { root: string; upper: string } {
  const upper = join(tmp, 'upper');
  const work = join(tmp, 'work');
  const root = join(tmp, 'merged');
  for (const d of [upper, work, root]) mkdirSync(d);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, root]);
  mounted = root;
  return { root, upper };
}

function copyAction(src: string[], dest: string, extra: Partial<CopyAction> = {}): CopyAction {
  return { action: 'copy', from: 0, src, dest, cwd: '/', ...extra };
}

async function copyContext(ctx: string, root: string, action: CopyAction, ignore: string[] = [], owner?: { uid: number; gid: number }): Promise<void> {
  const exclusion = exclusionFor(ignore);
  const selections = await selectSources(ctx, action.src, exclusion, 'the build context');
  const excludes = exclusionFor(action.exclude ?? []);
  await copyIntoRoot(root, action, selections, { owner, fromContext: true, exclusion, excludes, srcRoot: ctx });
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('copyIntoRoot', () => {
  it('copies a tree through overlayfs with contents, modes, times and links, owned by root', async () => {
    const ctx = join(tmp, 'ctx');
    mkdirSync(join(ctx, 'a/b'), { recursive: true });
    writeFileSync(join(ctx, 'a/one.txt'), 'one\n');
    writeFileSync(join(ctx, 'a/b/empty'), '');
    // Larger than the copy buffer, so it goes the other way.
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
    writeFileSync(join(ctx, 'a/big.bin'), big);
    writeFileSync(join(ctx, 'a/tool'), '#!/bin/sh\n');
    chmodSync(join(ctx, 'a/tool'), 0o4751);
    chmodSync(join(ctx, 'a/b'), 0o750);
    symlinkSync('../one.txt', join(ctx, 'a/b/link'));
    chownSync(join(ctx, 'a/one.txt'), 1234, 5678);
    utimesSync(join(ctx, 'a/one.txt'), 1_000_000, 1_234_567);
    utimesSync(join(ctx, 'a/b'), 1_000_000, 1_111_111);
    const lower = join(tmp, 'lower');
    mkdirSync(join(lower, 'etc'), { recursive: true });
    const { root, upper } = overlayOver(lower);

    await copyContext(ctx, root, copyAction(['a'], '/app'));

    expect(readdirSync(join(root, 'app')).sort()).toEqual(['b', 'big.bin', 'one.txt', 'tool']);
    expect(readFileSync(join(root, 'app/one.txt'), 'utf8')).toBe('one\n');
    expect(sha(join(root, 'app/big.bin'))).toBe(createHash('sha256').update(big).digest('hex'));
    expect(statSync(join(root, 'app/b/empty')).size).toBe(0);
    expect(readlinkSync(join(root, 'app/b/link'))).toBe('../one.txt');
    const one = lstatSync(join(root, 'app/one.txt'));
    expect([one.uid, one.gid, one.mode & 0o7777, Math.floor(one.mtimeMs / 1000)]).toEqual([0, 0, 0o644, 1_234_567]);
    expect(lstatSync(join(root, 'app/tool')).mode & 0o7777).toBe(0o4751);
    const b = lstatSync(join(root, 'app/b'));
    expect([b.mode & 0o7777, Math.floor(b.mtimeMs / 1000)]).toEqual([0o750, 1_111_111]);
    // Everything landed in the new layer, and the lower one is untouched.
    expect(readFileSync(join(upper, 'app/one.txt'), 'utf8')).toBe('one\n');
    expect(readdirSync(lower)).toEqual(['etc']);
  });

  it('replaces what the base has at each path and writes through a link to a directory inside the root', async () => {
    const ctx = join(tmp, 'ctx');
    mkdirSync(join(ctx, 'src/wasfile'), { recursive: true });
    writeFileSync(join(ctx, 'src/wasfile/inner'), 'inner\n');
    writeFileSync(join(ctx, 'src/wasdir'), 'now a file\n');
    writeFileSync(join(ctx, 'src/waslink'), 'plain file\n');
    mkdirSync(join(ctx, 'src/data'));
    writeFileSync(join(ctx, 'src/data/new.txt'), 'new\n');
    writeFileSync(join(ctx, 'src/kept.txt'), 'replaced\n');
    const lower = join(tmp, 'lower');
    mkdirSync(join(lower, 'dest/wasdir/deep'), { recursive: true });
    writeFileSync(join(lower, 'dest/wasdir/deep/old'), 'old\n');
    writeFileSync(join(lower, 'dest/wasfile'), 'old file\n');
    symlinkSync('/etc/passwd', join(lower, 'dest/waslink'));
    mkdirSync(join(lower, 'real'));
    writeFileSync(join(lower, 'real/existing.txt'), 'existing\n');
    // An absolute link: resolved inside the root, never on the host.
    symlinkSync('/real', join(lower, 'dest/data'));
    writeFileSync(join(lower, 'dest/kept.txt'), 'old\n');
    writeFileSync(join(lower, 'dest/other.txt'), 'other\n');
    const { root } = overlayOver(lower);

    await copyContext(ctx, root, copyAction(['src'], '/dest/'));

    expect(readFileSync(join(root, 'dest/wasfile/inner'), 'utf8')).toBe('inner\n');
    expect(lstatSync(join(root, 'dest/wasdir')).isFile()).toBe(true);
    expect(readFileSync(join(root, 'dest/wasdir'), 'utf8')).toBe('now a file\n');
    expect(lstatSync(join(root, 'dest/waslink')).isFile()).toBe(true);
    expect(readFileSync(join(root, 'dest/waslink'), 'utf8')).toBe('plain file\n');
    expect(readFileSync('/etc/passwd', 'utf8')).not.toBe('plain file\n');
    expect(readlinkSync(join(root, 'dest/data'))).toBe('/real');
    expect(readdirSync(join(root, 'real')).sort()).toEqual(['existing.txt', 'new.txt']);
    expect(readFileSync(join(root, 'dest/kept.txt'), 'utf8')).toBe('replaced\n');
    expect(readFileSync(join(root, 'dest/other.txt'), 'utf8')).toBe('other\n');
  });

  it('applies --chown, --chmod, --exclude and .dockerignore to every file of a large tree', async () => {
    const ctx = join(tmp, 'ctx');
    for (let d = 0; d < 20; d++) {
      mkdirSync(join(ctx, `d${d}`), { recursive: true });
      for (let f = 0; f < 50; f++) writeFileSync(join(ctx, `d${d}/f${f}.${f % 10 === 0 ? 'log' : 'txt'}`), `${d}/${f}\n`);
    }
    writeFileSync(join(ctx, 'd3/secret.key'), 'k');
    mkdirSync(join(tmp, 'empty-lower'));
    const { root } = overlayOver(join(tmp, 'empty-lower'));

    await copyContext(ctx, root, copyAction(['.'], '/ctx', { chmod: 'u+x,go-w', exclude: ['**/*.log'] }), ['**/*.key'], { uid: 1001, gid: 1002 });

    let count = 0;
    for (let d = 0; d < 20; d++) {
      const names = readdirSync(join(root, `ctx/d${d}`));
      expect(names.some((n) => n.endsWith('.log') || n.endsWith('.key'))).toBe(false);
      for (const n of names) {
        const st = lstatSync(join(root, `ctx/d${d}`, n));
        expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([1001, 1002, 0o744]);
        expect(readFileSync(join(root, `ctx/d${d}`, n), 'utf8')).toBe(`${d}/${n.slice(1, -4)}\n`);
        count++;
      }
      const dir = lstatSync(join(root, `ctx/d${d}`));
      expect([dir.uid, dir.gid, dir.mode & 0o7777]).toEqual([1001, 1002, 0o755]);
    }
    expect(count).toBe(20 * 45);
  });

  it('stops at an aborted signal and says it was aborted', async () => {
    const ctx = join(tmp, 'ctx');
    mkdirSync(join(ctx, 'a'), { recursive: true });
    writeFileSync(join(ctx, 'a/x'), 'x');
    const dest = join(tmp, 'root');
    mkdirSync(dest);
    const controller = new AbortController();
    controller.abort(new Error('Build cancelled'));
    const selections = await selectSources(ctx, ['a'], NO_EXCLUSION, 'the build context');
    await expect(
      copyIntoRoot(dest, copyAction(['a'], '/a'), selections, { fromContext: true, exclusion: NO_EXCLUSION, srcRoot: ctx, signal: controller.signal }),
    ).rejects.toThrow('Build cancelled');
  });
});
