import { existsSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BlobStore } from './blobs.js';
import { StoreDb, type LeaseRow } from './db.js';
import { type Digest, digestHex } from './digest.js';
import { isNoSpace, KilnError } from './errors.js';
import { fsyncDir, isErrno, randomId, removeAll } from './fsutil.js';
import { isAlive, selfIdentity } from './lease.js';
import { isMountPoint, mountsUnder, unmount } from './overlay.js';

/** The store's root: $KILN_ROOT, else /var/lib/kiln as root, else ~/.local/share/kiln. */
export function defaultStoreRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KILN_ROOT) return env.KILN_ROOT;
  if (process.getuid?.() === 0) return '/var/lib/kiln';
  return join(homedir(), '.local', 'share', 'kiln');
}

/** Cleans up one kind of leased work whose owner died (a container, say). */
export type LeaseCleaner = (target: string) => Promise<void>;

export interface Workspace {
  id: string;
  /** The directory that becomes the layer: `<dir>/fs` is the overlay upperdir. */
  dir: string;
  upper: string;
  work: string;
  /** An empty directory to mount the merged view on. */
  mnt: string;
}

/**
 * The embedded store: blobs, unpacked layers, the SQLite index and the leases that make every
 * piece of work in progress recoverable after a crash.
 */
export class Store {
  readonly root: string;
  readonly blobs: BlobStore;
  readonly db: StoreDb;
  readonly layersDir: string;
  readonly mntDir: string;
  private readonly cleaners = new Map<string, LeaseCleaner>();

  private constructor(root: string, db: StoreDb) {
    this.root = root;
    this.blobs = new BlobStore(root);
    this.db = db;
    this.layersDir = join(root, 'layers');
    this.mntDir = join(root, 'mnt');
  }

  static async open(root: string, options: { cleaners?: Record<string, LeaseCleaner> } = {}): Promise<Store> {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    const db = new StoreDb(join(root, 'kiln.db'));
    const store = new Store(root, db);
    for (const [kind, fn] of Object.entries(options.cleaners ?? {})) store.cleaners.set(kind, fn);
    // Every open pays for these (they exist after the first).
    store.blobs.init();
    for (const dir of [store.layersDir, store.mntDir, join(root, 'l')]) mkdirSync(dir, { recursive: true });
    await store.recover();
    return store;
  }

  close(): void {
    this.db.close();
  }

  /** Directory of an unpacked layer, usable as an overlay lowerdir. */
  layerFs(diffId: Digest): string {
    return join(this.layersDir, digestHex(diffId), 'fs');
  }

  /**
   * A short absolute path to a layer's directory, for overlay options that must fit in one page:
   * `<root>/l/<16 hex>` links to `layers/<hex>/fs` (Docker's overlay2 does the same).
   */
  async shortLink(diffId: Digest): Promise<string> {
    const hex = digestHex(diffId);
    const link = join(this.root, 'l', hex.slice(0, 16));
    const target = `../layers/${hex}/fs`;
    try {
      symlinkSync(target, link);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      const found = readlinkSync(link);
      if (found !== target) throw new KilnError('STORE_CORRUPT', `Layer link "${link}" points to "${found}", not "${target}"`);
    }
    return link;
  }

  hasLayerFs(diffId: Digest): boolean {
    return existsSync(this.layerFs(diffId));
  }

  /**
   * An empty, never-written directory to put under a chain of layers (relative to the layers
   * folder). `n` gives distinct ones: overlayfs refuses the same lower twice.
   */
  async emptyLayer(n = 0): Promise<string> {
    const dir = join(this.layersDir, n === 0 ? 'empty' : `empty-${n}`);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    return dir;
  }

  // ---- leases -------------------------------------------------------------------------------

  lease(kind: string, target: string): string {
    const id = randomId();
    const me = selfIdentity();
    this.db.addLease({ id, pid: me.pid, pidStart: me.start, kind, target });
    return id;
  }

  release(id: string): void {
    try {
      this.db.removeLease(id);
    } catch (err) {
      // A full disk cannot take even this delete. The row stays, naming a process that is gone
      // once this one exits, and the next start's recovery removes it; the error that matters
      // is the one that filled the disk, which this must not replace.
      if (!isNoSpace(err)) throw err;
    }
  }

