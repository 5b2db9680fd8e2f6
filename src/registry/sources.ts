import type { Digest } from '../../cache/digest.js';
import type { Store } from '../../cache/store.js';

/*
 * Which repositories of which registry hold a blob, learnt from pulls and pushes: a push to
 * another repository of the same registry can then mount the blob instead of uploading it.
 * The rows live in the store's index (cache/db.ts, table registry_blobs).
 */
export function recordBlobSources(store: Store, registry: string, repository: string, digests: readonly Digest[]): void {
  store.db.recordBlobSources(registry, repository, digests);
}

/** Other repositories of `registry` known to hold `digest`. */
export function blobSources(store: Store, registry: string, digest: Digest, except: string): string[] {
  return store.db.blobSources(registry, digest, except);
}
