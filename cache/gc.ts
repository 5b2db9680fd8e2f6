/**
 * Disk usage and garbage collection. Stored images are roots: nothing an image needs (its
 * manifest, config, layer blobs and layer records) is ever collected. Cache records go by a
 * policy (all, older than, least recently used beyond a size); then layers and blobs that nothing
 * points to any more follow. Index rows go first, in one transaction, files after: a crash in
 * between leaves only files without rows, which the next collection removes.
 */
import { statfsSync } from 'node:fs';
import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { cacheMountInUse, cacheMountsDir } from './cachemounts.js';
import type { CacheMountRow, CacheRecordRow, LayerRow, ManifestRow } from './db.js';
import { type Digest, digestHex, isDigest } from './digest.js';
import { isErrno, removeAll } from './fsutil.js';
import { isAlive } from './lease.js';
import type { Store } from './store.js';
import { crashPoint } from './trace.js';

/** Unreferenced blobs younger than this may belong to work in progress (a pull, an export). */
const ORPHAN_GRACE_MS = 60 * 60 * 1000;

export interface UsageRecord {
  type: 'cache' | 'cache-mount' | 'context-files';
  id: string;
  description: string;
  /** Bytes on disk: the compressed blob plus the unpacked layer, or the cache directory. */
  size: number;
  lastUsed: number;
  /** Also needed by a stored image or another record: removing it frees nothing. */
  shared: boolean;
  reclaimable: boolean;
  inUse: boolean;
}

export interface Usage {
  records: UsageRecord[];
  /** Bytes of what stored images need. */
  images: number;
  reclaimable: number;
  total: number;
}

/**
 * Images no tag names (a build without -t, an image whose tag moved: docker's "dangling" images)
 * are garbage once they are older than this; younger ones may be a build's result that its
 * process has yet to tag, or that a script is about to use by ID (`ID=$(kiln build -q .)`).
 */
export const DANGLING_GRACE_MS = 60 * 60 * 1000;

export interface RootOptions {
  /**
   * Leave out untagged images last written before `before` (ms) and not in `keep`: they are
   * returned as `dangling`, and what only they need is collectable.
   */
  dangling?: { before: number; keep?: ReadonlySet<string> };
}

/** What stored images need: blobs and layer diff ids; with `dangling`, only tagged or young images. */
export async function imageRoots(store: Store, o: RootOptions = {}): Promise<{ blobs: Set<string>; layers: Set<string>; dangling: ManifestRow[] }> {
  const blobs = new Set<string>();
  const layers = new Set<string>();
  const manifests = new Map(store.db.allManifests().map((m) => [m.digest as string, m]));
  const tagged = new Set<string>(store.db.allTags().map((t) => t.manifest));
  const isRoot = (m: ManifestRow) =>
    !o.dangling || tagged.has(m.digest) || o.dangling.keep?.has(m.digest) === true || blobCreated(store, m.digest) >= o.dangling.before;
  // An index's platform manifests are needed as long as the index is.
  const queue = [...manifests.values()].filter(isRoot);
  const rooted = new Set<string>(queue.map((m) => m.digest));
  for (let m = queue.shift(); m !== undefined; m = queue.shift()) {
    blobs.add(m.digest);
    blobs.add(m.config);
    try {
      const manifest = await store.blobs.readJson<{ layers?: { digest: string }[]; manifests?: { digest: string }[] }>(m.digest);
      for (const l of manifest.layers ?? []) blobs.add(l.digest);
      for (const child of manifest.manifests ?? []) {
        blobs.add(child.digest);
        const row = manifests.get(child.digest);
        if (row && !rooted.has(row.digest)) {
          rooted.add(row.digest);
          queue.push(row);
        }
      }
      const config = await store.blobs.readJson<{ rootfs?: { diff_ids?: string[] } }>(m.config);
      for (const d of config.rootfs?.diff_ids ?? []) layers.add(d);
    } catch (err) {
      // A missing or corrupt image document is `kiln store verify`'s to report; collecting
      // must not fail because of it, and with the image unreadable its rows stay as they are.
      if (!(err instanceof Error)) throw err;
    }
  }
  return { blobs, layers, dangling: [...manifests.values()].filter((m) => !rooted.has(m.digest)) };
}

