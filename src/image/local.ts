import type { BlobLayer, LayerRow } from '../../cache/db.js';
import { type Digest, isDigest, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import { crashPoint } from '../../cache/trace.js';
import type { ImageConfig } from '../../solver/graph.js';
import { MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, documentMediaType, isManifestType, type Manifest } from './oci.js';
import { normalizeName } from './reference.js';

/** An image in the local store. */
export interface LocalImage {
  manifestDigest: Digest;
  manifest: Manifest;
  configDigest: Digest;
  config: ImageConfig;
  layers: LayerRow[];
}

/**
 * Finds an image by name (`acc/app:1`), by image ID (`sha256:…` config digest or a unique hex
 * prefix of it) or by manifest digest.
 */
export async function findImage(store: Store, ref: string): Promise<LocalImage | undefined> {
  const manifest = findManifestDigest(store, ref);
  return manifest === undefined ? undefined : loadImage(store, manifest);
}

export async function getImage(store: Store, ref: string): Promise<LocalImage> {
  const img = await findImage(store, ref);
  if (!img) {
    throw new KilnError('IMAGE_UNKNOWN', `No such image "${ref}" in the store`, { hint: 'List images with "kiln images"; import one with "kiln import"' });
  }
  return img;
}

function findManifestDigest(store: Store, ref: string): Digest | undefined {
  const hexPrefix = /^(sha256:)?([a-f0-9]{12,64})$/.exec(ref);
  if (hexPrefix) {
    const prefix = `sha256:${hexPrefix[2]}`;
    const byConfig = store.db.allManifests().filter((m) => m.config.startsWith(prefix) || m.digest.startsWith(prefix));
    if (byConfig.length === 1) return byConfig[0]!.digest;
    if (byConfig.length > 1 && isDigest(ref)) return byConfig.find((m) => m.config === ref || m.digest === ref)?.digest;
    if (hexPrefix[1] !== undefined) return undefined;
  }
  let name: string;
  try {
    name = normalizeName(ref);
  } catch (err) {
    if (err instanceof KilnError) return undefined;
    throw err;
  }
  return store.db.getTag(name)?.manifest;
}

export async function loadImage(store: Store, manifestDigest: Digest): Promise<LocalImage> {
  const manifest = await store.blobs.readJson<Manifest>(manifestDigest);
  const configDigest = parseDigest(manifest.config.digest);
  const config = await store.blobs.readJson<ImageConfig>(configDigest);
  const layers = config.rootfs.diff_ids.map((diffId, i) => {
    const row = store.db.getLayer(diffId);
    if (!row) throw new KilnError('LAYER_UNKNOWN', `Layer ${i + 1} ("${diffId}") of image "${manifestDigest}" is not in the store`);
    return row;
  });
  return { manifestDigest, manifest, configDigest, config, layers };
}

/**
 * Writes config and manifest blobs and records the image. Layers must be stored already, or be
 * remote layers of an imported cache, which are downloaded first: an image in the store is whole.
 */
export async function writeImage(store: Store, config: ImageConfig, layers: readonly LayerRow[], options: { signal?: AbortSignal } = {}): Promise<LocalImage> {
  // The layer code (for a remote layer to download, or a blob to make from a layer's directory)
  // loads only when a layer lacks its blob: a build whose steps are all cached never needs it.
  const whole = (ls: readonly LayerRow[]): ls is readonly BlobLayer[] => ls.every((l) => l.blob !== null && store.db.getLayer(l.diffId));
  let stored: readonly BlobLayer[];
  if (whole(layers)) stored = layers;
  else {
    const { ensureLayerBlob } = await import('../../cache/layers.js');
    stored = await Promise.all(layers.map((l) => ensureLayerBlob(store, l.diffId, options.signal)));
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configBlob = await store.blobs.writeBuffer(configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    config: { mediaType: MEDIA_TYPE_CONFIG, digest: configBlob.digest, size: configBlob.size },
    layers: stored.map((l) => ({ mediaType: l.mediaType, digest: l.blob, size: l.blobSize })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestBlob = await store.blobs.writeBuffer(manifestBytes);
  store.db.transaction(() => {
    store.db.putBlob(configBlob.digest, configBlob.size, MEDIA_TYPE_CONFIG);
    store.db.putBlob(manifestBlob.digest, manifestBlob.size, MEDIA_TYPE_MANIFEST);
    crashPoint('image-commit');
    store.db.putManifest({
      digest: manifestBlob.digest,
      config: configBlob.digest,
      size: stored.reduce((n, l) => n + l.blobSize, configBlob.size),
      created: config.created ? Date.parse(config.created) : Date.now(),
    });
  });
  return { manifestDigest: manifestBlob.digest, manifest, configDigest: configBlob.digest, config, layers: [...stored] };
}

/**
 * Records an image whose config and layer blobs are in the store already, keeping the manifest
 * byte for byte (so its digest is the one a registry or an archive gave). Layer records map each
 * diff id of the config to the manifest's blob, unless the store knows that layer already.
 */
export async function recordImage(store: Store, manifestBytes: Buffer, options: { expected?: Digest } = {}): Promise<LocalImage> {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(manifestBytes.toString('utf8')) as Manifest;
  } catch (err) {
    throw new KilnError('MANIFEST_INVALID', `The image manifest is not valid JSON: ${(err as Error).message}`);
  }
  const mediaType = documentMediaType(manifest) ?? MEDIA_TYPE_MANIFEST;
  if (manifest.schemaVersion !== 2 || !isManifestType(mediaType) || !manifest.config || !Array.isArray(manifest.layers)) {
    throw new KilnError('MANIFEST_INVALID', `Unsupported manifest (media type "${mediaType}", schema version ${String(manifest.schemaVersion)})`);
  }
  const configDigest = parseDigest(manifest.config.digest);
  const config = await store.blobs.readJson<ImageConfig>(configDigest);
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new KilnError('MANIFEST_INVALID', `The manifest lists ${manifest.layers.length} layers but its config ${diffIds.length} diff ids`);
  }
  for (const l of manifest.layers) {
    if (!(await store.blobs.has(parseDigest(l.digest)))) throw new KilnError('BLOB_UNKNOWN', `Layer blob "${l.digest}" is not in the store`);
  }
  const manifestBlob = await store.blobs.writeBuffer(manifestBytes, options.expected);
  store.db.transaction(() => {
    store.db.putBlob(configDigest, manifest.config.size, manifest.config.mediaType);
    manifest.layers.forEach((l, i) => {
      store.db.putBlob(l.digest, l.size, l.mediaType);
      store.db.putLayer({ diffId: parseDigest(diffIds[i]!), blob: l.digest, blobSize: l.size, mediaType: l.mediaType });
    });
    store.db.putBlob(manifestBlob.digest, manifestBlob.size, mediaType);
    store.db.putManifest({
      digest: manifestBlob.digest,
      config: configDigest,
      size: manifest.layers.reduce((n, l) => n + l.size, manifest.config.size),
      created: config.created ? Date.parse(config.created) || Date.now() : Date.now(),
    });
  });
  return loadImage(store, manifestBlob.digest);
}

/** Points each name at the image, in one transaction: either every tag moves or none. */
export function tagImage(store: Store, image: LocalImage, names: readonly string[]): void {
  const normalized = names.map(normalizeName);
  store.db.transaction(() => {
    for (const [i, n] of normalized.entries()) {
      if (i === 1) crashPoint('tag-commit');
      store.db.setTag(n, image.manifestDigest);
    }
  });
}
