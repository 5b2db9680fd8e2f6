import type { Digest } from '../../cache/digest.js';
import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';
import { removeImage as removeStoredImage } from '../image/remove.js';
import { familiarName } from '../image/reference.js';

export interface ImageSummary {
  manifest: Digest;
  /** The image ID: the config digest. */
  id: Digest;
  /** Normalised names (`docker.io/library/busybox:latest`), sorted. */
  names: string[];
  /** Milliseconds since the epoch. */
  created: number;
  size: number;
}

/** Every image of the store, newest first, with its names. */
export function listImages(store: Store): ImageSummary[] {
  const names = new Map<string, string[]>();
  for (const t of store.db.allTags()) names.set(t.manifest, [...(names.get(t.manifest) ?? []), t.name]);
  return store.db.allManifests().map((m) => ({ manifest: m.digest, id: m.config, names: names.get(m.digest) ?? [], created: m.created, size: m.size }));
}

export type RemoveEvent = { untagged: string } | { deleted: Digest };

/** `docker rmi` through the store's one implementation, as the Docker API reports it. */
export async function removeImage(store: Store, ref: string, options: { force?: boolean } = {}): Promise<RemoveEvent[]> {
  const r = await removeStoredImage(store, ref, options);
  const events: RemoveEvent[] = r.untagged.map((n) => ({ untagged: familiarName(n) }));
  if (r.deleted) events.push({ deleted: r.deleted as Digest });
  return events;
}

/** Docker's image history: newest first, each layer-making step with its layer's size. */
export function imageHistory(image: LocalImage): { created: number; createdBy: string; size: number; comment: string; emptyLayer: boolean }[] {
  const out = [];
  let layer = 0;
  for (const h of image.config.history ?? []) {
    const empty = h.empty_layer === true;
    out.push({
      created: h.created ? Date.parse(h.created) : 0,
      createdBy: h.created_by ?? '',
      size: empty ? 0 : (image.layers[layer++]?.blobSize ?? 0),
      comment: h.comment ?? '',
      emptyLayer: empty,
    });
  }
  return out.reverse();
}
