import type { BlobLayer } from '../../cache/db.js';
import type { Digest } from '../../cache/digest.js';
import { cacheMountsDir } from '../../cache/cachemounts.js';
import { layerTar } from '../../cache/diff.js';
import { ensureLayerBlob, storeLayerTar } from '../../cache/layers.js';
import type { Store } from '../../cache/store.js';
import { join } from 'node:path';
import type { ImageConfig } from '../../solver/graph.js';
import { DirSink } from '../export/layout.js';
import { type Descriptor, type Index, type Manifest, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST } from '../image/oci.js';
import {
  ANNOTATION_CACHE_MOUNT,
  ARTIFACT_TYPE_CACHE,
  type CacheConfig,
  type CacheRecord,
  INLINE_CACHE_FIELD,
  MEDIA_TYPE_CACHE_CONFIG,
  type SolvedRecord,
} from './records.js';
import type { CacheTo } from './spec.js';

export interface CacheExportOptions {
  signal?: AbortSignal;
  insecureRegistries?: readonly string[];
  /** Ids of the RUN cache mounts the build used, exported with `cache-mounts=true`. */
  cacheMountIds?: readonly string[];
}

interface Artifact {
  manifestDigest: Digest;
  manifest: Manifest;
  size: number;
}

/** Writes a cache export where `to` says: pushed to a registry, or an OCI layout directory. */
export async function exportCache(store: Store, to: Exclude<CacheTo, { type: 'inline' }>, records: readonly SolvedRecord[], options: CacheExportOptions = {}): Promise<Digest> {
  // Hits of an imported cache that nothing needed are still remote, and layers of stages no image
  // holds were never compressed: an export carries their blobs.
  const stored = new Map<Digest, BlobLayer>();
  for (const l of await Promise.all(records.flatMap((r) => (r.layer ? [ensureLayerBlob(store, r.layer.diffId, options.signal)] : [])))) stored.set(l.diffId, l);
  const artifact = await writeArtifact(store, records, stored, to.cacheMounts ? (options.cacheMountIds ?? []) : [], options.signal);
  if (to.type === 'registry') {
    // The cache is pushed like an image: HEAD first, cross-repository mounts, retries.
    const { pushImage } = await import('../registry/push.js');
    await pushImage(store, artifact.manifestDigest, [to.ref], { signal: options.signal, insecureRegistries: options.insecureRegistries });
  } else {
    await writeLayout(store, to.dest, artifact, options.signal);
  }
  return artifact.manifestDigest;
}

/**
 * The cache as an OCI manifest in the store: a config blob listing the records, and the layers
 * they point to as the manifest's layers, so a registry keeps them alive and can mount them.
 */
async function writeArtifact(store: Store, records: readonly SolvedRecord[], stored: ReadonlyMap<Digest, BlobLayer>, mountIds: readonly string[], signal?: AbortSignal): Promise<Artifact> {
  const layers: Descriptor[] = [];
  const index = new Map<Digest, number>();
  const layerIndex = (diffId: Digest): number => {
    const l = stored.get(diffId)!;
    let i = index.get(l.blob);
    if (i === undefined) {
      i = layers.push({ mediaType: l.mediaType, digest: l.blob, size: l.blobSize }) - 1;
      index.set(l.blob, i);
    }
    return i;
  };
  const config: CacheConfig = {
    records: records.map((r): CacheRecord => ({ key: r.key, diffId: r.layer?.diffId ?? null, created: r.created, layer: r.layer ? layerIndex(r.layer.diffId) : null })),
  };
  const mounts = await exportCacheMounts(store, mountIds, signal);
  if (mounts.length > 0) {
    config.cacheMounts = mounts.map(({ id, layer }) => {
      const i = layers.push({ mediaType: layer.mediaType, digest: layer.blob, size: layer.blobSize, annotations: { [ANNOTATION_CACHE_MOUNT]: id } }) - 1;
      return { id, layer: i };
    });
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configBlob = await store.blobs.writeBuffer(configBytes);
  store.db.putBlob(configBlob.digest, configBlob.size, MEDIA_TYPE_CACHE_CONFIG);
  const manifest: Manifest & { artifactType: string } = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_MANIFEST,
    artifactType: ARTIFACT_TYPE_CACHE,
    config: { mediaType: MEDIA_TYPE_CACHE_CONFIG, digest: configBlob.digest, size: configBlob.size },
    layers,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const blob = await store.blobs.writeBuffer(bytes);
  store.db.putBlob(blob.digest, blob.size, MEDIA_TYPE_MANIFEST);
  return { manifestDigest: blob.digest, manifest, size: blob.size };
}

/** Each cache mount the build used, as a layer tar of its directory. Secrets are never in one: they live on a tmpfs. */
async function exportCacheMounts(store: Store, ids: readonly string[], signal?: AbortSignal): Promise<{ id: string; layer: BlobLayer }[]> {
  const wanted = new Set(ids);
  const out: { id: string; layer: BlobLayer }[] = [];
  const rows = store.db.allCacheMounts().filter((r) => wanted.has(r.id));
  // A `private` mount used at once by two steps gets `<name>-1`: the shared one (shortest name) is the cache.
  rows.sort((a, b) => a.dir.length - b.dir.length);
  for (const row of rows) {
    if (out.some((o) => o.id === row.id)) continue;
    const layer = await storeLayerTar(store, layerTar(join(cacheMountsDir(store), row.dir), { signal }), signal);
    out.push({ id: row.id, layer });
  }
  return out;
}

/** An OCI layout: blobs first, `index.json` last, so a reader never sees an index without its blobs. */
async function writeLayout(store: Store, dest: string, artifact: Artifact, signal?: AbortSignal): Promise<void> {
  const sink = new DirSink(dest);
  for (const d of [artifact.manifest.config, ...artifact.manifest.layers]) {
    signal?.throwIfAborted();
    await sink.blob({ digest: d.digest, size: d.size, path: store.blobs.path(d.digest) });
  }
  await sink.blob({ digest: artifact.manifestDigest, size: artifact.size, path: store.blobs.path(artifact.manifestDigest) });
  const index: Index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_INDEX,
    manifests: [{ mediaType: MEDIA_TYPE_MANIFEST, digest: artifact.manifestDigest, size: artifact.size, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
  };
  await sink.file('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await sink.file('index.json', Buffer.from(JSON.stringify(index)));
}

/**
 * The image config with inline cache records: each points at its layer by position in the
 * image's own layers, so pushing the image carries its cache and nothing more. Records whose
 * layer the image lacks (a step of another stage) are left out.
 */
export function withInlineCache(config: ImageConfig, records: readonly SolvedRecord[]): ImageConfig {
  const diffIds = config.rootfs.diff_ids;
  const inline: CacheRecord[] = [];
  for (const r of records) {
    const layer = r.layer ? diffIds.indexOf(r.layer.diffId) : null;
    if (layer === -1) continue;
    inline.push({ key: r.key, diffId: r.layer?.diffId ?? null, created: r.created, layer });
  }
  return { ...config, [INLINE_CACHE_FIELD]: inline } as ImageConfig;
}

