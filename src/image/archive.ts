import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, normalize } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import type { BlobLayer } from '../../cache/db.js';
import { type Digest, digestHex, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { decompressed, storeLayerTar } from '../../cache/layers.js';
import type { Store } from '../../cache/store.js';
import { limitUnpacked, maxUnpackedSize } from '../../cache/tarreader.js';
import type { ImageConfig } from '../../solver/graph.js';
import { type LocalImage, recordImage, tagImage } from './local.js';
import { type Index, type Manifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, type Platform, isIndexType } from './oci.js';
import { selectManifest } from './platform.js';
import { parseReference } from './reference.js';
import { writeTarEntry } from '../fsutil/tar-entry.js';

export interface LoadedImage {
  image: LocalImage;
  names: string[];
}

/**
 * Loads a docker archive (`manifest.json`, as `docker save` writes) or an OCI layout archive
 * (`index.json`), plain or gzip, into the store. An OCI layout keeps its manifests byte for byte;
 * a docker archive's layers are compressed into the store and given an OCI manifest, the config
 * (and so the image ID) kept as it is. Names move only once every image is stored.
 */
export async function loadArchive(store: Store, input: Readable, options: { platform: Platform; signal?: AbortSignal }): Promise<LoadedImage[]> {
  const dir = store.blobs.tempPath('load');
  return store.withLease('dir', dir, async () => {
    try {
      await extract(await ungzip(input), dir, options.signal);
      const has = async (name: string) => {
        try {
          return (await stat(join(dir, name))).isFile();
        } catch (err) {
          if (isErrno(err, 'ENOENT')) return false;
          throw err;
        }
      };
      let loaded: LoadedImage[];
      if (await has('index.json')) loaded = await loadOciLayout(store, dir, options);
      else if (await has('manifest.json')) loaded = await loadDockerArchive(store, dir, options.signal);
      else throw new KilnError('ARCHIVE_INVALID', 'The archive has neither an index.json (OCI layout) nor a manifest.json (docker save)');
      store.db.transaction(() => {
        for (const l of loaded) tagImage(store, l.image, l.names);
      });
      return loaded;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}

async function ungzip(input: Readable): Promise<Readable> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : (first.value as Buffer);
  const rest = Readable.from((async function* () {
    if (head.length > 0) yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value as Buffer;
  })());
  return head[0] === 0x1f && head[1] === 0x8b ? rest.pipe(createGunzip()) : rest;
}

/** Regular files of the archive under `dir`; anything that would land outside it is refused. */
async function extract(input: Readable, dir: string, signal?: AbortSignal): Promise<void> {
  const ex = tar.extract();
  const done = (async () => {
    for await (const entry of ex) {
      // An archive cut inside this entry fails the entry's stream and the extractor alike, maybe
      // while mkdir below is pending; the pipeline reports it from the extractor. Unheard here,
      // it ended the process (kiln serve included).
      entry.on('error', () => {});
      signal?.throwIfAborted();
      const name = normalize(entry.header.name).replace(/^(\.\/)+/, '');
      if (entry.header.type !== 'file' || name.startsWith('..') || name.startsWith('/')) {
        entry.resume();
        continue;
      }
      const target = join(dir, name);
      await mkdir(dirname(target), { recursive: true });
      await writeTarEntry(entry, target);
    }
  })();
  // Both settle before the caller removes `dir`: a file still being written when the other
  // failed would otherwise appear after the removal and stay in the store's tmp/.
  const results = await Promise.allSettled([pipeline(input, limitUnpacked(maxUnpackedSize(), 'The archive'), ex).catch((err: Error) => {
    if (err instanceof KilnError) throw err;
    const cut = err.message === 'Unexpected end of data' || (err as NodeJS.ErrnoException).code === 'Z_BUF_ERROR';
    throw new KilnError('ARCHIVE_INVALID', cut ? 'Cannot read the archive: it is cut short' : `Cannot read the archive: ${err.message}`, { cause: err });
  }), done]);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

async function readJsonFile<T>(path: string, what: string): Promise<T> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    throw new KilnError('ARCHIVE_INVALID', `The archive's ${what} cannot be read: ${(err as Error).message}`);
  }
}

async function importBlob(store: Store, dir: string, digest: Digest, signal?: AbortSignal): Promise<void> {
  if (await store.blobs.has(digest)) return;
  const path = join(dir, 'blobs', 'sha256', digestHex(digest));
  try {
    await stat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new KilnError('ARCHIVE_INVALID', `The archive lacks blob "${digest}"`);
    throw err;
  }
  await store.blobs.writeStream(createReadStream(path), { expected: digest, signal });
}

async function loadOciLayout(store: Store, dir: string, options: { platform: Platform; signal?: AbortSignal }): Promise<LoadedImage[]> {
  const index = await readJsonFile<Index>(join(dir, 'index.json'), 'index.json');
  const byDigest = new Map<Digest, string[]>();
  for (const d of index.manifests ?? []) {
    let digest = parseDigest(d.digest);
    if (isIndexType(d.mediaType)) {
      await importBlob(store, dir, digest, options.signal);
      const nested = await store.blobs.readJson<Index>(digest);
      const chosen = selectManifest(nested.manifests ?? [], options.platform);
      if (!chosen) continue;
      digest = parseDigest(chosen.digest);
    }
    const name = d.annotations?.['io.containerd.image.name'];
    const names = byDigest.get(digest) ?? [];
    if (name) {
      try {
        parseReference(name);
        names.push(name);
      } catch (err) {
        // A name that is no reference stays unnamed, as docker load leaves it.
        if (!(err instanceof KilnError)) throw err;
      }
    }
    byDigest.set(digest, names);
  }
  const out: LoadedImage[] = [];
  for (const [digest, names] of byDigest) {
    await importBlob(store, dir, digest, options.signal);
    const bytes = await store.blobs.read(digest);
    const manifest = JSON.parse(bytes.toString('utf8')) as Manifest;
    for (const b of [manifest.config, ...(manifest.layers ?? [])]) await importBlob(store, dir, parseDigest(b.digest), options.signal);
    out.push({ image: await recordImage(store, bytes, { expected: digest }), names });
  }
  if (out.length === 0) throw new KilnError('ARCHIVE_INVALID', 'The archive holds no image for this platform');
  return out;
}

interface DockerEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

async function loadDockerArchive(store: Store, dir: string, signal?: AbortSignal): Promise<LoadedImage[]> {
  const entries = await readJsonFile<DockerEntry[]>(join(dir, 'manifest.json'), 'manifest.json');
  const inside = (p: string) => {
    const path = join(dir, normalize(p));
    if (!path.startsWith(`${dir}/`)) throw new KilnError('ARCHIVE_INVALID', `The archive names a file outside itself: "${p}"`);
    return path;
  };
  const out: LoadedImage[] = [];
  for (const e of entries) {
    const configBytes = await readFile(inside(e.Config)).catch(() => {
      throw new KilnError('ARCHIVE_INVALID', `The archive lacks the config "${e.Config}"`);
    });
    const config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== e.Layers.length) throw new KilnError('ARCHIVE_INVALID', `The image "${e.Config}" lists ${e.Layers.length} layers but its config ${diffIds.length}`);
    const configBlob = await store.blobs.writeBuffer(configBytes);
    const layers = [];
    for (const [i, l] of e.Layers.entries()) {
      signal?.throwIfAborted();
      const known = store.db.getLayer(parseDigest(diffIds[i]!));
      if (known?.blob && (await store.blobs.has(known.blob))) {
        layers.push(known as BlobLayer);
        continue;
      }
      const file = createReadStream(inside(l));
      // Layer files may be plain or compressed; sniffing decides, as docker load does.
      const head = await readHead(inside(l));
      const mediaType = head[0] === 0x1f && head[1] === 0x8b ? 'gzip' : head[0] === 0x28 && head[1] === 0xb5 ? 'zstd' : 'tar';
      const row = await storeLayerTar(store, decompressed(file, mediaType), signal);
      if (row.diffId !== diffIds[i]) throw new KilnError('LAYER_CORRUPT', `Layer "${l}" of the archive has diff id "${row.diffId}", its config says "${diffIds[i]}"`);
      layers.push(row);
    }
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_MANIFEST,
      config: { mediaType: MEDIA_TYPE_CONFIG, digest: configBlob.digest, size: configBlob.size },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.blob, size: l.blobSize })),
    };
    const image = await recordImage(store, Buffer.from(JSON.stringify(manifest)));
    out.push({ image, names: e.RepoTags ?? [] });
  }
  return out;
}

async function readHead(path: string): Promise<Buffer> {
  for await (const chunk of createReadStream(path, { start: 0, end: 3 })) return chunk as Buffer;
  return Buffer.alloc(0);
}
