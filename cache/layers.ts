import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip, gzipSync } from 'node:zlib';
import type { BlobLayer, LayerRow } from './db.js';
import { type Digest, Hasher } from './digest.js';
import { layerTar } from './diff.js';
import { KilnError } from './errors.js';
import type { Store, Workspace } from './store.js';
import { unpackLayer } from './unpack.js';
import { crashPoint, traced } from './trace.js';

export const MEDIA_TYPE_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const MEDIA_TYPE_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';

const GZIP_LEVEL = 6;
/** Layer tars up to this size are compressed in one synchronous call (~5 ms at most here). */
const SMALL_LAYER_BYTES = 128 * 1024;

/** Stream stage that hashes what passes through it: the uncompressed tar's hash is the diff id. */
function hashing(hasher: Hasher): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hasher.update(chunk);
      done(null, chunk);
    },
  });
}

/** Compresses an uncompressed layer tar into the blob store; returns the layer record. */
export async function storeLayerTar(store: Store, tar: AsyncIterable<Buffer>, signal?: AbortSignal): Promise<BlobLayer> {
  return (await storeLayerTarSized(store, tar, { signal })).layer;
}

/**
 * storeLayerTar, also giving the uncompressed tar's size: what the layer's files take unpacked
 * (within a block each), recorded when its directory is made (Store.commitLayerDir) for GC.
 */
export async function storeLayerTarSized(store: Store, tar: AsyncIterable<Buffer>, options: { signal?: AbortSignal; expected?: Digest } = {}): Promise<{ layer: BlobLayer; tarSize: number }> {
  const signal = options.signal;
  const diffHasher = new Hasher();
  const blob = await traced('diff+compress+write', async () => {
    // A small layer (a COPY of a few files, a RUN that writes one) is gathered and compressed
    // in one call: the stream below costs milliseconds of fixed plumbing and thread-pool round
    // trips, far more than such a layer's gzip (a one-file-edit rebuild ~9 ms faster). The
    // output is the same either way (deflate does not depend on how its input arrives), and a
    // layer is small or not by its tar alone.
    const head: Buffer[] = [];
    let size = 0;
    const chunks = tar[Symbol.asyncIterator]();
    for (;;) {
      const next = await chunks.next();
      if (next.done) {
        const whole = Buffer.concat(head, size);
        diffHasher.update(whole);
        return store.blobs.writeBuffer(gzipSync(whole, { level: GZIP_LEVEL }));
      }
      head.push(next.value);
      size += next.value.length;
      if (size > SMALL_LAYER_BYTES) break;
    }
    const rest = Readable.from(
      (async function* () {
        yield* head;
        for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
      })(),
      { objectMode: false },
    );
    const gz = createGzip({ level: GZIP_LEVEL });
    const hashed = rest.pipe(hashing(diffHasher));
    hashed.on('error', (err) => gz.destroy(err));
    rest.on('error', (err) => gz.destroy(err));
    hashed.pipe(gz);
    return store.blobs.writeStream(gz, { signal });
  });
  const layer: BlobLayer = { diffId: diffHasher.digest(), blob: blob.digest, blobSize: blob.size, mediaType: MEDIA_TYPE_LAYER_GZIP };
  if (options.expected !== undefined && layer.diffId !== options.expected) {
    // The blob just written is recorded nowhere: GC sweeps it as a leftover.
    throw new KilnError('LAYER_CORRUPT', `The directory of layer "${options.expected}" no longer gives that layer: its tar is "${layer.diffId}"`, { hint: 'Run "kiln store verify"; "kiln prune -a" removes the damaged build cache' });
  }
  store.db.transaction(() => {
    store.db.putBlob(blob.digest, blob.size, MEDIA_TYPE_LAYER_GZIP);
    crashPoint('index-commit');
    store.db.putLayer(layer);
  });
  return { layer, tarSize: diffHasher.size };
}

