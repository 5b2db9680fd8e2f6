import { createReadStream, createWriteStream } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type Digest, Hasher, digestOf, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import { decompressed, zstdStream } from '../../cache/layers.js';
import type { Store } from '../../cache/store.js';
import type { LocalImage } from './local.js';
import {
  type Compression,
  type Descriptor,
  type Manifest,
  MEDIA_TYPE_CONFIG,
  MEDIA_TYPE_DOCKER_CONFIG,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_MANIFEST,
  documentMediaType,
  layerCompression,
  layerMediaType,
} from './oci.js';

export interface ConvertOptions {
  /** Layer compression; unset keeps each layer as stored. */
  compression?: Compression;
  /** gzip 0–9, zstd 1–22. */
  level?: number;
  /** Recompress layers that already have the asked-for compression. */
  force?: boolean;
  /** OCI media types (true) or Docker schema 2 ones (false); unset keeps the stored manifest's. zstd implies OCI. */
  ociMediaTypes?: boolean;
}

/** A blob of an image being exported: in the store, or in a temporary file for this export only. */
export interface ExportBlob {
  digest: Digest;
  size: number;
  path: string;
}

/** An image as one export writes it: manifest and config bytes, and where each blob is. */
export interface ExportImage {
  manifestBytes: Buffer;
  manifestDigest: Digest;
  mediaType: string;
  manifest: Manifest;
  configBytes: Buffer;
  configDigest: Digest;
  /** Config first, then layers in order. */
  blobs: ExportBlob[];
  /** The manifest as a blob. */
  manifestBlob: ExportBlob;
  /** Removes temporary blobs. */
  dispose(): Promise<void>;
}

export function parseCompression(value: string): Compression {
  if (value === 'gzip' || value === 'zstd' || value === 'uncompressed') return value;
  throw new KilnError('INVALID_OUTPUT', `Invalid compression "${value}": expected gzip, zstd or uncompressed`, { exitCode: 2 });
}

/**
 * Prepares an image for export with the asked-for compression and media types. Unchanged layers
 * stay the store's blobs; converted ones go into the store (`persist`, for pushes that may be
 * re-run) or into temporary files (archives). With nothing to change, the manifest is the
 * stored one, byte for byte.
 */
export async function prepareExport(store: Store, image: LocalImage, options: ConvertOptions & { persist?: boolean; signal?: AbortSignal } = {}): Promise<ExportImage> {
  const manifestBytes = await store.blobs.read(image.manifestDigest);
  const storedType = documentMediaType(image.manifest) ?? MEDIA_TYPE_MANIFEST;
  const oci = options.compression === 'zstd' ? true : (options.ociMediaTypes ?? storedType === MEDIA_TYPE_MANIFEST);
  const configBytes = await store.blobs.read(image.configDigest);
  const temps: string[] = [];
  const dispose = async () => {
    for (const t of temps) await rm(t, { force: true });
  };
  try {
    const layers: Descriptor[] = [];
    const blobs: ExportBlob[] = [{ digest: image.configDigest, size: configBytes.byteLength, path: store.blobs.path(image.configDigest) }];
    for (const [i, l] of image.manifest.layers.entries()) {
      options.signal?.throwIfAborted();
      const source = layerCompression(l.mediaType);
      const target = options.compression ?? source;
      const { mediaType: _old, ...rest } = l;
      if (target === source && !options.force) {
        layers.push({ mediaType: layerMediaType(target, oci), ...rest });
        blobs.push({ digest: parseDigest(l.digest), size: l.size, path: store.blobs.path(parseDigest(l.digest)) });
        continue;
      }
      const converted = await convertLayer(store, parseDigest(l.digest), l.mediaType, target, options);
      if (!options.persist) temps.push(converted.path);
      const diffId = image.config.rootfs.diff_ids[i];
      if (target === 'uncompressed' && diffId !== undefined && converted.digest !== diffId) {
        throw new KilnError('LAYER_CORRUPT', `Layer blob "${l.digest}" does not decompress to diff id "${diffId}"`);
      }
      layers.push({ mediaType: layerMediaType(target, oci), digest: converted.digest, size: converted.size, ...(l.annotations ? { annotations: l.annotations } : {}) });
      blobs.push(converted);
    }
    const mediaType = oci ? MEDIA_TYPE_MANIFEST : MEDIA_TYPE_DOCKER_MANIFEST;
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType,
      config: { mediaType: oci ? MEDIA_TYPE_CONFIG : MEDIA_TYPE_DOCKER_CONFIG, digest: image.configDigest, size: configBytes.byteLength },
      layers,
      ...(image.manifest.annotations ? { annotations: image.manifest.annotations } : {}),
    };
    const unchanged = mediaType === storedType && image.manifest.config.mediaType === manifest.config.mediaType && layers.every((l, i) => l.digest === image.manifest.layers[i]!.digest && l.mediaType === image.manifest.layers[i]!.mediaType);
    const bytes = unchanged ? manifestBytes : Buffer.from(JSON.stringify(manifest));
    const digest = unchanged ? image.manifestDigest : digestOf(bytes);
    let manifestPath = store.blobs.path(digest);
    if (!unchanged && options.persist) {
      await store.blobs.writeBuffer(bytes);
      store.db.putBlob(digest, bytes.byteLength, mediaType);
    } else if (!unchanged) {
      manifestPath = store.blobs.tempPath('export');
      temps.push(manifestPath);
      await writeFile(manifestPath, bytes);
    }
    const manifestBlob = { digest, size: bytes.byteLength, path: manifestPath };
    return { manifestBytes: bytes, manifestDigest: digest, mediaType, manifest: unchanged ? image.manifest : manifest, configBytes, configDigest: image.configDigest, blobs, manifestBlob, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}

function compressor(input: Readable, target: Compression, level: number | undefined): Readable {
  if (target === 'uncompressed') return input;
  if (target === 'zstd') return zstdStream(input, ['-c', `-${level ?? 3}`, ...(level !== undefined && level > 19 ? ['--ultra'] : [])]);
  const gz = createGzip({ level: level ?? 6 });
  input.on('error', (err) => gz.destroy(err));
  return input.pipe(gz);
}

/** Decompresses a stored layer and compresses it again as `target`. */
async function convertLayer(store: Store, digest: Digest, mediaType: string, target: Compression, options: ConvertOptions & { persist?: boolean; signal?: AbortSignal }): Promise<ExportBlob> {
  const out = compressor(decompressed(store.blobs.open(digest), mediaType), target, options.level);
  if (options.persist) {
    const info = await store.blobs.writeStream(out, { signal: options.signal });
    store.db.putBlob(info.digest, info.size, layerMediaType(target, true));
    return { ...info, path: store.blobs.path(info.digest) };
  }
  const path = store.blobs.tempPath('export');
  const hasher = new Hasher();
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(out, hashing, createWriteStream(path), { signal: options.signal });
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
  return { digest: hasher.digest(), size: hasher.size, path };
}

export function openBlob(blob: ExportBlob): Readable {
  return createReadStream(blob.path);
}
