import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeAll } from '../../cache/fsutil.js';

describe('removeAll', () => {
  const base = mkdtempSync(join(tmpdir(), 'kiln-remove-all-'));
  // GNU rm removes a tree of any depth, if a test failed before removeAll did.
  afterAll(() => execFileSync('rm', ['-rf', base]));

  it('removes a tree nested deeper than PATH_MAX, which rm from node:fs cannot', async () => {
    const top = join(base, 'deep');
    // Made one level at a time from inside, as an unpack does: no single path names the bottom.
    // 24 levels of 200-byte names: 4824 bytes of path, beyond PATH_MAX (4096).
    execFileSync('bash', ['-c', 'mkdir "$1" && cd "$1" && for i in $(seq 24); do mkdir "$2" && cd "$2"; done && echo x > f', 'mk', top, 'd'.repeat(200)]);
    await expect(rm(top, { recursive: true, force: true })).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    await removeAll(top);
    expect(existsSync(top)).toBe(false);
  });

  it('removes an ordinary tree and ignores one that is not there', async () => {
    const top = join(base, 'plain');
    execFileSync('mkdir', ['-p', join(top, 'a/b')]);
    await removeAll(top);
    expect(existsSync(top)).toBe(false);
    await removeAll(top);
    rmSync(base, { recursive: true, force: true });
  });
});