  /** Runs `fn` with work recorded under a lease; the lease goes when `fn` settles. */
  async withLease<T>(kind: string, target: string, fn: () => Promise<T>): Promise<T> {
    const id = this.lease(kind, target);
    try {
      return await fn();
    } finally {
      this.release(id);
    }
  }

  /**
   * Cleans what dead owners left: their containers, mounts and temporary directories. Work of
   * live processes (another CLI, a server) is never touched.
   */
  async recover(): Promise<void> {
    const leases = this.db.allLeases();
    const dead = leases.filter((l) => !isAlive({ pid: l.pid, start: l.pidStart }));
    // Containers first, then mounts, then directories: each step frees what the next removes.
    const order = (l: LeaseRow) => (l.kind === 'mount' ? 1 : l.kind === 'dir' ? 2 : 0);
    dead.sort((a, b) => order(a) - order(b));
    for (const l of dead) {
      await this.cleanLease(l);
      this.db.removeLease(l.id);
    }
    // Steps a dead process was running: nobody need wait for them any more.
    for (const r of this.db.allRunning()) if (!isAlive({ pid: r.pid, start: r.pidStart })) this.db.releaseRun(r.key, { pid: r.pid, start: r.pidStart });
    await this.removeOrphanTemp();
  }

  private async cleanLease(l: LeaseRow): Promise<void> {
    if (l.kind === 'mount') {
      for (const m of await mountsUnder(l.target)) await unmount(m);
      return;
    }
    if (l.kind === 'dir' || l.kind === 'file') {
      for (const m of await mountsUnder(l.target)) await unmount(m);
      await removeAll(l.target);
      return;
    }
    const cleaner = this.cleaners.get(l.kind);
    if (cleaner) await cleaner(l.target);
  }

  /** Temp files named with a dead pid (written before their lease could be recorded). */
  private async removeOrphanTemp(): Promise<void> {
    const tmp = join(this.root, 'tmp');
    let names: string[];
    try {
      names = readdirSync(tmp);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    for (const name of names) {
      const pid = Number(name.split('-')[1]);
      if (!Number.isInteger(pid) || pid === process.pid) continue;
      try {
        await stat(`/proc/${pid}`);
      } catch {
        // The owner is gone: nothing will ever finish this file.
        await removeAll(join(tmp, name));
      }
    }
  }

  // ---- workspaces ---------------------------------------------------------------------------

  /** A new leased workspace for one step: upper, work and mount directories. */
  async createWorkspace(): Promise<Workspace & { leases: string[] }> {
    const id = randomId();
    const dir = join(this.layersDir, `.work-${process.pid}-${id}`);
    const mnt = join(this.mntDir, id);
    const leases = [this.lease('dir', dir), this.lease('dir', mnt)];
    mkdirSync(join(dir, 'fs'), { recursive: true, mode: 0o755 });
    mkdirSync(join(dir, 'work'), { recursive: true });
    mkdirSync(mnt, { recursive: true });
    return { id, dir, upper: join(dir, 'fs'), work: join(dir, 'work'), mnt, leases };
  }

  /** Unmounts and removes a workspace, then drops its leases. */
  async disposeWorkspace(ws: Workspace & { leases: string[] }): Promise<void> {
    if (await isMountPoint(ws.mnt)) await unmount(ws.mnt);
    rmSync(ws.mnt, { recursive: true, force: true });
    // Gone already when it became a layer; otherwise it may hold a whole step's output.
    if (existsSync(ws.dir)) await removeAll(ws.dir);
    for (const l of ws.leases) this.release(l);
  }

  /**
   * Makes a workspace's upper directory the layer `diffId`. When another build committed the same
   * layer first, ours is dropped: equal diff ids are equal content. `unpackedSize` (the layer's
   * uncompressed tar size) is recorded on the layer's row, for GC's measure of the store.
   */
  async commitLayerDir(ws: Workspace, diffId: Digest, unpackedSize?: number): Promise<void> {
    rmSync(ws.work, { recursive: true, force: true });
    const target = join(this.layersDir, digestHex(diffId));
    if (unpackedSize !== undefined) this.db.setLayerUnpackedSize(diffId, unpackedSize);
    if (existsSync(target)) {
      await removeAll(ws.dir);
      return;
    }
    try {
      renameSync(ws.dir, target);
    } catch (err) {
      if (!isErrno(err, 'ENOTEMPTY') && !isErrno(err, 'EEXIST')) throw err;
      await removeAll(ws.dir);
      return;
    }
    await fsyncDir(this.layersDir);
  }
}
