import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import tar from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { diffTar } from '../../cache/diff.js';
import { readTar } from '../../cache/tarreader.js';
import { unpackLayer } from '../../cache/unpack.js';

/** A v2 `security.capability` (cap_setuid, cap_setgid permitted): bytes above 0x7f and NULs. */
const CAPABILITY = Buffer.from([1, 0, 0, 2, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const BINARY_USER_XATTR = Buffer.from([0xff, 0x00, 0x0a, 0x3d, 0x80, 0x20]);
const LONG_DIR = `deep/${'d'.repeat(60)}/${'e'.repeat(60)}`;
const UNICODE_NAME = 'naïve-文件.txt';

let tmp: string;
const mounted: string[] = [];

beforeEach(() => {
  tmp = mkdtempSync('/dev/shm/kiln-diff-');
});

afterEach(() => {
  try {
    for (const target of mounted.splice(0).reverse()) unmount(target);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  expect(mountsUnder(tmp)).toEqual([]);
});

function mountOverlay(lowers: string[], merged: string, upper?: { upper: string; work: string }): void {
  mkdirSync(merged, { recursive: true });
  const options = [`lowerdir=${lowers.join(':')}`];
  if (upper) options.push(`upperdir=${upper.upper}`, `workdir=${upper.work}`);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', options.join(','), merged]);
  mounted.push(merged);
}

function unmount(target: string): void {
  execFileSync('umount', [target]);
  const at = mounted.indexOf(target);
  if (at !== -1) mounted.splice(at, 1);
}

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((target) => target.startsWith(dir));
}

interface Entry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string | null;
  devmajor: number;
  devminor: number;
  pax: Record<string, string>;
  sha256: string;
}

/** Reads a tar with tar-stream, an independent reader, rather than with our own. */
async function listWithTarStream(data: Buffer): Promise<Entry[]> {
  const extract = tar.extract();
  const entries: Entry[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const hash = createHash('sha256');
      for await (const chunk of entry) hash.update(chunk as Buffer);
      const h = entry.header;
      entries.push({
        name: h.name,
        type: h.type,
        mode: h.mode,
        uid: h.uid,
        gid: h.gid,
        size: h.size,
        mtime: h.mtime.getTime() / 1000,
        linkname: h.linkname,
        devmajor: h.devmajor,
        devminor: h.devminor,
        pax: (h.pax as Record<string, string> | null | undefined) ?? {},
        sha256: hash.digest('hex'),
      });
    }
  })();
  extract.end(data);
  await done;
  return entries;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

interface Seen {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  nlink: number;
  content?: string;
  target?: string;
  rdev?: number;
  xattrs: Record<string, string>;
}

/** Everything a container sees of a tree, hard link groups included. */
function snapshot(root: string): { files: Record<string, Seen>; links: string[][] } {
  const files: Record<string, Seen> = {};
  const inodes = new Map<number, string[]>();
  const visit = (rel: string): void => {
    const abs = rel === '' ? root : join(root, rel);
    for (const name of readdirSync(abs).sort()) {
      const path = rel === '' ? name : `${rel}/${name}`;
      const full = join(root, path);
      const st = lstatSync(full);
      const xattrs: Record<string, string> = {};
      for (const key of listAttributesSync(full).sort()) xattrs[key] = getAttributeSync(full, key)!.toString('hex');
      const seen: Seen = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'special',
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime: Math.floor(st.mtimeMs / 1000),
        nlink: st.isDirectory() ? 0 : st.nlink,
        xattrs,
      };
      if (st.isFile()) seen.content = sha256(readFileSync(full));
      if (st.isSymbolicLink()) seen.target = readlinkSync(full);
      if (st.isCharacterDevice() || st.isBlockDevice()) seen.rdev = st.rdev;
      files[path] = seen;
      if (!st.isDirectory() && st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), path]);
      if (st.isDirectory()) visit(path);
    }
  };
  visit('');
  return { files, links: [...inodes.values()].map((group) => group.sort()).sort() };
}