/**
 * Turns a finished workspace's upper directory into a layer: tar, compress, store the blob,
 * record it, and keep the directory as the unpacked layer. An unchanged upper gives no layer.
 *
 * `blob: false` (a layer no output image holds, such as a builder stage's) skips compressing and
 * storing the tar: only its digest, the diff id, is taken, and the directory is the layer's only
 * copy until ensureLayerBlob makes the blob from it, tarring it again to the same bytes. Not with
 * SOURCE_DATE_EPOCH, whose clamped times that second tar would not know.
 */
export async function commitWorkspace(
  store: Store,
  ws: Workspace,
  options: { signal?: AbortSignal; sourceDateEpoch?: number; blob?: boolean } = {},
): Promise<LayerRow | null> {
  if (readdirSync(ws.upper).length === 0) return null;
  if (options.blob === false && options.sourceDateEpoch === undefined) {
    const hasher = new Hasher();
    await traced('diff', async () => {
      for await (const chunk of layerTar(ws.upper, options)) hasher.update(chunk);
    });
    const layer: LayerRow = { diffId: hasher.digest(), blob: null, blobSize: 0, mediaType: MEDIA_TYPE_LAYER_GZIP };
    crashPoint('snapshot');
    // The directory first: a layer row without a blob must always have one. A crash in between
    // leaves a directory without a row, which recovery's sweep of orphans removes.
    await store.commitLayerDir(ws, layer.diffId);
    crashPoint('layer-row');
    return store.db.transaction(() => {
      store.db.putLayer(layer);
      store.db.setLayerUnpackedSize(layer.diffId, hasher.size);
      // Another build may have recorded this layer with its blob already.
      return store.db.getLayer(layer.diffId) ?? layer;
    });
  }
  const { layer, tarSize } = await storeLayerTarSized(store, layerTar(ws.upper, options), { signal: options.signal });
  crashPoint('snapshot');
  await store.commitLayerDir(ws, layer.diffId, tarSize);
  return layer;
}

/**
 * Stores an uncompressed layer tar and unpacks it as a layer directory in one pass. Used by
 * import and by anything that brings a layer from outside.
 */
export async function importLayerTar(store: Store, source: Readable, signal?: AbortSignal): Promise<LayerRow> {
  const ws = await store.createWorkspace();
  try {
    const toBlob = new PassThrough();
    const toFs = new PassThrough();
    const fanOut = new Transform({
      transform(chunk: Buffer, _enc, done) {
        // Both consumers must take a chunk before the next one is read: back-pressure holds.
        const a = toBlob.write(chunk);
        const b = toFs.write(chunk);
        if (a && b) return done();
        let waiting = (a ? 0 : 1) + (b ? 0 : 1);
        const next = () => {
          if (--waiting === 0) done();
        };
        if (!a) toBlob.once('drain', next);
        if (!b) toFs.once('drain', next);
      },
      flush(done) {
        toBlob.end();
        toFs.end();
        done();
      },
    });
    const fail = (err: Error) => {
      toBlob.destroy(err);
      toFs.destroy(err);
    };
    const feeding = pipeline(source, fanOut).catch((err: Error) => {
      fail(err);
      throw err;
    });
    const [{ layer, tarSize }] = await Promise.all([storeLayerTarSized(store, toBlob, { signal }), unpackLayer(toFs, ws.upper, { signal }), feeding]);
    await store.commitLayerDir(ws, layer.diffId, tarSize);
    return layer;
  } finally {
    await store.disposeWorkspace(ws);
  }
}

/** Fetches a remote layer's blob into the store and records the layer. */
export type RemoteLayerFetch = (signal?: AbortSignal) => Promise<BlobLayer>;

/**
 * Layers a build may use but has not downloaded (hits of an imported cache): fetched the first
 * time a step needs their files or an image their blob. The index holds no row for one until
 * then, so the store is whole at every instant, whether or not the download ever happens.
 */
const remoteLayers = new WeakMap<Store, Map<Digest, RemoteLayerFetch>>();

