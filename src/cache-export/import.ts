import { readFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { acquireCacheMount } from '../../cache/cachemounts.js';
import type { BlobLayer, LayerRow } from '../../cache/db.js';
import { type Digest, digestHex, digestOf, Hasher, isDigest, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { addRemoteLayer, decompressed } from '../../cache/layers.js';
import type { Store } from '../../cache/store.js';
import { unpackLayer } from '../../cache/unpack.js';
import type { CacheImport } from '../../solver/worker.js';
import { type Descriptor, type Index, type Manifest, MEDIA_TYPE_CONFIG, MEDIA_TYPE_DOCKER_CONFIG } from '../image/oci.js';
import { type CacheConfig, type CacheRecord, INLINE_CACHE_FIELD, MEDIA_TYPE_CACHE_CONFIG } from './records.js';
import type { CacheFrom } from './spec.js';

/** Where an export's blobs come from: a registry repository or an OCI layout directory. */
interface BlobSource {
  /** The export's manifest (a layout's first, a reference's for linux/amd64). */
  manifest(signal?: AbortSignal): Promise<Manifest>;
  read(desc: Descriptor, signal?: AbortSignal): Promise<Buffer>;
  /** Streams a blob into the store, verified against its digest. */
  store(store: Store, desc: Descriptor, signal?: AbortSignal): Promise<void>;
}

export interface CacheImportOptions {
  signal?: AbortSignal;
  insecureRegistries?: readonly string[];
}

interface Found {
  diffId: Digest | null;
  created: string;
  layer: Descriptor | null;
}

/**
 * An imported cache: the records of one export. A hit costs nothing at first: its layer becomes a
 * remote layer of the store (cache/layers.ts), downloaded the first time a step mounts it or an
 * image, push or export needs its blob. Layers of steps whose files nothing reads (a builder
 * stage cached whole, whose output no step that runs copies) are never downloaded.
 */
export class ImportedCache implements CacheImport {
  private readonly byDiffId = new Map<Digest, Descriptor>();
  private readonly fetching = new Map<Digest, Promise<BlobLayer>>();
  /** What to record once a layer is in the store: the solver's local cache records. */
  private readonly onStored = new Map<Digest, (() => void)[]>();

  constructor(
    private readonly store: Store,
    private readonly source: BlobSource,
    private readonly records: ReadonlyMap<string, Found>,
    /** RUN cache mounts the export carries: id and layer. */
    readonly cacheMounts: readonly { id: string; layer: Descriptor }[] = [],
  ) {
    for (const r of records.values()) if (r.diffId && r.layer) this.byDiffId.set(r.diffId, r.layer);
  }

  get size(): number {
    return this.records.size;
  }

  lookup(key: string): { diffId: Digest | null; created: string } | undefined {
    const r = this.records.get(key);
    return r && { diffId: r.diffId, created: r.created };
  }

  async fetchLayer(diffId: Digest, _signal: AbortSignal, stored: () => void): Promise<LayerRow> {
    const desc = this.byDiffId.get(diffId);
    if (!desc) throw new KilnError('CACHE_IMPORT_INVALID', `The imported cache names layer "${diffId}" but carries no blob for it`);
    const row = this.store.db.getLayer(diffId);
    if (row) {
      stored();
      return row;
    }
    let waiting = this.onStored.get(diffId);
    if (!waiting) this.onStored.set(diffId, (waiting = []));
    waiting.push(stored);
    addRemoteLayer(this.store, diffId, (signal) => this.download(diffId, signal));
    // The diff id is the exporter's word until the layer is unpacked: ensureLayerFs checks it then.
    return { diffId, blob: parseDigest(desc.digest), blobSize: desc.size, mediaType: desc.mediaType };
  }

  /** Downloads a layer once, however many steps and images ask for it at the same time. */
  private download(diffId: Digest, signal?: AbortSignal): Promise<BlobLayer> {
    let p = this.fetching.get(diffId);
    if (!p) {
      p = this.fetch(diffId, signal);
      this.fetching.set(diffId, p);
      p.catch(() => this.fetching.delete(diffId));
    }
    return p;
  }

  private async fetch(diffId: Digest, signal?: AbortSignal): Promise<BlobLayer> {
    const desc = this.byDiffId.get(diffId)!;
    const blob = parseDigest(desc.digest);
    if (!(await this.store.blobs.has(blob))) await this.source.store(this.store, desc, signal);
    // The export's word for what the blob holds is checked before the store records it: a layer
    // row says "this blob is that diff id" to every later build and push.
    const hasher = new Hasher();
    try {
      for await (const chunk of decompressed(this.store.blobs.open(blob), desc.mediaType)) hasher.update(chunk as Buffer);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new KilnError('CACHE_IMPORT_INVALID', `The imported layer blob "${blob}" cannot be read: ${(err as Error).message}`, { cause: err });
    }
    if (hasher.digest() !== diffId) {
      throw new KilnError('CACHE_IMPORT_INVALID', `The imported layer blob "${blob}" does not unpack to the diff id "${diffId}" its cache names`);
    }
    const layer: BlobLayer = { diffId, blob, blobSize: desc.size, mediaType: desc.mediaType };
    this.store.db.transaction(() => {
      this.store.db.putBlob(blob, desc.size, desc.mediaType);
      this.store.db.putLayer(layer);
      for (const record of this.onStored.get(diffId) ?? []) record();
    });
    this.onStored.delete(diffId);
    return layer;
  }

  /**
   * Seeds the store's cache mounts from the export, each only when the store has none of that
   * id yet: a local cache directory is newer than any export of it.
   */
  async seedCacheMounts(signal?: AbortSignal): Promise<number> {
    let seeded = 0;
    for (const m of this.cacheMounts) {
      if (this.store.db.allCacheMounts().some((r) => r.id === m.id)) continue;
      const mount = await acquireCacheMount(this.store, {
        id: m.id,
        sharing: 'shared',
        mode: 0o755,
        uid: 0,
        gid: 0,
        signal,
        seed: async (dir) => {
          await this.source.store(this.store, m.layer, signal);
          await unpackLayer(decompressed(this.store.blobs.open(parseDigest(m.layer.digest)), m.layer.mediaType), dir, { signal });
          seeded++;
        },
      });
      mount.release();
    }
    return seeded;
  }
}

/** Reads a cache export (or an image pushed with inline cache) from where `from` says. */
export async function importCache(store: Store, from: CacheFrom, options: CacheImportOptions = {}): Promise<ImportedCache> {
  const source = from.type === 'registry' ? await registrySource(from.ref, options) : layoutSource(from.src);
  const manifest = await source.manifest(options.signal);
  const layers = manifest.layers ?? [];
  const configType = manifest.config?.mediaType;
  let records: CacheRecord[];
  let mounts: { id: string; layer: Descriptor }[] = [];
  const what = from.type === 'registry' ? `"${from.ref}"` : `"${from.src}"`;
  if (configType === MEDIA_TYPE_CACHE_CONFIG) {
    const config = parseJson<CacheConfig>(await source.read(manifest.config, options.signal), what);
    records = config.records ?? [];
    mounts = (config.cacheMounts ?? []).flatMap((m) => (layers[m.layer] ? [{ id: m.id, layer: layers[m.layer]! }] : []));
  } else if (configType === MEDIA_TYPE_CONFIG || configType === MEDIA_TYPE_DOCKER_CONFIG) {
    const config = parseJson<Record<string, unknown>>(await source.read(manifest.config, options.signal), what);
    const inline = config[INLINE_CACHE_FIELD];
    if (!Array.isArray(inline)) {
      throw new KilnError('CACHE_IMPORT_EMPTY', `The image ${what} carries no inline cache`, { hint: 'Build it with "--cache-to type=inline"' });
    }
    records = inline as CacheRecord[];
  } else {
    throw new KilnError('CACHE_IMPORT_INVALID', `${what} is not a cache export: its config is "${configType}"`);
  }
  const found = new Map<string, Found>();
  for (const r of records) {
    if (typeof r.key !== 'string' || typeof r.created !== 'string') continue;
    const diffId = r.diffId !== null && typeof r.diffId === 'string' && isDigest(r.diffId) ? r.diffId : null;
    const layer = r.layer === null || r.layer === undefined ? null : (layers[r.layer] ?? null);
    // A record whose layer went missing would hit without a layer to give: leave it out.
    if ((diffId === null) !== (layer === null)) continue;
    found.set(r.key, { diffId, created: r.created, layer });
  }
  return new ImportedCache(store, source, found, mounts);
}

function parseJson<T>(bytes: Buffer, what: string): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch {
    throw new KilnError('CACHE_IMPORT_INVALID', `The cache config of ${what} is not JSON`);
  }
}

function checked(bytes: Buffer, desc: Descriptor, what: string): Buffer {
  const actual = digestOf(bytes);
  if (actual !== desc.digest) throw new KilnError('DIGEST_MISMATCH', `${what}: its content hashes to "${actual}", not "${desc.digest}"`);
  return bytes;
}

async function registrySource(input: string, options: CacheImportOptions): Promise<BlobSource> {
  // The registry client loads only for builds that import from one.
  const [{ RegistryClient }, { resolveManifest, repoScope }, { parseReference, formatReference }, { recordBlobSources }] = await Promise.all([
    import('../registry/client.js'),
    import('../registry/pull.js'),
    import('../image/reference.js'),
    import('../registry/sources.js'),
  ]);
  const ref = parseReference(input);
  const client = new RegistryClient(ref.domain, { insecureRegistries: options.insecureRegistries });
  const name = formatReference(ref);
  const open = async (desc: Descriptor, signal?: AbortSignal): Promise<Readable> => {
    const res = await client.request({ method: 'GET', path: `/v2/${ref.path}/blobs/${desc.digest}`, scopes: [repoScope(ref)], what: `Cannot fetch blob "${desc.digest}" of the cache "${name}"`, signal });
    return res.body;
  };
  return {
    async manifest(signal) {
      return (await resolveManifest(client, ref, { os: 'linux', architecture: 'amd64' }, signal)).manifest;
    },
    async read(desc, signal) {
      const what = `Cannot fetch blob "${desc.digest}" of the cache "${name}"`;
      const res = await client.fetchBytes({ method: 'GET', path: `/v2/${ref.path}/blobs/${desc.digest}`, scopes: [repoScope(ref)], what, signal });
      return checked(res.body, desc, what);
    },
    async store(store, desc, signal) {
      const digest = parseDigest(desc.digest);
      for (let attempt = 1; ; attempt++) {
        try {
          await store.blobs.writeStream(await open(desc, signal), { expected: digest, signal });
          break;
        } catch (err) {
          // A connection that broke mid-body is worth another try; a wrong digest or a refusal is not.
          if (err instanceof KilnError || signal?.aborted || attempt >= 3) throw err;
        }
      }
      // Known to be in this repository: a later push elsewhere on the registry can mount it.
      recordBlobSources(store, ref.domain, ref.path, [digest]);
    },
  };
}

function layoutSource(dir: string): BlobSource {
  const path = (desc: Descriptor) => join(dir, 'blobs', 'sha256', digestHex(parseDigest(desc.digest)));
  const read = async (desc: Descriptor) => checked(await readFile(path(desc)), desc, `Cannot read blob "${desc.digest}" of the cache "${dir}"`);
  return {
    async manifest() {
      let index: Index;
      try {
        index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as Index;
      } catch (err) {
        if (isErrno(err, 'ENOENT')) throw new KilnError('CACHE_IMPORT_MISSING', `No cache export in "${dir}": it has no index.json`);
        throw new KilnError('CACHE_IMPORT_INVALID', `Cannot read "${join(dir, 'index.json')}": ${(err as Error).message}`, { cause: err });
      }
      const first = index.manifests?.[0];
      if (!first) throw new KilnError('CACHE_IMPORT_MISSING', `No cache export in "${dir}": its index lists no manifest`);
      return JSON.parse((await read(first)).toString('utf8')) as Manifest;
    },
    read: async (desc) => read(desc),
    async store(store, desc, signal) {
      await store.blobs.writeStream(createReadStream(path(desc)), { expected: parseDigest(desc.digest), signal });
    },
  };
}
