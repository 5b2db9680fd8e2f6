import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/**
 * Makes the busybox base tarball once for the whole run and removes it afterwards: test workers
 * are reused and killed without running exit handlers, so they cannot clean up one of their own.
 */
export default function setup(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-base-'));
  const tar = join(dir, 'base.tar');
  execFileSync('bash', [resolve(import.meta.dirname, '../scripts/base-rootfs.sh'), tar]);
  process.env.KILN_TEST_BASE_TAR = tar;
  return () => rmSync(dir, { recursive: true, force: true });
}
