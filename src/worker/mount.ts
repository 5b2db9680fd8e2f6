import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayerRow } from '../../cache/db.js';
import { ensureLayerFs } from '../../cache/layers.js';
import { mountOverlay, unmount } from '../../cache/overlay.js';
import { randomId } from '../../cache/fsutil.js';
import type { Store } from '../../cache/store.js';

/**
 * Mounts a chain of layers on `target`: with `upper`, a writable view whose changes land there;
 * without, a read-only view. An empty layer at the bottom keeps at least two lowers, which a
 * read-only overlay needs, and gives FROM scratch a root.
 */
export async function mountLayers(store: Store, layers: readonly LayerRow[], target: string, rw?: { upper: string; work: string }, signal?: AbortSignal): Promise<void> {
  for (const l of layers) await ensureLayerFs(store, l.diffId, signal);
  // overlayfs refuses a directory twice. A lower repeat of a layer changes nothing in the merged
  // view (its copy above shows or hides every path it has), so only the topmost is kept.
  const lower: string[] = [];
  for (const l of [...layers].reverse()) {
    const link = await store.shortLink(l.diffId);
    if (!lower.includes(link)) lower.push(link);
  }
  lower.push(await store.emptyLayer());
  if (!rw && lower.length === 1) lower.push(await store.emptyLayer(1));
  await mountOverlay(target, { lower, upper: rw?.upper, work: rw?.work });
}

/** Runs `fn` with a read-only view of `layers` mounted, under a lease; unmounts after. */
export async function withReadOnlyView<T>(store: Store, layers: readonly LayerRow[], fn: (root: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const mnt = join(store.mntDir, `ro-${randomId()}`);
  return store.withLease('dir', mnt, async () => {
    await mkdir(mnt, { recursive: true });
    try {
      await mountLayers(store, layers, mnt, undefined, signal);
      try {
        return await fn(mnt);
      } finally {
        await unmount(mnt);
      }
    } finally {
      await rm(mnt, { recursive: true, force: true });
    }
  });
}