/** The lower layer every scenario starts from. */
function makeLower(lower: string): void {
  mkdirSync(join(lower, 'gone/sub'), { recursive: true });
  mkdirSync(join(lower, 'etc'));
  mkdirSync(join(lower, LONG_DIR), { recursive: true });
  writeFileSync(join(lower, 'keep.txt'), 'kept\n');
  writeFileSync(join(lower, 'modify.txt'), 'old\n');
  writeFileSync(join(lower, 'delete.txt'), 'bye\n');
  writeFileSync(join(lower, 'gone/a.txt'), 'a\n');
  writeFileSync(join(lower, 'gone/sub/b.txt'), 'b\n');
  writeFileSync(join(lower, 'etc/config'), 'x=1\n');
  writeFileSync(join(lower, 'suid-bin'), '#!/bin/sh\n');
  writeFileSync(join(lower, 'owned.txt'), 'mine\n');
  writeFileSync(join(lower, 'cap-bin'), 'caps\n');
}

/** The changes one RUN step might make, through the merged view as a container would. */
function makeChanges(merged: string): void {
  writeFileSync(join(merged, 'modify.txt'), 'new\n');
  rmSync(join(merged, 'delete.txt'));
  rmSync(join(merged, 'gone'), { recursive: true });
  mkdirSync(join(merged, 'gone'));
  writeFileSync(join(merged, 'gone/fresh.txt'), 'fresh\n');
  writeFileSync(join(merged, 'created.txt'), 'hello\n');
  mkdirSync(join(merged, 'pair'));
  writeFileSync(join(merged, 'pair/a'), 'linked\n');
  linkSync(join(merged, 'pair/a'), join(merged, 'pair/b'));
  symlinkSync('keep.txt', join(merged, 'link-to-keep'));
  symlinkSync('/etc/passwd', join(merged, 'abs-link'));
  chmodSync(join(merged, 'suid-bin'), 0o4755);
  chownSync(join(merged, 'owned.txt'), 1001, 1001);
  execFileSync('mknod', [join(merged, 'fifo'), 'p']);
  execFileSync('mknod', ['-m', '666', join(merged, 'null'), 'c', '1', '3']);
  setAttributeSync(join(merged, 'created.txt'), 'user.kiln', 'hello');
  setAttributeSync(join(merged, 'created.txt'), 'user.binary', BINARY_USER_XATTR);
  setAttributeSync(join(merged, 'cap-bin'), 'security.capability', CAPABILITY);
  mkdirSync(join(merged, 'scratch'));
  chmodSync(join(merged, 'scratch'), 0o1777);
  writeFileSync(join(merged, LONG_DIR, 'a-file-with-a-name-long-enough-to-need-pax.txt'), 'long\n');
  writeFileSync(join(merged, UNICODE_NAME), 'unicode\n');
  writeFileSync(join(merged, 'etc/config'), 'x=2\n');
  writeFileSync(join(merged, 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 17, 'k'));
}