export function addRemoteLayer(store: Store, diffId: Digest, fetch: RemoteLayerFetch): void {
  let map = remoteLayers.get(store);
  if (!map) remoteLayers.set(store, (map = new Map()));
  map.set(diffId, fetch);
}

/**
 * The layer's record with its blob: downloaded first when it is a remote layer not fetched yet,
 * made from its directory when it was stored without one (commitWorkspace's `blob: false`).
 */
export async function ensureLayerBlob(store: Store, diffId: Digest, signal?: AbortSignal): Promise<BlobLayer> {
  const row = store.db.getLayer(diffId);
  if (row?.blob) return row as BlobLayer;
  if (row) {
    if (!store.hasLayerFs(diffId)) throw new KilnError('LAYER_CORRUPT', `Layer "${diffId}" has neither a blob nor a directory`, { hint: 'Run "kiln store verify"' });
    return (await storeLayerTarSized(store, layerTar(store.layerFs(diffId), { signal }), { signal, expected: diffId })).layer;
  }
  const fetch = remoteLayers.get(store)?.get(diffId);
  if (!fetch) throw new KilnError('LAYER_UNKNOWN', `Layer "${diffId}" is not in the store`);
  return fetch(signal);
}

/** Makes sure a layer's directory exists, unpacking its blob if it was never unpacked. */
export async function ensureLayerFs(store: Store, diffId: Digest, signal?: AbortSignal): Promise<void> {
  if (store.hasLayerFs(diffId)) return;
  const row = await ensureLayerBlob(store, diffId, signal);
  const ws = await store.createWorkspace();
  try {
    const input = store.blobs.open(row.blob);
    const tar = decompressed(input, row.mediaType);
    const check = new Hasher();
    const hashed = tar.pipe(hashing(check));
    tar.on('error', (err) => hashed.destroy(err));
    await unpackLayer(hashed, ws.upper, { signal });
    if (check.digest() !== diffId) {
      throw new KilnError('LAYER_CORRUPT', `Layer blob "${row.blob}" does not unpack to diff id "${diffId}"`);
    }
    await store.commitLayerDir(ws, diffId, check.size);
  } finally {
    await store.disposeWorkspace(ws);
  }
}

/**
 * A stream through Debian's `zstd` tool: Node 20's zlib has no zstd, and the tool (already on
 * every machine that runs Kiln) avoids shipping a native module; a pipe costs little next to the
 * compression itself. `args` are `-dc` to decompress or `-c -LEVEL` to compress.
 */
export function zstdStream(input: Readable, args: readonly string[]): Readable {
  const child = spawn('zstd', ['-q', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const out = child.stdout;
  const errs: Buffer[] = [];
  child.stderr.on('data', (c: Buffer) => errs.push(c));
  child.on('error', (err) => out.destroy(new KilnError('ZSTD_MISSING', `Cannot run "zstd": ${err.message}`, { hint: 'Install it with "apt-get install zstd"' })));
  child.on('close', (code) => {
    if (code !== 0 && code !== null) out.destroy(new KilnError('ZSTD_FAILED', `"zstd ${args.join(' ')}" failed: ${Buffer.concat(errs).toString().trim() || `exit code ${code}`}`));
  });
  input.on('error', (err) => {
    child.kill();
    out.destroy(err);
  });
  // The consumer stopping early (EPIPE on zstd's input) is not an error of the data.
  child.stdin.on('error', () => {});
  out.on('close', () => {
    if (child.exitCode === null) child.kill();
  });
  input.pipe(child.stdin);
  return out;
}

/** The uncompressed tar of a layer blob, by the compression its media type names. */
export function decompressed(input: Readable, mediaType: string): Readable {
  if (mediaType.endsWith('zstd')) return zstdStream(input, ['-dc']);
  if (!mediaType.endsWith('gzip')) return input;
  const tar = input.pipe(createGunzip());
  input.on('error', (err) => tar.destroy(err));
  return tar;
}

export function readableFrom(data: Uint8Array): Readable {
  return Readable.from([data]);
}
