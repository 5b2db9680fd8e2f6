import type { Digest } from '../../cache/digest.js';
import type { Store } from '../../cache/store.js';

/*
 * Which repositories of which registry hold a blob, learnt from pulls and pushes: a push to
 * another repository of the same registry can then mount the blob instead of uploading it.
 * The table is Kiln's own addition to the store's index, created on first use.
 */
const ready = new WeakSet<Store>();

function table(store: Store): Store['db']['db'] {
  const db = store.db.db;
  if (!ready.has(store)) {
    db.exec('CREATE TABLE IF NOT EXISTS registry_blobs (digest TEXT NOT NULL, registry TEXT NOT NULL, repository TEXT NOT NULL, PRIMARY KEY (digest, registry, repository))');
    ready.add(store);
  }
  return db;
}

export function recordBlobSources(store: Store, registry: string, repository: string, digests: readonly Digest[]): void {
  const db = table(store);
  const stmt = db.prepare('INSERT OR IGNORE INTO registry_blobs (digest, registry, repository) VALUES (?, ?, ?)');
  store.db.transaction(() => {
    for (const d of digests) stmt.run(d, registry, repository);
  });
}

/** Other repositories of `registry` known to hold `digest`. */
export function blobSources(store: Store, registry: string, digest: Digest, except: string): string[] {
  const rows = table(store).prepare('SELECT repository FROM registry_blobs WHERE digest = ? AND registry = ? AND repository != ?').all(digest, registry, except) as { repository: string }[];
  return rows.map((r) => r.repository);
}
