import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { dirname } from 'node:path';

/** A short random id for temporary names. */
export function randomId(bytes = 8): string {
  return randomBytes(bytes).toString('hex');
}

/*
 * Small metadata calls (open, close, mkdir, rename, stat, a small read) are made synchronously on
 * the paths every build takes: an awaited call of fs/promises is a round trip to libuv's thread
 * pool, ~120-180 us on a 2-vCPU VM against 3-9 us for the call itself, and a build makes
 * hundreds. fsync stays asynchronous: on a disk it can wait for milliseconds, and a build service
 * should not hold every other build's progress meanwhile.
 */

/**
 * A file's content: a regular file of at most `syncLimit` bytes read with synchronous calls,
 * anything else (a pipe given as `-f <(...)`, a fifo, a directory, a large file) by fs/promises,
 * which waits (or fails) without holding the event loop and with it every other build of a build
 * service. Opening does not block either way.
 */
export async function readFileQuickly(path: string, syncLimit = Infinity): Promise<Buffer> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (st.isFile() && st.size <= syncLimit) return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
  return readFile(path);
}

/** fsync(2) of an open descriptor, off the event loop. */
export function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
}

/** fsync a file or a directory by its path (a directory, so that a rename inside it is durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fd = openSync(path, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

export const fsyncDir = fsyncPath;

/** Writes `data` to `path` atomically: temp file beside it, fsync, rename. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${randomId(4)}`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeFileSync(fd, data);
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** Whether the filesystem holding `path` has less than 1 MiB left for an ordinary writer. */
export async function diskFull(path: string): Promise<boolean> {
  const s = statfsSync(path);
  return s.bavail * s.bsize < 1024 * 1024;
}

/**
 * Removes a tree, as `rm(path, { recursive: true, force: true })` does, also when it is nested
 * deeper than PATH_MAX: Node names every file by its whole path and fails there with
 * ENAMETOOLONG, which left a failed unpack's directory that every later command tripped over.
 * GNU rm walks with openat and has no such limit; it stays on the tree's file system.
 */
export async function removeAll(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (err) {
    if (!isErrno(err, 'ENAMETOOLONG')) throw err;
    await new Promise<void>((resolve, reject) => {
      execFile('rm', ['-rf', '--one-file-system', '--', path], (error, _stdout, stderr) => {
        if (error) reject(new Error(`Cannot remove "${path}": ${stderr.trim() || error.message}`, { cause: err }));
        else resolve();
      });
    });
  }
}
