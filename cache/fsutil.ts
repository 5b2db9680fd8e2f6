import { randomBytes } from 'node:crypto';
import { open, rename, rm, mkdir, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';

/** A short random id for temporary names. */
export function randomId(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

/** fsync a file or a directory by its path (a directory, so that a rename inside it is durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export const fsyncDir = fsyncPath;

/** Writes `data` to `path` atomically: temp file beside it, fsync, rename. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${randomId(4)}`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** Whether the filesystem holding `path` has less than 1 MiB left for an ordinary writer. */
export async function diskFull(path: string): Promise<boolean> {
  const s = await statfs(path);
  return s.bavail * s.bsize < 1024 * 1024;
}
