import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import type { Digest } from './digest.js';
import { isNoSpace, noSpaceError } from './errors.js';

const SCHEMA_VERSION = 9;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY, size INTEGER NOT NULL, media_type TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
  diff_id TEXT PRIMARY KEY, blob TEXT NOT NULL, blob_size INTEGER NOT NULL, media_type TEXT NOT NULL,
  created INTEGER NOT NULL, unpacked_size INTEGER);
CREATE TABLE IF NOT EXISTS manifests (
  digest TEXT PRIMARY KEY, config TEXT NOT NULL, size INTEGER NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tags (name TEXT PRIMARY KEY, manifest TEXT NOT NULL, updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cache (
  key TEXT PRIMARY KEY, diff_id TEXT, created TEXT NOT NULL, last_used INTEGER NOT NULL, description TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checksums (
  path TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
  mtime_ns TEXT NOT NULL, ctime_ns TEXT NOT NULL, sum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checksum_dirs (
  path TEXT NOT NULL, rel TEXT NOT NULL, stamp TEXT NOT NULL, pieces TEXT NOT NULL, PRIMARY KEY (path, rel));
CREATE TABLE IF NOT EXISTS steps (
  identity TEXT PRIMARY KEY, key TEXT NOT NULL, ingredients TEXT NOT NULL, updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cache_mounts (
  dir TEXT PRIMARY KEY, id TEXT NOT NULL, created INTEGER NOT NULL, last_used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registry_blobs (
  digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL, PRIMARY KEY (digest, registry, repository));
CREATE TABLE IF NOT EXISTS running (
  key TEXT PRIMARY KEY, pid INTEGER NOT NULL, pid_start TEXT NOT NULL, started INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
  id TEXT PRIMARY KEY, pid INTEGER NOT NULL, pid_start TEXT NOT NULL, kind TEXT NOT NULL,
  target TEXT NOT NULL, created INTEGER NOT NULL);
`;

/** A layer whose compressed blob is in the store. */
export type BlobLayer = LayerRow & { blob: Digest };

/**
 * What the index holds as the blob of a layer without one (its column is NOT NULL): a digest no
 * content has. Not '': a Kiln from before layers could lack a blob takes the column for a digest,
 * and the path of '' is the blob directory itself, which its GC would remove whole; this one names
 * a file that does not exist (and its `store verify` says so).
 */
const NO_BLOB = `sha256:${'0'.repeat(64)}`;

/** A layer row's columns as LayerRow names them (NO_BLOB is null). */
const LAYER_COLUMNS = `diff_id AS diffId, NULLIF(blob, '${NO_BLOB}') AS blob, blob_size AS blobSize, media_type AS mediaType`;

export interface LayerRow {
  diffId: Digest;
  /**
   * The compressed blob, or null while the layer exists only as its directory: a step whose
   * layer no output image holds skips compressing it (the layer's diff id is the digest of its tar
   * all the same); ensureLayerBlob in cache/layers.ts makes the blob when something needs it.
   * Stored as NO_BLOB in the index.
   */
  blob: Digest | null;
  /** 0 while there is no blob. */
  blobSize: number;
  mediaType: string;
}

export interface CacheRow {
  key: string;
  diffId: Digest | null;
  created: string;
}

export interface TagRow {
  name: string;
  manifest: Digest;
}

export interface ManifestRow {
  digest: Digest;
  config: Digest;
  size: number;
  created: number;
}

export interface LeaseRow {
  id: string;
  pid: number;
  pidStart: string;
  kind: string;
  target: string;
  /** When the lease was taken (ms); absent when adding one. */
  created?: number;
}

/** A cache key some process is running now (cross-process sharing of a step while it runs). */
export interface RunningRow {
  key: string;
  pid: number;
  pidStart: string;
  started: number;
}

export interface StepRow {
  identity: string;
  key: string;
  /** JSON of the key's ingredients (solver/explain.ts). */
  ingredients: string;
}

export interface CacheMountRow {
  /** Directory name under `cache-mounts/`. */
  dir: string;
  /** The mount's id as written in `--mount=type=cache,id=…`. */
  id: string;
  created: number;
  lastUsed: number;
}

export interface CacheRecordRow {
  key: string;
  diffId: Digest | null;
  created: string;
  lastUsed: number;
  description: string;
}

export interface ChecksumMemo {
  dev: number;
  ino: number;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
  sum: string;
}

/**
 * A directory's checksum memo: a digest of its entries' stats, and the checksum text they gave
 * (JSON runs alternating with subdirectory names).
 */
export interface ChecksumDirMemo {
  path: string;
  rel: string;
  stamp: string;
  pieces: string;
}

/**
 * The bounds of the paths below `dir` in text order: they sort after `dir/` and before the same
 * text with its last "/" raised to "0", so a range scan of the primary key finds them all.
 */
function below(dir: string): [prefix: string, end: string] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return [prefix, `${prefix.slice(0, -1)}0`];
}

/** The store's index: one SQLite database in WAL mode. */
export class StoreDb {
  readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    // Two processes (a CLI and a server) may share the store: wait for the writer instead of failing.
    this.db.pragma('busy_timeout = 10000');
    this.migrate();
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version === SCHEMA_VERSION) return;
    this.db.transaction(() => {
      this.db.exec(SCHEMA);
      // Version 4 adds the running table (CREATE above). Version 3: the size of a layer's unpacked directory (NULL until it is unpacked, and for
      // layers unpacked before: those count by their blob alone).
      const columns = this.db.pragma('table_info(layers)') as { name: string }[];
      if (!columns.some((c) => c.name === 'unpacked_size')) this.db.exec('ALTER TABLE layers ADD COLUMN unpacked_size INTEGER');
      // Version 5: checksums cover extended attributes, which the memo rows of earlier versions
      // left out (a file's row stays valid while its stat does): they are computed afresh.
      // Version 6 adds checksum_dirs (CREATE above). Version 7: a layer's blob may be missing (a
      // layer kept as its directory only, LayerRow.blob null), written ''; version 8 writes NO_BLOB.
      if (version > 0 && version < 5) this.db.exec('DELETE FROM checksums');
      if (version === 7) this.db.prepare("UPDATE layers SET blob = ? WHERE blob = ''").run(NO_BLOB);
      // Version 9 makes registry_blobs (CREATE above) part of the schema; a store of an earlier
      // version may have it already, made on first use by the registry code.
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      // Immediate: two processes opening an old store at once take turns instead of racing.
    }).immediate();
  }

  close(): void {
    this.db.close();
  }

  /**
   * Each SQL text is compiled once per connection: preparing costs more than running most of these
   * queries, and a context checksum looks one memo up per file (50,000 times for a large context).
   */
  private statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * Which repositories of which registry hold a blob, learnt from pulls and pushes: a push to
   * another repository of the same registry can then mount the blob instead of uploading it.
   */
  recordBlobSources(registry: string, repository: string, digests: readonly Digest[]): void {
    const stmt = this.statement('INSERT OR IGNORE INTO registry_blobs (digest, registry, repository) VALUES (?, ?, ?)');
    this.transaction(() => {
      for (const d of digests) stmt.run(d, registry, repository);
    });
  }

  /** Other repositories of `registry` known to hold `digest`. */
  blobSources(registry: string, digest: Digest, except: string): string[] {
    const rows = this.statement('SELECT repository FROM registry_blobs WHERE digest = ? AND registry = ? AND repository != ?').all(digest, registry, except) as { repository: string }[];
    return rows.map((r) => r.repository);
  }

  /** How many rows each table of the index holds, for `kiln info`. */
  counts(): { images: number; tags: number; layers: number; blobs: number; cacheRecords: number; cacheMounts: number; leases: number } {
    const n = (table: string) => (this.statement(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { images: n('manifests'), tags: n('tags'), layers: n('layers'), blobs: n('blobs'), cacheRecords: n('cache'), cacheMounts: n('cache_mounts'), leases: n('leases') };
  }

  transaction<T>(fn: () => T, options: { immediate?: boolean } = {}): T {
    try {
      const tx = this.db.transaction(fn);
      // Immediate takes the write lock first: a read inside then cannot race another writer.
      return options.immediate ? tx.immediate() : tx();
    } catch (err) {
      throw isNoSpace(err) ? noSpaceError(this.db.name, 'writing the store index', err) : err;
    }
  }

  putBlob(digest: Digest, size: number, mediaType: string): void {
    this.statement('INSERT OR IGNORE INTO blobs (digest, size, media_type, created) VALUES (?, ?, ?, ?)')
      .run(digest, size, mediaType, Date.now());
  }

  allBlobs(): { digest: Digest; size: number; mediaType: string }[] {
    return this.statement('SELECT digest, size, media_type AS mediaType FROM blobs').all() as never;
  }

  /** Records a layer; a blob fills in the row of a layer recorded without one. */
  putLayer(layer: LayerRow): void {
    this.statement(
      'INSERT INTO layers (diff_id, blob, blob_size, media_type, created) VALUES (?, ?, ?, ?, ?) ' +
        'ON CONFLICT (diff_id) DO UPDATE SET blob = excluded.blob, blob_size = excluded.blob_size, media_type = excluded.media_type ' +
        `WHERE layers.blob = '${NO_BLOB}'`,
    ).run(layer.diffId, layer.blob ?? NO_BLOB, layer.blobSize, layer.mediaType, Date.now());
  }

  getLayer(diffId: Digest): LayerRow | undefined {
    return this.statement(`SELECT ${LAYER_COLUMNS} FROM layers WHERE diff_id = ?`).get(diffId) as LayerRow | undefined;
  }

  allLayers(): LayerRow[] {
    return this.statement(`SELECT ${LAYER_COLUMNS} FROM layers`).all() as LayerRow[];
  }

  putManifest(row: ManifestRow): void {
    this.statement('INSERT OR IGNORE INTO manifests (digest, config, size, created) VALUES (?, ?, ?, ?)')
      .run(row.digest, row.config, row.size, row.created);
  }

  getManifest(digest: Digest): ManifestRow | undefined {
    return this.statement('SELECT digest, config, size, created FROM manifests WHERE digest = ?').get(digest) as
      | ManifestRow
      | undefined;
  }

  allManifests(): ManifestRow[] {
    return this.statement('SELECT digest, config, size, created FROM manifests ORDER BY created DESC').all() as ManifestRow[];
  }

  setTag(name: string, manifest: Digest): void {
    this.statement('INSERT INTO tags (name, manifest, updated) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET manifest = excluded.manifest, updated = excluded.updated')
      .run(name, manifest, Date.now());
  }

  deleteTag(name: string): void {
    this.statement('DELETE FROM tags WHERE name = ?').run(name);
  }

  getTag(name: string): TagRow | undefined {
    return this.statement('SELECT name, manifest FROM tags WHERE name = ?').get(name) as TagRow | undefined;
  }

  allTags(): TagRow[] {
    return this.statement('SELECT name, manifest FROM tags ORDER BY name').all() as TagRow[];
  }

  /**
   * A cache record with its layer's row in one query (`layer` null for a step that made no layer,
   * undefined when the record's layer is gone). Unlike getCache it does not mark the record used:
   * the solver does that for all its hits at once (touchCache).
   */
  lookupCache(key: string): { row: CacheRow & { lastUsed: number }; layer: LayerRow | null | undefined } | undefined {
    const r = this.statement(
      `SELECT c.key, c.diff_id AS diffId, c.created, c.last_used AS lastUsed, l.diff_id AS layer, NULLIF(l.blob, '${NO_BLOB}') AS blob, l.blob_size AS blobSize, l.media_type AS mediaType ` +
        'FROM cache c LEFT JOIN layers l ON l.diff_id = c.diff_id WHERE c.key = ?',
    ).get(key) as (CacheRow & { lastUsed: number; layer: string | null; blob: Digest | null; blobSize: number | null; mediaType: string | null }) | undefined;
    if (!r) return undefined;
    const row = { key: r.key, diffId: r.diffId, created: r.created, lastUsed: r.lastUsed };
    if (r.diffId === null) return { row, layer: null };
    return { row, layer: r.layer === null ? undefined : { diffId: r.diffId, blob: r.blob, blobSize: r.blobSize!, mediaType: r.mediaType! } };
  }

  /** Marks cache records used now, in one transaction. */
  touchCache(keys: readonly string[], now = Date.now()): void {
    if (keys.length === 0) return;
    const stmt = this.statement('UPDATE cache SET last_used = ? WHERE key = ?');
    this.transaction(() => {
      for (const k of keys) stmt.run(now, k);
    });
  }

  getCache(key: string): CacheRow | undefined {
    const row = this.statement('SELECT key, diff_id AS diffId, created FROM cache WHERE key = ?').get(key) as CacheRow | undefined;
    if (row) this.statement('UPDATE cache SET last_used = ? WHERE key = ?').run(Date.now(), key);
    return row;
  }

  putCache(row: CacheRow & { description: string }): void {
    this.statement('INSERT OR REPLACE INTO cache (key, diff_id, created, last_used, description) VALUES (?, ?, ?, ?, ?)')
      .run(row.key, row.diffId, row.created, Date.now(), row.description);
  }

  allCache(): CacheRecordRow[] {
    return this.statement('SELECT key, diff_id AS diffId, created, last_used AS lastUsed, description FROM cache ORDER BY last_used')
      .all() as CacheRecordRow[];
  }

  deleteCache(keys: readonly string[]): void {
    const stmt = this.statement('DELETE FROM cache WHERE key = ?');
    this.transaction(() => {
      for (const k of keys) stmt.run(k);
    });
  }

  deleteLayer(diffId: Digest): void {
    this.statement('DELETE FROM layers WHERE diff_id = ?').run(diffId);
  }

  deleteBlob(digest: Digest): void {
    this.statement('DELETE FROM blobs WHERE digest = ?').run(digest);
  }

  deleteManifest(digest: Digest): void {
    this.statement('DELETE FROM manifests WHERE digest = ?').run(digest);
  }

  layerCreated(diffId: Digest): number | undefined {
    return (this.statement('SELECT created FROM layers WHERE diff_id = ?').get(diffId) as { created: number } | undefined)?.created;
  }

  blobCreated(digest: Digest): number | undefined {
    return (this.statement('SELECT created FROM blobs WHERE digest = ?').get(digest) as { created: number } | undefined)?.created;
  }

  /** Total size of recorded blobs: a cheap upper bound for the automatic collection's check. */
  blobBytes(): number {
    return (this.statement('SELECT COALESCE(SUM(size), 0) AS n FROM blobs').get() as { n: number }).n;
  }

  /** Bytes the store holds: recorded blobs plus unpacked layer directories (as recorded when made). */
  storeBytes(): number {
    return (
      this.statement('SELECT (SELECT COALESCE(SUM(size), 0) FROM blobs) + (SELECT COALESCE(SUM(unpacked_size), 0) FROM layers) AS n').get() as { n: number }
    ).n;
  }

  /** Records the size of a layer's unpacked directory, once it exists. */
  setLayerUnpackedSize(diffId: Digest, bytes: number): void {
    this.statement('UPDATE layers SET unpacked_size = ? WHERE diff_id = ?').run(bytes, diffId);
  }

  /** Unpacked sizes of layers whose directory was made since sizes are recorded. */
  layerUnpackedSizes(): Map<Digest, number> {
    const rows = this.statement('SELECT diff_id AS diffId, unpacked_size AS n FROM layers WHERE unpacked_size IS NOT NULL').all() as { diffId: Digest; n: number }[];
    return new Map(rows.map((r) => [r.diffId, r.n]));
  }

  /** Forgets the checksum memos of `dir` and of everything below it (a directory removed). */
  forgetChecksumsUnder(dir: string): void {
    const [prefix, end] = below(dir);
    const path = prefix.slice(0, -1);
    this.transaction(() => {
      this.statement('DELETE FROM checksums WHERE path = ? OR (path > ? AND path < ?)').run(path, prefix, end);
      this.statement('DELETE FROM checksum_dirs WHERE path = ? OR (path > ? AND path < ?)').run(path, prefix, end);
    });
  }

  /** Forgets memoised checksums of files and directories that no longer exist. */
  pruneChecksums(): void {
    const paths = this.statement('SELECT path FROM checksums').all() as { path: string }[];
    const dirs = this.statement('SELECT DISTINCT path FROM checksum_dirs').all() as { path: string }[];
    const del = this.statement('DELETE FROM checksums WHERE path = ?');
    const delDir = this.statement('DELETE FROM checksum_dirs WHERE path = ?');
    this.transaction(() => {
      for (const { path } of paths) if (!existsSync(path)) del.run(path);
      for (const { path } of dirs) if (!existsSync(path)) delDir.run(path);
    });
  }

  getStep(identity: string): StepRow | undefined {
    return this.statement('SELECT identity, key, ingredients FROM steps WHERE identity = ?').get(identity) as StepRow | undefined;
  }

  putStep(row: StepRow): void {
    this.statement('INSERT OR REPLACE INTO steps (identity, key, ingredients, updated) VALUES (?, ?, ?, ?)')
      .run(row.identity, row.key, row.ingredients, Date.now());
  }

  /** Explanation records not updated since `before` (ms): they only explain, so they age out. */
  deleteStepsBefore(before: number): void {
    this.statement('DELETE FROM steps WHERE updated < ?').run(before);
  }

  getCacheMount(dir: string): CacheMountRow | undefined {
    return this.statement('SELECT dir, id, created, last_used AS lastUsed FROM cache_mounts WHERE dir = ?').get(dir) as CacheMountRow | undefined;
  }

  putCacheMount(dir: string, id: string): void {
    this.statement('INSERT INTO cache_mounts (dir, id, created, last_used) VALUES (?, ?, ?, ?) ON CONFLICT(dir) DO UPDATE SET last_used = excluded.last_used')
      .run(dir, id, Date.now(), Date.now());
  }

  allCacheMounts(): CacheMountRow[] {
    return this.statement('SELECT dir, id, created, last_used AS lastUsed FROM cache_mounts ORDER BY last_used').all() as CacheMountRow[];
  }

  deleteCacheMount(dir: string): void {
    this.statement('DELETE FROM cache_mounts WHERE dir = ?').run(dir);
  }

  getChecksum(path: string): ChecksumMemo | undefined {
    return this.statement('SELECT dev, ino, size, mtime_ns AS mtimeNs, ctime_ns AS ctimeNs, sum FROM checksums WHERE path = ?')
      .get(path) as ChecksumMemo | undefined;
  }

  /**
   * The memoised checksums of the entries directly in `dir`, in one query: a context checksum
   * reads them for a directory whose stamp changed, and a thousand single lookups cost far more
   * than one range scan of the primary key.
   */
  checksumsIn(dir: string): Map<string, ChecksumMemo> {
    const [prefix, end] = below(dir);
    // Those with no "/" after the prefix are its own entries.
    const rows = this.statement('SELECT path, dev, ino, size, mtime_ns, ctime_ns, sum FROM checksums WHERE path > ? AND path < ? AND instr(substr(path, ?), \'/\') = 0')
      .raw(true)
      .all(prefix, end, prefix.length + 1) as [string, number, number, number, string, string, string][];
    const memos = new Map<string, ChecksumMemo>();
    for (const [path, dev, ino, size, mtimeNs, ctimeNs, sum] of rows) memos.set(path, { dev, ino, size, mtimeNs, ctimeNs, sum });
    return memos;
  }

  /** A directory's memo for the selection path `rel` (src/sources/checksum.ts). */
  getChecksumDir(path: string, rel: string): ChecksumDirMemo | undefined {
    return this.statement('SELECT path, rel, stamp, pieces FROM checksum_dirs WHERE path = ? AND rel = ?').get(path, rel) as ChecksumDirMemo | undefined;
  }

  /** Memo rows of files and of directories, in one transaction. */
  putChecksums(rows: (ChecksumMemo & { path: string })[], dirs: readonly ChecksumDirMemo[] = []): void {
    if (rows.length === 0 && dirs.length === 0) return;
    const stmt = this.statement(
      'INSERT OR REPLACE INTO checksums (path, dev, ino, size, mtime_ns, ctime_ns, sum) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    const dirStmt = this.statement('INSERT OR REPLACE INTO checksum_dirs (path, rel, stamp, pieces) VALUES (?, ?, ?, ?)');
    this.transaction(() => {
      for (const r of rows) stmt.run(r.path, r.dev, r.ino, r.size, r.mtimeNs, r.ctimeNs, r.sum);
      for (const d of dirs) dirStmt.run(d.path, d.rel, d.stamp, d.pieces);
    });
  }

  /**
   * Claims the run of a cache key for a process: true when it was free, or held by `dead` (which
   * the caller found gone), and is now this owner's. Atomic across processes without a
   * transaction: an insert that does nothing on conflict, then a compare-and-swap on the owner.
   */
  claimRun(key: string, owner: { pid: number; start: string }, dead?: RunningRow): boolean {
    if (dead) {
      return this.statement('UPDATE running SET pid = ?, pid_start = ?, started = ? WHERE key = ? AND pid = ? AND pid_start = ?')
        .run(owner.pid, owner.start, Date.now(), key, dead.pid, dead.pidStart).changes === 1;
    }
    return this.statement('INSERT INTO running (key, pid, pid_start, started) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO NOTHING')
      .run(key, owner.pid, owner.start, Date.now()).changes === 1;
  }

  /** The process running a cache key now, if any. */
  getRunning(key: string): RunningRow | undefined {
    return this.statement('SELECT key, pid, pid_start AS pidStart, started FROM running WHERE key = ?').get(key) as RunningRow | undefined;
  }

  allRunning(): RunningRow[] {
    return this.statement('SELECT key, pid, pid_start AS pidStart, started FROM running').all() as RunningRow[];
  }

  releaseRun(key: string, owner: { pid: number; start: string }): void {
    this.statement('DELETE FROM running WHERE key = ? AND pid = ? AND pid_start = ?').run(key, owner.pid, owner.start);
  }

  addLease(row: LeaseRow): void {
    this.statement('INSERT INTO leases (id, pid, pid_start, kind, target, created) VALUES (?, ?, ?, ?, ?, ?)')
      .run(row.id, row.pid, row.pidStart, row.kind, row.target, Date.now());
  }

  removeLease(id: string): void {
    this.statement('DELETE FROM leases WHERE id = ?').run(id);
  }

  allLeases(): (LeaseRow & { created: number })[] {
    return this.statement('SELECT id, pid, pid_start AS pidStart, kind, target, created FROM leases').all() as (LeaseRow & { created: number })[];
  }
}