/** A layer's bytes on disk: its blob plus its unpacked directory as recorded when it was made. */
function layerBytes(l: LayerRow, unpacked: ReadonlyMap<string, number>): number {
  return l.blobSize + (unpacked.get(l.diffId) ?? 0);
}

/**
 * The build service's upload cache (src/daemon/file-cache.ts): `context-files/sha256/HEX`, each
 * content named by its checksum and touched when an upload relies on it, and
 * `context-files/variants/HEX-…`, copies with a context's metadata whose ctime moves with each link.
 */
export const CONTEXT_FILES_DIR = 'context-files';
/** Unused this long, an uploaded context file goes with a plain prune (the server sweeps at the same age). */
export const CONTEXT_FILES_MAX_AGE_MS = 24 * 3600 * 1000;

export async function contextFiles(store: Store): Promise<{ path: string; size: number; lastUsed: number }[]> {
  const out: { path: string; size: number; lastUsed: number }[] = [];
  for (const [sub, used] of [['sha256', 'mtimeMs'], ['variants', 'ctimeMs']] as const) {
    const dir = join(store.root, CONTEXT_FILES_DIR, sub);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) continue;
      throw err;
    }
    for (const name of names) {
      try {
        const st = await lstat(join(dir, name));
        out.push({ path: join(dir, name), size: st.size, lastUsed: st[used] });
      } catch (err) {
        // Swept meanwhile by the server: nothing to count.
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
  }
  return out;
}

