import { execFileSync } from 'node:child_process';
import { chownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statEntry } from '../../cache/syscalls.js';

/** What the layer writer takes from a stat, the slow way: Node's lstat with BigInts. */
function expected(path: string) {
  const st = lstatSync(path, { bigint: true });
  const q = st.mtimeNs / 1_000_000_000n;
  const mtime = Number(st.mtimeNs % 1_000_000_000n !== 0n && st.mtimeNs < 0n ? q - 1n : q);
  const rdev = st.rdev;
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    mtime,
    nlink: Number(st.nlink),
    rdevMajor: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
    rdevMinor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
  };
}

describe('statEntry (statx through libc)', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-statx-'));
    writeFileSync(join(dir, 'file'), 'x'.repeat(12345));
    chownSync(join(dir, 'file'), 3_000_000, 3_000_001);
    linkSync(join(dir, 'file'), join(dir, 'hard'));
    mkdirSync(join(dir, 'dir'), { mode: 0o2755 });
    symlinkSync('file', join(dir, 'link'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    execFileSync('mknod', [join(dir, 'null'), 'c', '1', '3']);
    execFileSync('mknod', [join(dir, 'whiteout'), 'c', '0', '0']);
    execFileSync('mknod', [join(dir, 'block'), 'b', '259', '300']);
    writeFileSync(join(dir, 'old'), '');
    execFileSync('touch', ['-d', '1960-01-01 00:00:00.5 UTC', join(dir, 'old')]);
    writeFileSync(join(dir, 'future'), '');
    execFileSync('touch', ['-h', '-d', '2600-06-01 12:00:00.999999999', join(dir, 'future')]);
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads what lstat reports, for every kind of entry', () => {
    for (const name of ['file', 'hard', 'dir', 'link', 'fifo', 'null', 'whiteout', 'block', 'old', 'future']) {
      const got = statEntry(join(dir, name));
      expect(got, name).toBeDefined();
      const { id: _id, ...fields } = got!;
      expect(fields, name).toEqual(expected(join(dir, name)));
    }
    // Half a second into 1960: the whole second below, as tar wants it.
    expect(statEntry(join(dir, 'old'))!.mtime).toBe(-315619200);
  });

  it('names a file with several links the same under each name, and no other file so', () => {
    const file = statEntry(join(dir, 'file'))!;
    expect(file.id).not.toBe('');
    expect(statEntry(join(dir, 'hard'))!.id).toBe(file.id);
    expect(statEntry(join(dir, 'dir'))!.id).not.toBe(file.id);
  });

  it('leaves what it cannot read to the caller', () => {
    expect(statEntry(join(dir, 'missing'))).toBeUndefined();
  });
});
