import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import { findImage, loadImage, type LocalImage } from './local.js';
import { familiarName, normalizeName } from './reference.js';

export interface RemoveResult {
  untagged: string[];
  /** The image ID (config digest) when the image itself went. */
  deleted?: string;
}

/**
 * `kiln rmi`: by name, removes that tag, and the image with its last tag; by ID, the image and
 * its tags. Refuses (unless forced) to remove an image by ID that tags still name, or an image
 * that other images were built on (their layers start with all of its layers). Only records go:
 * the blobs and layers no image or cache record needs any more are garbage collection's.
 */
export async function removeImage(store: Store, ref: string, options: { force?: boolean } = {}): Promise<RemoveResult> {
  const image = await findImage(store, ref);
  if (!image) {
    throw new KilnError('IMAGE_UNKNOWN', `No such image "${ref}" in the store`, { hint: 'List images with "kiln images"' });
  }
  const tags = store.db.allTags().filter((t) => t.manifest === image.manifestDigest).map((t) => t.name);
  const byName = tags.includes(nameOf(ref) ?? '');
  if (byName && tags.length > 1) {
    deleteTags(store, [nameOf(ref)!]);
    return { untagged: [nameOf(ref)!] };
  }
  if (!byName && tags.length > 0 && !options.force) {
    throw new KilnError('IMAGE_IN_USE', `Cannot remove image "${ref}": it is tagged as ${tags.map((t) => `"${familiarName(t)}"`).join(', ')}`, {
      hint: `Remove the names with "kiln rmi NAME", or force it with "kiln rmi -f ${ref}"`,
    });
  }
  if (!options.force) {
    const child = await childImage(store, image);
    if (child) {
      const names = store.db.allTags().filter((t) => t.manifest === child.manifestDigest).map((t) => t.name);
      throw new KilnError('IMAGE_IN_USE', `Cannot remove image "${ref}": image ${child.configDigest.slice(7, 19)}${names.length ? ` (${names.map(familiarName).join(', ')})` : ''} is built on it`, {
        hint: `Remove that image first, or force it with "kiln rmi -f ${ref}": the images built on it keep their layers`,
      });
    }
  }
  store.db.transaction(() => {
    deleteTags(store, tags);
    store.db.deleteManifest(image.manifestDigest);
  });
  return { untagged: tags, deleted: image.configDigest };
}

function nameOf(ref: string): string | undefined {
  try {
    return normalizeName(ref);
  } catch (err) {
    // An image ID or prefix is not a name.
    if (err instanceof KilnError) return undefined;
    throw err;
  }
}

function deleteTags(store: Store, names: readonly string[]): void {
  store.db.transaction(() => {
    for (const n of names) store.db.deleteTag(n);
  });
}

async function childImage(store: Store, image: LocalImage): Promise<LocalImage | undefined> {
  const own = image.config.rootfs.diff_ids;
  if (own.length === 0) return undefined;
  for (const m of store.db.allManifests()) {
    if (m.digest === image.manifestDigest) continue;
    const other = await loadImage(store, m.digest);
    const ids = other.config.rootfs.diff_ids;
    if (ids.length > own.length && own.every((d, i) => ids[i] === d)) return other;
  }
  return undefined;
}