/** Total size of a directory tree (apparent sizes of regular files and links). */
export async function treeSize(path: string): Promise<number> {
  let total = 0;
  let names: string[];
  try {
    names = await readdir(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return 0;
    throw err;
  }
  for (const name of names) {
    const p = join(path, name);
    const st = await lstat(p);
    total += st.isDirectory() ? 4096 + (await treeSize(p)) : st.size;
  }
  return total;
}

export async function diskUsage(store: Store): Promise<Usage> {
  const roots = await imageRoots(store);
  const records: UsageRecord[] = [];
  const layers = new Map(store.db.allLayers().map((l) => [l.diffId as string, l]));
  const users = new Map<string, number>();
  const cache = store.db.allCache();
  for (const r of cache) if (r.diffId) users.set(r.diffId, (users.get(r.diffId) ?? 0) + 1);
  const layerSize = new Map<string, number>();
  const unpacked = store.db.layerUnpackedSizes();
  const sizeOf = async (l: LayerRow) => {
    let s = layerSize.get(l.diffId);
    if (s === undefined) {
      // Layers unpacked before their size was recorded are measured the slow way.
      s = unpacked.has(l.diffId) ? layerBytes(l, unpacked) : l.blobSize + (await treeSize(store.layerFs(l.diffId)));
      layerSize.set(l.diffId, s);
    }
    return s;
  };
  for (const r of cache) {
    const layer = r.diffId ? layers.get(r.diffId) : undefined;
    const size = layer ? await sizeOf(layer) : 0;
    const shared = r.diffId !== null && (roots.layers.has(r.diffId) || (users.get(r.diffId) ?? 0) > 1);
    records.push({ type: 'cache', id: r.key, description: r.description, size, lastUsed: r.lastUsed, shared, reclaimable: !shared, inUse: false });
  }
  for (const m of store.db.allCacheMounts()) {
    const inUse = cacheMountInUse(store, m.dir);
    const size = await treeSize(join(cacheMountsDir(store), m.dir));
    records.push({ type: 'cache-mount', id: m.dir, description: `cache mount id=${m.id}`, size, lastUsed: m.lastUsed, shared: false, reclaimable: !inUse, inUse });
  }
  const uploads = await contextFiles(store);
  if (uploads.length > 0) {
    const size = uploads.reduce((n, f) => n + f.size, 0);
    const lastUsed = Math.max(...uploads.map((f) => f.lastUsed));
    records.push({ type: 'context-files', id: 'contexts', description: `uploaded context files (${uploads.length})`, size, lastUsed, shared: false, reclaimable: true, inUse: false });
  }
  let images = 0;
  for (const d of roots.layers) {
    const l = layers.get(d);
    if (l) images += await sizeOf(l);
  }
  // A layer shared by several records counts once towards what pruning would free.
  const counted = new Set<string>();
  let reclaimable = 0;
  for (const r of records) {
    if (!r.reclaimable) continue;
    if (r.type === 'cache') {
      const row = cache.find((c) => c.key === r.id);
      if (!row?.diffId || counted.has(row.diffId)) continue;
      counted.add(row.diffId);
    }
    reclaimable += r.size;
  }
  const total = images + [...layerSize].filter(([d]) => !roots.layers.has(d)).reduce((n, [, s]) => n + s, 0) +
    records.filter((r) => r.type === 'cache-mount' || r.type === 'context-files').reduce((n, r) => n + r.size, 0);
  return { records, images, reclaimable, total };
}

export interface PruneOptions {
  /** Every cache record and unused cache mount, not only what no image shares. */
  all?: boolean;
  /** Only what was last used longer ago than this (ms). */
  olderThanMs?: number;
  /** Stop once what remains of the build cache is at most this many bytes (LRU first). */
  keepBytes?: number;
  /** Show what would go without removing it. */
  dryRun?: boolean;
  now?: number;
  /** Images kept even when untagged: the result of the build that runs this collection. */
  keepImages?: readonly string[];
}

export interface PruneResult {
  records: number;
  cacheMounts: number;
  /** Untagged images removed (see DANGLING_GRACE_MS). */
  images?: number;
  layers: number;
  blobs: number;
  /** Bytes freed on disk (blobs, unpacked layers, cache directories). */
  freed: number;
  /** Descriptions of what was removed, for the listing the CLI prints. */
  removed: string[];
}

/** Removes build cache by policy; never anything a stored image needs. */
export async function prune(store: Store, o: PruneOptions = {}): Promise<PruneResult> {
  const now = o.now ?? Date.now();
  const result: PruneResult = { records: 0, cacheMounts: 0, images: 0, layers: 0, blobs: 0, freed: 0, removed: [] };
  const oldEnough = (lastUsed: number) => o.olderThanMs === undefined || now - lastUsed >= o.olderThanMs;
  // Untagged images go too, once old enough, but not while another process works on the store:
  // its build may have written an image it is about to tag.
  const busy = liveWorkSince(store) !== undefined;
  const roots = await imageRoots(store, busy ? {} : { dangling: { before: Math.min(now - DANGLING_GRACE_MS, o.olderThanMs === undefined ? Infinity : now - o.olderThanMs), keep: new Set(o.keepImages ?? []) } });
  const layers = new Map(store.db.allLayers().map((l) => [l.diffId as string, l]));
  const unpacked = store.db.layerUnpackedSizes();

  // Records, least recently used first. Without --all a record whose layer an image needs stays:
  // removing it frees nothing and would cost the next build its cache hit.
  const cache = store.db.allCache();
  let remaining = o.keepBytes === undefined ? 0 : cacheBytes(cache, layers, roots.layers, unpacked);
  const victims: CacheRecordRow[] = [];
  for (const r of cache) {
    if (o.keepBytes !== undefined && remaining <= o.keepBytes) break;
    if (!oldEnough(r.lastUsed)) continue;
    const needed = r.diffId !== null && roots.layers.has(r.diffId);
    if (needed && !o.all) continue;
    victims.push(r);
    if (o.keepBytes !== undefined && r.diffId && !needed) {
      const l = layers.get(r.diffId);
      if (l) remaining -= layerBytes(l, unpacked);
    }
  }
  // Cache mounts hold what steps chose to keep: they go with --all, or when the records alone
  // could not bring the cache within --keep-storage.
  const mounts: CacheMountRow[] = [];
  const mountSizes = new Map<string, number>();
  if (o.keepBytes !== undefined) {
    for (const m of store.db.allCacheMounts()) {
      const size = await treeSize(join(cacheMountsDir(store), m.dir));
      mountSizes.set(m.dir, size);
      remaining += size;
    }
  }
  for (const m of store.db.allCacheMounts()) {
    if (!oldEnough(m.lastUsed) || cacheMountInUse(store, m.dir)) continue;
    if (o.all) mounts.push(m);
    else if (o.keepBytes !== undefined && remaining > o.keepBytes) {
      mounts.push(m);
      remaining -= mountSizes.get(m.dir) ?? 0;
    }
  }

  // Layers and blobs that nothing will point to once the victims are gone. Work of a live
  // process is protected: its new layers have no record yet.
  const keptKeys = new Set(victims.map((v) => v.key));
  const referenced = new Set<string>(roots.layers);
  for (const r of cache) if (!keptKeys.has(r.key) && r.diffId) referenced.add(r.diffId);
  const busySince = liveWorkSince(store);
  // While another process builds, its steps may be reading any layer (a cache hit it just had):
  // then only records go, and their layers wait for a quiet moment.
  const deadLayers = busySince !== undefined ? [] : [...layers.values()].filter((l) => !referenced.has(l.diffId));
  const liveLayerBlobs = new Set<string>(roots.blobs);
  for (const l of layers.values()) if (l.blob && !deadLayers.includes(l)) liveLayerBlobs.add(l.blob);
  const deadBlobs = new Set<string>();
  // A layer without a blob (never needed compressed) has only its directory to remove.
  for (const l of deadLayers) if (l.blob && !liveLayerBlobs.has(l.blob)) deadBlobs.add(l.blob);
  // Blobs recorded but used by nothing at all (converted copies, leftovers of a crash).
  for (const b of store.db.allBlobs()) {
    if (!liveLayerBlobs.has(b.digest) && !deadBlobs.has(b.digest) && now - blobCreated(store, b.digest) > ORPHAN_GRACE_MS) deadBlobs.add(b.digest);
  }

  for (const m of roots.dangling) {
    for (const b of [m.digest, m.config]) if (!liveLayerBlobs.has(b)) deadBlobs.add(b);
  }
  // Named by image ID (the config digest), as `kiln images` shows it.
  for (const m of roots.dangling) result.removed.push(`${m.config.slice(7, 19)}  untagged image`);
  for (const v of victims) result.removed.push(`${v.key.slice(7, 19)}  ${v.description}`);
  for (const m of mounts) result.removed.push(`${m.dir.slice(0, 12)}  cache mount id=${m.id}`);
  // Uploaded context files: those unused for a day (or for --filter's time), all with --all.
  const uploads = (await contextFiles(store)).filter((f) => (o.all ? oldEnough(f.lastUsed) : now - f.lastUsed >= (o.olderThanMs ?? CONTEXT_FILES_MAX_AGE_MS)));
  if (uploads.length > 0) result.removed.push(`contexts      ${uploads.length} uploaded context file${uploads.length === 1 ? '' : 's'}`);
  result.images = roots.dangling.length;
  result.records = victims.length;
  result.cacheMounts = mounts.length;
  result.layers = deadLayers.length;
  result.blobs = deadBlobs.size;
  if (o.dryRun) return result;

  store.db.transaction(() => {
    store.db.deleteCache(victims.map((v) => v.key));
    for (const m of roots.dangling) store.db.deleteManifest(m.digest);
    for (const l of deadLayers) store.db.deleteLayer(l.diffId);
    for (const b of deadBlobs) store.db.deleteBlob(b as Digest);
    for (const m of mounts) store.db.deleteCacheMount(m.dir);
    if (o.all) store.db.deleteStepsBefore(now + 1);
  });
  crashPoint('gc');
  for (const f of uploads) {
    await rm(f.path, { force: true });
    result.freed += f.size;
  }
  for (const l of deadLayers) {
    // The recorded size stands for the directory (no walk); layers unpacked before it was recorded are walked.
    const dir = join(store.layersDir, digestHex(l.diffId));
    const size = unpacked.get(l.diffId);
    if (size === undefined) result.freed += await removeTree(dir);
    else {
      await removeAll(dir);
      result.freed += size;
    }
  }
  for (const b of deadBlobs) result.freed += await removeTree(store.blobs.path(b as Digest));
  for (const m of mounts) result.freed += await removeTree(join(cacheMountsDir(store), m.dir));
  result.freed += await sweepOrphans(store, now);
  store.db.pruneChecksums();
  return result;
}

/** Bytes of build cache beyond what images need (blobs and unpacked layers): the figure `--keep-storage` bounds. */
function cacheBytes(cache: CacheRecordRow[], layers: Map<string, LayerRow>, imageLayers: Set<string>, unpacked: ReadonlyMap<string, number>): number {
  const seen = new Set<string>();
  let n = 0;
  for (const r of cache) {
    if (!r.diffId || seen.has(r.diffId) || imageLayers.has(r.diffId)) continue;
    seen.add(r.diffId);
    const l = layers.get(r.diffId);
    if (l) n += layerBytes(l, unpacked);
  }
  return n;
}

/** Start of the oldest work in progress of another live process, if any (ms). */
function liveWorkSince(store: Store): number | undefined {
  let since: number | undefined;
  for (const l of store.db.allLeases()) {
    if (l.pid === process.pid || !isAlive({ pid: l.pid, start: l.pidStart })) continue;
    since = Math.min(since ?? Infinity, l.created - 1000);
  }
  return since;
}

function blobCreated(store: Store, digest: Digest): number {
  return store.db.blobCreated(digest) ?? 0;
}

/** Layer directories and blob files with no row (left by a crash between the two), and links to nothing. */
async function sweepOrphans(store: Store, now: number): Promise<number> {
  let freed = 0;
  const layerIds = new Set(store.db.allLayers().map((l) => digestHex(l.diffId)));
  for (const name of await readdir(store.layersDir)) {
    if (!/^[a-f0-9]{64}$/.test(name) || layerIds.has(name)) continue;
    const st = await lstat(join(store.layersDir, name));
    if (now - st.mtimeMs < ORPHAN_GRACE_MS && liveWorkSince(store) !== undefined) continue;
    freed += await removeTree(join(store.layersDir, name));
  }
  const blobIds = new Set(store.db.allBlobs().map((b) => digestHex(b.digest)));
  for (const name of await readdir(store.blobs.dir)) {
    if (blobIds.has(name) || !isDigest(`sha256:${name}`)) continue;
    const st = await lstat(join(store.blobs.dir, name));
    // Blobs are written before their rows: a young one may be someone's work in progress.
    if (now - st.mtimeMs < ORPHAN_GRACE_MS) continue;
    freed += await removeTree(join(store.blobs.dir, name));
  }
  const linkDir = join(store.root, 'l');
  for (const name of await readdir(linkDir)) {
    const link = join(linkDir, name);
    try {
      await lstat(join(linkDir, `${name}/`));
    } catch (err) {
      // A link whose layer is gone: overlay options built from it would fail.
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) await rm(link, { force: true });
      else throw err;
    }
  }
  return freed;
}