describe('diffTar', () => {
  it('turns an overlayfs upperdir into an OCI layer and back', async () => {
    const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(tmp, d)) as [string, string, string, string];
    mkdirSync(lower);
    mkdirSync(upper);
    mkdirSync(work);
    makeLower(lower);
    mountOverlay([lower], merged, { upper, work });
    makeChanges(merged);
    const before = snapshot(merged);
    unmount(merged);

    const layer = await collect(diffTar(upper));
    const entries = await listWithTarStream(layer);
    const byName = new Map(entries.map((e) => [e.name, e]));
    const names = entries.map((e) => e.name);

    expect(new Set(names).size).toBe(names.length);
    for (const name of names) {
      expect(name.startsWith('/') || name.startsWith('./')).toBe(false);
      const parent = name.replace(/\/?[^/]+\/?$/, '');
      if (parent !== '') expect(names.indexOf(`${parent}/`)).toBeLessThan(names.indexOf(name));
    }
    // Whiteouts precede their siblings.
    expect(names[0]).toBe('.wh.delete.txt');
    expect(byName.get('.wh.delete.txt')).toMatchObject({ type: 'file', size: 0 });
    expect(names.indexOf('gone/.wh..wh..opq')).toBe(names.indexOf('gone/') + 1);
    expect(byName.get('gone/.wh..wh..opq')).toMatchObject({ type: 'file', size: 0 });
    expect(names.filter((n) => n.startsWith('gone/'))).toEqual(['gone/', 'gone/.wh..wh..opq', 'gone/fresh.txt']);
    expect(byName.get('keep.txt')).toBeUndefined();
    expect(byName.get('modify.txt')).toMatchObject({ type: 'file', sha256: sha256('new\n') });
    expect(byName.get('suid-bin')?.mode).toBe(0o4755);
    expect(byName.get('owned.txt')).toMatchObject({ uid: 1001, gid: 1001 });
    expect(byName.get('scratch/')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(byName.get('pair/a')).toMatchObject({ type: 'file', sha256: sha256('linked\n') });
    expect(byName.get('pair/b')).toMatchObject({ type: 'link', linkname: 'pair/a', size: 0 });
    expect(byName.get('link-to-keep')).toMatchObject({ type: 'symlink', linkname: 'keep.txt' });
    expect(byName.get('abs-link')).toMatchObject({ type: 'symlink', linkname: '/etc/passwd' });
    expect(byName.get('fifo')).toMatchObject({ type: 'fifo' });
    expect(byName.get('null')).toMatchObject({ type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 });
    expect(byName.get('created.txt')?.pax['SCHILY.xattr.user.kiln']).toBe('hello');
    expect(byName.get('cap-bin')?.pax).toHaveProperty(['SCHILY.xattr.security.capability']);
    expect(byName.get(`${LONG_DIR}/a-file-with-a-name-long-enough-to-need-pax.txt`)).toMatchObject({ sha256: sha256('long\n') });
    expect(byName.get(UNICODE_NAME)).toMatchObject({ sha256: sha256('unicode\n') });
    expect(byName.get('big.bin')).toMatchObject({ size: 3 * 1024 * 1024 + 17 });
    expect(byName.get('etc/')).toMatchObject({ type: 'directory' });
    for (const entry of entries) {
      for (const key of Object.keys(entry.pax)) expect(key).not.toMatch(/^SCHILY\.xattr\.trusted\.overlay\./);
    }

    // tar-stream reads PAX values as text, so binary values are checked with our reader.
    const xattrs = new Map<string, Map<string, Buffer>>();
    for await (const { header } of readTar(Readable.from([layer]))) xattrs.set(header.name, header.xattrs);
    expect(xattrs.get('cap-bin')?.get('security.capability')).toEqual(CAPABILITY);
    expect(xattrs.get('created.txt')?.get('user.binary')).toEqual(BINARY_USER_XATTR);
    expect(xattrs.get('gone/')?.size).toBe(0);

    const unpacked = join(tmp, 'unpacked');
    const result = await unpackLayer(Readable.from([layer]), unpacked);
    expect(result.entries).toBe(entries.length);
    expect(result.size).toBe(entries.filter((e) => e.type === 'file').reduce((sum, e) => sum + e.size, 0));
    const again = join(tmp, 'again');
    mountOverlay([unpacked, lower], again);
    const after = snapshot(again);
    unmount(again);

    expect(after.files['delete.txt']).toBeUndefined();
    expect(after.files['suid-bin']?.mode).toBe(0o104755);
    expect(after.files['owned.txt']).toMatchObject({ uid: 1001, gid: 1001 });
    expect(after.files['cap-bin']?.xattrs['security.capability']).toBe(CAPABILITY.toString('hex'));
    expect(after.files['created.txt']?.xattrs['user.binary']).toBe(BINARY_USER_XATTR.toString('hex'));
    expect(after.files['null']?.rdev).toBe(lstatSync('/dev/null').rdev);
    expect(Object.keys(after.files).filter((p) => p.startsWith('gone/'))).toEqual(['gone/fresh.txt']);
    const { '': _rootBefore, ...filesBefore } = before.files;
    const { '': _rootAfter, ...filesAfter } = after.files;
    expect(filesAfter).toEqual(filesBefore);
    expect(after.links).toEqual(before.links);
    expect(after.links).toContainEqual(['pair/a', 'pair/b']);
  });

  it('is deterministic and clamps modification times to sourceDateEpoch', async () => {
    const upper = join(tmp, 'upper');
    mkdirSync(join(upper, 'dir'), { recursive: true });
    writeFileSync(join(upper, 'dir/new'), 'new');
    writeFileSync(join(upper, 'old'), 'old');
    utimesSync(join(upper, 'old'), 1000, 1000);
    const epoch = 1_600_000_000;
    const first = await collect(diffTar(upper, { sourceDateEpoch: epoch }));
    const second = await collect(diffTar(upper, { sourceDateEpoch: epoch }));
    expect(sha256(first)).toBe(sha256(second));
    expect(first.subarray(-1024).every((b) => b === 0)).toBe(true);
    const entries = await listWithTarStream(first);
    expect(entries.map((e) => [e.name, e.mtime])).toEqual([
      ['dir/', epoch],
      ['dir/new', epoch],
      ['old', 1000],
    ]);
  });

  it('writes a whiteout as an empty file even though overlayfs gives it two links', async () => {
    const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(tmp, d)) as [string, string, string, string];
    for (const dir of [lower, upper, work]) mkdirSync(dir);
    for (const name of ['x', 'y', 'z']) writeFileSync(join(lower, name), name);
    mountOverlay([lower], merged, { upper, work });
    for (const name of ['x', 'y', 'z']) rmSync(join(merged, name));
    unmount(merged);
    expect(lstatSync(join(upper, 'x')).nlink).toBeGreaterThan(1);
    const entries = await listWithTarStream(await collect(diffTar(upper)));
    expect(entries.map((e) => [e.name, e.type])).toEqual([
      ['.wh.x', 'file'],
      ['.wh.y', 'file'],
      ['.wh.z', 'file'],
    ]);
  });

  it('respects back-pressure: an unread stream holds little and never the whole file', async () => {
    const upper = join(tmp, 'upper');
    mkdirSync(upper);
    const size = 256 * 1024 * 1024;
    writeFileSync(join(upper, 'huge'), '');
    truncateSync(join(upper, 'huge'), size);
    const stream = diffTar(upper);
    stream.pause();
    stream.read(0);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(stream.readableLength).toBeLessThan(2 * 1024 * 1024);
    let total = 0;
    for await (const chunk of stream) total += (chunk as Buffer).length;
    expect(total).toBe(512 + size + 1024);
  });

  it('stops with an AbortError when aborted', async () => {
    const upper = join(tmp, 'upper');
    mkdirSync(upper);
    for (let i = 0; i < 2000; i++) writeFileSync(join(upper, `f${i}`), Buffer.alloc(1000, i));
    const controller = new AbortController();
    const stream = diffTar(upper, { signal: controller.signal });
    const reading = (async () => {
      for await (const _chunk of stream) controller.abort();
    })();
    await expect(reading).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('carries what ustar cannot hold in PAX records', async () => {
    const upper = join(tmp, 'upper');
    const longDir = Array.from({ length: 6 }, (_, i) => `${i}`.repeat(50)).join('/');
    const longTarget = `../${'t'.repeat(200)}`;
    mkdirSync(join(upper, longDir), { recursive: true });
    writeFileSync(join(upper, longDir, 'leaf'), 'leaf');
    symlinkSync(longTarget, join(upper, 'far'));
    writeFileSync(join(upper, 'big-ids'), 'ids');
    chownSync(join(upper, 'big-ids'), 3_000_000, 4_000_000_000);
    const layer = await collect(diffTar(upper));
    const byName = new Map((await listWithTarStream(layer)).map((e) => [e.name, e]));
    expect(byName.get(`${longDir}/leaf`)).toMatchObject({ sha256: sha256('leaf') });
    expect(byName.get('far')).toMatchObject({ type: 'symlink', linkname: longTarget });
    expect(byName.get('big-ids')).toMatchObject({ uid: 3_000_000, gid: 4_000_000_000 });

    const dest = join(tmp, 'dest');
    await unpackLayer(Readable.from([layer]), dest);
    expect(readFileSync(join(dest, longDir, 'leaf'), 'utf8')).toBe('leaf');
    expect(readlinkSync(join(dest, 'far'))).toBe(longTarget);
    expect(lstatSync(join(dest, 'big-ids'))).toMatchObject({ uid: 3_000_000, gid: 4_000_000_000 });
  });

  it('refuses a file whose name would read as a whiteout', async () => {
    const upper = join(tmp, 'upper');
    mkdirSync(upper);
    writeFileSync(join(upper, '.wh.sneaky'), '');
    await expect(collect(diffTar(upper))).rejects.toMatchObject({ code: 'UNREPRESENTABLE_PATH' });
  });

  it('tars 10,000 small files quickly', async () => {
    const upper = join(tmp, 'upper');
    for (let d = 0; d < 100; d++) {
      mkdirSync(join(upper, `d${d}`), { recursive: true });
      for (let f = 0; f < 100; f++) writeFileSync(join(upper, `d${d}/f${f}`), `file ${d}/${f}\n`.repeat(8));
    }
    const started = performance.now();
    const layer = await collect(diffTar(upper));
    const elapsed = performance.now() - started;
    expect(await listWithTarStream(layer)).toHaveLength(10_100);
    expect(elapsed).toBeLessThan(5_000);
  });
});
