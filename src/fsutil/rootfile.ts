import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { secureJoinSync } from './securejoin.js';

export interface RootFileOptions {
  /** What the path is, for errors: `the Dockerfile "x"`, `the ignore file ".dockerignore"`. */
  what: string;
  maxBytes: number;
}

/**
 * Reads a regular file that a client named inside `root` (a build context on the server):
 * the path is resolved by secureJoin, as if `root` were `/`, and the file is opened with
 * O_NOFOLLOW, so a link swapped in after the resolution is refused rather than followed.
 * Returns undefined when nothing is there; a directory, a device, a loop of links or a file
 * over `maxBytes` is an error that names it.
 */
export function readFileInRoot(root: string, path: string, options: RootFileOptions): Buffer | undefined {
  let resolved: string;
  try {
    resolved = secureJoinSync(root, path);
  } catch (err) {
    if (err instanceof KilnError && err.code === 'TOO_MANY_LINKS') throw tooManyLinks(options.what);
    throw err;
  }
  let fd: number;
  try {
    fd = openSync(resolved, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return undefined;
    // The resolved path holds no link: one now is a link swapped in meanwhile.
    if (isErrno(err, 'ELOOP')) throw new KilnError('INVALID_PATH', `${capital(options.what)} changed into a symbolic link while it was read`);
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw new KilnError('INVALID_PATH', `${capital(options.what)} is a directory`);
    if (!st.isFile()) throw new KilnError('INVALID_PATH', `${capital(options.what)} is not a regular file`);
    if (st.size > options.maxBytes) throw new KilnError('FILE_TOO_LARGE', `${capital(options.what)} is larger than the server's limit of ${options.maxBytes} bytes`);
    const buf = Buffer.alloc(st.size);
    let done = 0;
    while (done < buf.length) {
      const n = readSync(fd, buf, done, buf.length - done, done);
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

function tooManyLinks(what: string): KilnError {
  return new KilnError('INVALID_PATH', `${capital(what)} goes through too many symbolic links`, { hint: 'A chain or a loop of links cannot be resolved' });
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