async function removeTree(path: string): Promise<number> {
  let size = 0;
  try {
    const st = await lstat(path);
    size = st.isDirectory() ? await treeSize(path) : st.size;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return 0;
    throw err;
  }
  await removeAll(path);
  return size;
}

/** The automatic policy: the build cache may use this many bytes (KILN_GC_KEEP_STORAGE, else 10% of the disk, at most 10 GB). */
export async function defaultKeepBytes(store: Store, env: NodeJS.ProcessEnv = process.env): Promise<number | undefined> {
  const configured = env.KILN_GC_KEEP_STORAGE;
  if (configured !== undefined) {
    const n = parseSize(configured);
    return n === 0 ? undefined : n;
  }
  const fs = statfsSync(store.root);
  return Math.min(10e9, Math.floor(fs.blocks * fs.bsize * 0.1));
}

/**
 * Runs after a build: when the build cache outgrows the limit, removes least recently used
 * records until it fits. Skipped while another process has work in progress on the store.
 */
export async function autoGc(store: Store, o: { env?: NodeJS.ProcessEnv; keepImages?: readonly string[] } = {}): Promise<PruneResult | undefined> {
  const keep = await defaultKeepBytes(store, o.env);
  if (keep === undefined) return undefined;
  // Blobs plus unpacked layers: an upper bound of the build cache, in one query.
  if (store.db.storeBytes() <= keep) return undefined;
  if (liveWorkSince(store) !== undefined) return undefined;
  return prune(store, { keepBytes: keep, keepImages: o.keepImages });
}

/** Parses `512MB`, `2GiB`, `10g`, `1000` (bytes). Returns NaN when it is none of those. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$/i.exec(text);
  if (!m) return NaN;
  const power = ' kmgt'.indexOf(m[2]!.toLowerCase() || ' ');
  const base = m[3] ? 1024 : 1000;
  return Math.round(Number(m[1]) * base ** power);
}

/** Parses Go-style durations as docker's `until` filter takes them: `24h`, `90m`, `1h30m`, `7d`. */
export function parseDuration(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * units[m[2]!]!;
    matched += m[0].length;
  }
  return text.length > 0 && matched === text.length ? total : NaN;
}
