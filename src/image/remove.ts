import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import type { Digest } from '../../cache/digest.js';
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
  for (const m of store.db.allManifests()) {
    if (m.digest === image.manifestDigest) continue;
    const other = await loadImage(store, m.digest);
    if (isBuiltOn(other, image)) return other;
  }
  return undefined;
}

/** Whether `image`'s layers start with all of `base`'s (and add more): it was built on it. */
function isBuiltOn(image: LocalImage, base: LocalImage): boolean {
  const own = base.config.rootfs.diff_ids;
  const ids = image.config.rootfs.diff_ids;
  return own.length > 0 && ids.length > own.length && own.every((d, i) => ids[i] === d);
}

/**
 * Nameless images that another image is built on: docker's intermediate images, which
 * `docker images` leaves out without -a (manifest digests).
 */
export async function intermediateImages(store: Store): Promise<Set<Digest>> {
  const named = new Set(store.db.allTags().map((t) => t.manifest));
  const images = await Promise.all(store.db.allManifests().map((m) => loadImage(store, m.digest)));
  return new Set(images.filter((base) => !named.has(base.manifestDigest) && images.some((other) => isBuiltOn(other, base))).map((i) => i.manifestDigest));
}

export interface PruneResult {
  untagged: string[];
  /** Image IDs (config digests) of the images removed. */
  deleted: string[];
}

/**
 * `docker image prune` through the Docker API: the images without a name (with `all`, every
 * image), created before `createdBefore` when given. A nameless image that a kept image is built
 * on stays, as docker keeps a dangling parent. Only records go, as with removeImage.
 */
export async function pruneImages(store: Store, options: { all: boolean; createdBefore?: number }): Promise<PruneResult> {
  const tags = new Map<string, string[]>();
  for (const t of store.db.allTags()) tags.set(t.manifest, [...(tags.get(t.manifest) ?? []), t.name]);
  const rows = store.db.allManifests();
  const images = new Map<Digest, LocalImage>();
  for (const m of rows) images.set(m.digest, await loadImage(store, m.digest));
  const doomed = new Set(
    rows
      .filter((m) => (options.all || !tags.has(m.digest)) && (options.createdBefore === undefined || m.created < options.createdBefore))
      .map((m) => m.digest),
  );
  // A candidate that an image staying is built on stays too.
  for (let changed = true; changed; ) {
    changed = false;
    for (const digest of doomed) {
      const image = images.get(digest)!;
      if ([...images.keys()].some((d) => !doomed.has(d) && isBuiltOn(images.get(d)!, image))) {
        doomed.delete(digest);
        changed = true;
      }
    }
  }
  const result: PruneResult = { untagged: [], deleted: [] };
  store.db.transaction(() => {
    for (const digest of doomed) {
      const names = tags.get(digest) ?? [];
      deleteTags(store, names);
      store.db.deleteManifest(digest);
      result.untagged.push(...names);
      result.deleted.push(images.get(digest)!.configDigest);
    }
  });
  return result;
}
