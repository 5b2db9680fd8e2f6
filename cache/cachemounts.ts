/**
 * Persistent directories for `RUN --mount=type=cache`: `cache-mounts/<name>/`, named by the
 * mount's id, kept between builds, listed by `kiln du` and removed by `kiln prune`. Who uses one
 * right now is recorded as a lease, so that sharing modes hold across processes on one store.
 */
import { chmod, chown, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, digestOf } from './digest.js';
import { KilnError } from './errors.js';
import { isErrno, randomId } from './fsutil.js';
import { isAlive, selfIdentity } from './lease.js';
import type { Store } from './store.js';

export const CACHE_MOUNT_LEASE = 'cache-mount';

export type Sharing = 'shared' | 'private' | 'locked';

export interface CacheMountOptions {
  id: string;
  sharing: Sharing;
  mode: number;
  uid: number;
  gid: number;
  /** Fills a new cache directory (given as its argument) before first use. */
  seed?: (dir: string) => Promise<void>;
  signal?: AbortSignal;
}

export interface AcquiredCacheMount {
  dir: string;
  release(): void;
}

export function cacheMountsDir(store: Store): string {
  return join(store.root, 'cache-mounts');
}

/** A cache directory for one step, under a lease that says it is in use and by whom. */
export async function acquireCacheMount(store: Store, o: CacheMountOptions): Promise<AcquiredCacheMount> {
  const base = digestHex(digestOf(o.id)).slice(0, 32);
  let name: string | undefined;
  let lease: string | undefined;
  for (let attempt = 0; name === undefined; attempt++) {
    o.signal?.throwIfAborted();
    const taken = tryTake(store, base, o.sharing);
    if (taken) {
      ({ name, lease } = taken);
      break;
    }
    // `locked`: another step (here or in another process) holds it; wait for it to finish.
    await new Promise((r) => setTimeout(r, Math.min(200, 20 * (attempt + 1))));
  }
  const dir = join(cacheMountsDir(store), name);
  try {
    await ensureDir(dir, { ...o, tempPath: store.blobs.tempPath('cachemount') });
    store.db.putCacheMount(name, o.id);
  } catch (err) {
    store.release(lease!);
    throw err;
  }
  return { dir, release: () => store.release(lease!) };
}

/** Claims a cache directory under a lease in one write transaction, or returns undefined to wait. */
function tryTake(store: Store, base: string, sharing: Sharing): { name: string; lease: string } | undefined {
  const me = selfIdentity();
  return store.db.transaction(() => {
    const busy = (name: string) =>
      store.db
        .allLeases()
        .some((l) => l.kind === CACHE_MOUNT_LEASE && l.target === name && isAlive({ pid: l.pid, start: l.pidStart }));
    let name = base;
    if (sharing === 'locked' && busy(base)) return undefined;
    if (sharing === 'private') {
      for (let n = 1; busy(name); n++) name = `${base}-${n}`;
    }
    const id = randomId();
    store.db.addLease({ id, pid: me.pid, pidStart: me.start, kind: CACHE_MOUNT_LEASE, target: name });
    return { name, lease: id };
  }, { immediate: true });
}

async function ensureDir(dir: string, o: CacheMountOptions & { tempPath: string }): Promise<void> {
  try {
    await stat(dir);
    return;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  await mkdir(join(dir, '..'), { recursive: true, mode: 0o700 });
  // Built in tmp/ (same filesystem) and renamed: a crash never leaves a half-seeded cache in
  // use, and recovery removes temp files of dead processes.
  const tmp = o.tempPath;
  try {
    await mkdir(tmp, { mode: 0o755 });
    if (o.seed) await o.seed(tmp);
    await chmod(tmp, o.mode);
    await chown(tmp, o.uid, o.gid);
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Two shared users created it at once: theirs is as good as ours.
    if (isErrno(err, 'ENOTEMPTY') || isErrno(err, 'EEXIST')) return;
    if (err instanceof KilnError) throw err;
    throw new KilnError('CACHE_MOUNT_FAILED', `Cannot create the cache directory for id "${o.id}": ${(err as Error).message}`, { cause: err });
  }
}

/** Whether a live process uses the cache directory `name` right now. */
export function cacheMountInUse(store: Store, name: string): boolean {
  return store.db
    .allLeases()
    .some((l) => l.kind === CACHE_MOUNT_LEASE && l.target === name && isAlive({ pid: l.pid, start: l.pidStart }));
}
