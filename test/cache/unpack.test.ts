import { execFileSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { unpackLayer } from '../../cache/unpack.js';
import { packTar } from '../helpers/tar.js';

let tmp: string;
const mounted: string[] = [];
const outside: string[] = [];

beforeEach(() => {
  tmp = mkdtempSync('/dev/shm/kiln-unpack-');
});

afterEach(() => {
  try {
    for (const target of mounted.splice(0).reverse()) execFileSync('umount', [target]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    for (const dir of outside.splice(0)) rmSync(dir, { recursive: true, force: true });
  }
  expect(mountsUnder(tmp)).toEqual([]);
});

function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((target) => target.startsWith(dir));
}


function unpack(data: Buffer, dest: string, signal?: AbortSignal): ReturnType<typeof unpackLayer> {
  return unpackLayer(Readable.from([data]), dest, { signal });
}

function makeOutside(): string {
  const dir = mkdtempSync('/tmp/kiln-outside-');
  outside.push(dir);
  return dir;
}

describe('unpackLayer', () => {
  it('keeps entries with ".." and absolute names inside the destination', async () => {
    const dest = join(tmp, 'dest');
    const data = await packTar([
      [{ name: '../evil' }, 'evil'],
      [{ name: '/abs' }, 'abs'],
      [{ name: 'a/../../../b' }, 'b'],
      [{ name: './ok/./file' }, 'ok'],
    ]);
    const result = await unpack(data, dest);
    expect(result).toEqual({ entries: 4, size: 10 });
    expect(existsSync(join(tmp, 'evil'))).toBe(false);
    expect(readFileSync(join(dest, 'evil'), 'utf8')).toBe('evil');
    expect(readFileSync(join(dest, 'abs'), 'utf8')).toBe('abs');
    expect(readFileSync(join(dest, 'b'), 'utf8')).toBe('b');
    expect(readFileSync(join(dest, 'ok/file'), 'utf8')).toBe('ok');
    expect(readdirSync(dest).sort()).toEqual(['abs', 'b', 'evil', 'ok']);
  });

  it('never writes through a symbolic link the archive created', async () => {
    const host = makeOutside();
    const dest = join(tmp, 'dest');
    const data = await packTar([
      [{ name: 'x', type: 'symlink', linkname: host }],
      [{ name: 'x/file' }, 'pwned'],
    ]);
    await expect(unpack(data, dest)).rejects.toMatchObject({
      code: 'UNSAFE_ARCHIVE',
      message: expect.stringContaining('"x/file"'),
    });
    expect(readdirSync(host)).toEqual([]);
    expect(readlinkSync(join(dest, 'x'))).toBe(host);

    const relative = await packTar([
      [{ name: 'up', type: 'symlink', linkname: '../..' }],
      [{ name: 'up/escaped' }, 'pwned'],
    ]);
    await expect(unpack(relative, join(tmp, 'dest2'))).rejects.toMatchObject({ code: 'UNSAFE_ARCHIVE' });
    expect(existsSync(join(tmp, '../escaped'))).toBe(false);
    expect(existsSync('/dev/escaped')).toBe(false);
  });

  it('refuses hard links that leave the layer', async () => {
    const dest = join(tmp, 'dest');
    const climbing = await packTar([[{ name: 'h', type: 'link', linkname: '../../etc/passwd' }]]);
    await expect(unpack(climbing, dest)).rejects.toMatchObject({
      code: 'UNSAFE_ARCHIVE',
      message: expect.stringContaining('"h"'),
    });
    expect(existsSync(join(dest, 'h'))).toBe(false);

    const throughSymlink = await packTar([
      [{ name: 'etc', type: 'symlink', linkname: '/etc' }],
      [{ name: 'p', type: 'link', linkname: 'etc/passwd' }],
    ]);
    await expect(unpack(throughSymlink, join(tmp, 'dest2'))).rejects.toMatchObject({ code: 'UNSAFE_ARCHIVE' });
    expect(existsSync(join(tmp, 'dest2/p'))).toBe(false);

    // An absolute target means the layer root, where there is no etc/passwd.
    const absolute = await packTar([[{ name: 'q', type: 'link', linkname: '/etc/passwd' }]]);
    await expect(unpack(absolute, join(tmp, 'dest3'))).rejects.toMatchObject({ code: 'CORRUPT_ARCHIVE' });
    expect(lstatSync('/etc/passwd').nlink).toBe(1);
  });

  it('refuses whiteouts that name their own directory', async () => {
    const data = await packTar([[{ name: 'dir/.wh..' }, '']]);
    await expect(unpack(data, join(tmp, 'dest'))).rejects.toMatchObject({ code: 'UNSAFE_ARCHIVE' });
  });

  it('links hard links to earlier entries of the same layer', async () => {
    const dest = join(tmp, 'dest');
    await unpack(
      await packTar([
        [{ name: 'bin/' , type: 'directory' }],
        [{ name: 'bin/a', mode: 0o755 }, 'binary'],
        [{ name: 'bin/b', type: 'link', linkname: 'bin/a' }],
        [{ name: 'c', type: 'link', linkname: '/bin/a' }],
      ]),
      dest,
    );
    const a = lstatSync(join(dest, 'bin/a'));
    expect(lstatSync(join(dest, 'bin/b')).ino).toBe(a.ino);
    expect(lstatSync(join(dest, 'c')).ino).toBe(a.ino);
    expect(a.nlink).toBe(3);
  });

  it('lets a later entry replace an earlier one', async () => {
    const dest = join(tmp, 'dest');
    await unpack(
      await packTar([
        [{ name: 'f' }, 'one'],
        [{ name: 'f' }, 'two'],
        [{ name: 'd/', type: 'directory' }],
        [{ name: 'd/x' }, 'x'],
        [{ name: 'd' }, 'now a file'],
        [{ name: 'g' }, 'file'],
        [{ name: 'g/', type: 'directory' }],
        [{ name: 'g/y' }, 'y'],
        [{ name: 's', type: 'symlink', linkname: 'f' }],
        [{ name: 's' }, 'regular'],
        [{ name: 'm/', type: 'directory', mode: 0o700, pax: { 'SCHILY.xattr.user.old': 'o' } }],
        [{ name: 'm/child' }, 'child'],
        [{ name: 'm/', type: 'directory', mode: 0o751, pax: { 'SCHILY.xattr.user.new': 'n' } }],
      ]),
      dest,
    );
    expect(readFileSync(join(dest, 'f'), 'utf8')).toBe('two');
    expect(readFileSync(join(dest, 'd'), 'utf8')).toBe('now a file');
    expect(readFileSync(join(dest, 'g/y'), 'utf8')).toBe('y');
    expect(lstatSync(join(dest, 's')).isFile()).toBe(true);
    expect(readFileSync(join(dest, 'm/child'), 'utf8')).toBe('child');
    expect(lstatSync(join(dest, 'm')).mode & 0o7777).toBe(0o751);
    expect(listAttributesSync(join(dest, 'm'))).toEqual(['user.new']);
  });

  it('applies modes, owners, times and attributes, directory times last', async () => {
    const dest = join(tmp, 'dest');
    await unpack(
      await packTar([
        [{ name: 'd/', type: 'directory', mode: 0o750, uid: 5, gid: 6, mtime: new Date(1_000_000_000) }],
        [
          {
            name: 'd/f',
            mode: 0o4711,
            uid: 7,
            gid: 8,
            mtime: new Date(2_000_000_000),
            pax: { 'SCHILY.xattr.user.note': 'kept', 'SCHILY.xattr.trusted.overlay.redirect': '/etc' },
          },
          'content',
        ],
        [{ name: 'd/l', type: 'symlink', linkname: 'f', uid: 9, gid: 10, mtime: new Date(3_000_000_000) }],
        [{ name: 'd/p', type: 'fifo', mode: 0o620, uid: 11, gid: 12, mtime: new Date(4_000_000_000) }],
        [{ name: 'd/c', type: 'character-device', devmajor: 1, devminor: 5, mode: 0o666 }],
        [{ name: 'd/b', type: 'block-device', devmajor: 7, devminor: 0, mode: 0o660 }],
      ]),
      dest,
    );
    const d = lstatSync(join(dest, 'd'));
    expect([d.mode & 0o7777, d.uid, d.gid, d.mtimeMs]).toEqual([0o750, 5, 6, 1_000_000_000]);
    const f = lstatSync(join(dest, 'd/f'));
    expect([f.mode & 0o7777, f.uid, f.gid, f.mtimeMs]).toEqual([0o4711, 7, 8, 2_000_000_000]);
    expect(getAttributeSync(join(dest, 'd/f'), 'user.note')?.toString()).toBe('kept');
    expect(listAttributesSync(join(dest, 'd/f'))).toEqual(['user.note']);
    const l = lstatSync(join(dest, 'd/l'));
    expect([l.isSymbolicLink(), l.uid, l.gid, l.mtimeMs]).toEqual([true, 9, 10, 3_000_000_000]);
    const p = lstatSync(join(dest, 'd/p'));
    expect([p.isFIFO(), p.mode & 0o7777, p.uid, p.gid, p.mtimeMs]).toEqual([true, 0o620, 11, 12, 4_000_000_000]);
    const c = lstatSync(join(dest, 'd/c'));
    expect([c.isCharacterDevice(), c.rdev, c.mode & 0o7777]).toEqual([true, lstatSync('/dev/zero').rdev, 0o666]);
    const b = lstatSync(join(dest, 'd/b'));
    expect([b.isBlockDevice(), b.rdev]).toEqual([true, 7 << 8]);
  });

  it('turns whiteouts and opaque markers into what overlayfs reads from a lowerdir', async () => {
    const lower = join(tmp, 'lower');
    mkdirSync(join(lower, 'dir'), { recursive: true });
    mkdirSync(join(lower, 'sub'));
    writeFileSync(join(lower, 'old'), 'old');
    writeFileSync(join(lower, 'dir/stale'), 'stale');
    writeFileSync(join(lower, 'sub/nested'), 'nested');
    writeFileSync(join(lower, 'sub/kept'), 'kept');
    const layer = join(tmp, 'layer');
    const result = await unpack(
      await packTar([
        [{ name: '.wh.old' }, ''],
        [{ name: 'dir/', type: 'directory' }],
        [{ name: 'dir/.wh..wh..opq' }, ''],
        [{ name: 'dir/new' }, 'new'],
        [{ name: 'sub/.wh.nested' }, ''],
        [{ name: 'sub/.wh..wh.plnk/' , type: 'directory' }],
      ]),
      layer,
    );
    expect(result.entries).toBe(6);
    const old = lstatSync(join(layer, 'old'));
    expect([old.isCharacterDevice(), old.rdev, old.mode & 0o7777]).toEqual([true, 0, 0]);
    expect(lstatSync(join(layer, 'sub/nested')).rdev).toBe(0);
    expect(getAttributeSync(join(layer, 'dir'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect(readdirSync(layer).sort()).toEqual(['dir', 'old', 'sub']);
    expect(readdirSync(join(layer, 'sub'))).toEqual(['nested']);

    const merged = join(tmp, 'merged');
    mkdirSync(merged);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${layer}:${lower}`, merged]);
    mounted.push(merged);
    const view = {
      root: readdirSync(merged).sort(),
      dir: readdirSync(join(merged, 'dir')).sort(),
      sub: readdirSync(join(merged, 'sub')).sort(),
    };
    execFileSync('umount', [merged]);
    mounted.pop();
    expect(view).toEqual({ root: ['dir', 'sub'], dir: ['new'], sub: ['kept'] });
  });

  it('lets a whiteout hide only the layers below, not an entry of its own layer', async () => {
    const dest = join(tmp, 'dest');
    await unpack(
      await packTar([
        [{ name: 'file' }, 'mine'],
        [{ name: '.wh.file' }, ''],
        [{ name: '.wh.dir' }, ''],
        [{ name: 'dir/inner' }, 'inner'],
      ]),
      dest,
    );
    expect(readFileSync(join(dest, 'file'), 'utf8')).toBe('mine');
    expect(readFileSync(join(dest, 'dir/inner'), 'utf8')).toBe('inner');
    expect(getAttributeSync(join(dest, 'dir'), 'trusted.overlay.opaque')?.toString()).toBe('y');
  });

  it('reads what GNU tar writes: GNU long names and PAX extended attributes', async () => {
    const source = join(tmp, 'source');
    const longName = `${'n'.repeat(120)}/${'m'.repeat(120)}`;
    mkdirSync(join(source, 'n'.repeat(120)), { recursive: true });
    writeFileSync(join(source, longName), 'long');
    writeFileSync(join(source, 'caps'), 'caps');
    const capability = Buffer.from([1, 0, 0, 2, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    setAttributeSync(join(source, 'caps'), 'security.capability', capability);
    const gnu = execFileSync('tar', ['--format=gnu', '-C', source, '-cf', '-', '.'], { maxBuffer: 1 << 24 });
    await unpack(gnu, join(tmp, 'from-gnu'));
    expect(readFileSync(join(tmp, 'from-gnu', longName), 'utf8')).toBe('long');
    const pax = execFileSync('tar', ['--format=pax', '--xattrs', "--xattrs-include=*", '-C', source, '-cf', '-', '.'], {
      maxBuffer: 1 << 24,
    });
    await unpack(pax, join(tmp, 'from-pax'));
    expect(readFileSync(join(tmp, 'from-pax', longName), 'utf8')).toBe('long');
    expect(getAttributeSync(join(tmp, 'from-pax/caps'), 'security.capability')).toEqual(capability);
  });

  it('rejects truncated and corrupt archives with CORRUPT_ARCHIVE', async () => {
    const good = await packTar([
      [{ name: 'a' }, Buffer.alloc(10_000, 'a')],
      [{ name: 'b' }, 'b'],
    ]);
    // Cut inside a header or inside file data: refused.
    const cuts = [0, 100, 512 + 5000, 512 + 10_240 + 100];
    for (const [i, cut] of cuts.entries()) {
      await expect(unpack(good.subarray(0, cut), join(tmp, `cut${i}`))).rejects.toMatchObject({
        code: 'CORRUPT_ARCHIVE',
      });
    }
    // Cut cleanly between entries, as some producers end layers without the zero blocks: the
    // archive ends there (the layer's digest, not the reader, tells a short blob).
    await expect(unpack(good.subarray(0, 512 + 10_240), join(tmp, 'boundary1'))).resolves.toEqual({ entries: 1, size: 10_000 });
    await expect(unpack(good.subarray(0, 512 + 10_240 + 1024), join(tmp, 'boundary2'))).resolves.toEqual({ entries: 2, size: 10_001 });
    // Cut in the padding after an entry's content, or right after the content, as the docker
    // client ends a context with a Dockerfile from standard input: the archive ends there too.
    await expect(unpack(good.subarray(0, 512 + 10_000 + 100), join(tmp, 'padding1'))).resolves.toEqual({ entries: 1, size: 10_000 });
    await expect(unpack(good.subarray(0, 512 + 10_240 + 512 + 1), join(tmp, 'padding2'))).resolves.toEqual({ entries: 2, size: 10_001 });
    await expect(unpack(good.subarray(0, 512 + 9_999), join(tmp, 'data'))).rejects.toMatchObject({ code: 'CORRUPT_ARCHIVE' });
    const damaged = Buffer.from(good);
    damaged[512 + 10_240 + 3] ^= 0x20;
    await expect(unpack(damaged, join(tmp, 'damaged'))).rejects.toMatchObject({ code: 'CORRUPT_ARCHIVE' });
    await expect(unpack(gzipSync(good), join(tmp, 'gzip'))).rejects.toMatchObject({
      code: 'CORRUPT_ARCHIVE',
      hint: expect.stringContaining('gzip'),
    });
    const large = await packTar([[{ name: 'noise' }, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 251))]]);
    await expect(unpack(gzipSync(large), join(tmp, 'gzip2'))).rejects.toMatchObject({
      hint: expect.stringContaining('gzip'),
    });
    await expect(unpack(good, join(tmp, 'whole'))).resolves.toEqual({ entries: 2, size: 10_001 });
  });

  it('passes on an error of the input stream', async () => {
    const failing = new Readable({
      read() {
        this.destroy(new Error('network went away'));
      },
    });
    await expect(unpackLayer(failing, join(tmp, 'dest'))).rejects.toThrow('network went away');
  });

  it('stops with an AbortError when aborted, even while waiting for input', async () => {
    const head = await packTar([[{ name: 'a' }, 'a']]);
    const stalled = new Readable({ read() {} });
    stalled.push(head.subarray(0, 1024));
    const controller = new AbortController();
    const unpacking = unpackLayer(stalled, join(tmp, 'dest'), { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(unpacking).rejects.toMatchObject({ name: 'AbortError' });
    expect(stalled.destroyed).toBe(true);
    await expect(unpack(head, join(tmp, 'dest2'), AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
  });
});
