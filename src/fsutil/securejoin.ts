import { lstatSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';

const MAX_LINKS = 255;

/**
 * Resolves `path` inside `root` as a process chrooted at `root` would: symlinks are followed, but
 * absolute targets and `..` never leave the root. Components that do not exist are kept as they
 * are, so the result can be used to create them. Returns a host path under `root`. (Synchronous
 * calls, one or two per component: see the note in cache/fsutil.ts.)
 */
export async function secureJoin(root: string, path: string): Promise<string> {
  return secureJoinSync(root, path);
}

/** secureJoin for callers that cannot wait: the same resolution, the same calls. */
export function secureJoinSync(root: string, path: string): string {
  const pending = splitPath(path);
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '.' || part === '') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = posix.join(root, ...resolved, part);
    let isLink = false;
    try {
      isLink = lstatSync(candidate).isSymbolicLink();
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_LINKS) {
      throw new KilnError('TOO_MANY_LINKS', `Too many levels of symbolic links resolving "${path}"`);
    }
    const target = readlinkSync(candidate);
    if (target.startsWith('/')) resolved.length = 0;
    pending.unshift(...splitPath(target));
  }
  return posix.join(root, ...resolved);
}

function splitPath(p: string): string[] {
  return p.split('/').filter((s) => s !== '');
}
