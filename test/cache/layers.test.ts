import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { createGzip, gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestOf } from '../../cache/digest.js';
import { storeLayerTarSized } from '../../cache/layers.js';
import { Store } from '../../cache/store.js';
import { tempDir } from '../helpers/kiln.js';

/** What a gzip stream at level 6 makes of these chunks, fed one by one. */
async function streamedGzip(chunks: readonly Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of Readable.from(chunks).pipe(createGzip({ level: 6 }))) out.push(c as Buffer);
  return Buffer.concat(out);
}

/** Text and random bytes in uneven chunks, as a layer tar arrives. */
function chunksOf(total: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let n = 0, i = 0; n < total; i++) {
    const size = Math.min(total - n, 1000 + ((i * 7919) % 50_000));
    chunks.push(i % 3 === 0 ? randomBytes(size) : Buffer.from(`line ${i} `.repeat(size)).subarray(0, size));
    n += size;
  }
  return chunks;
}

describe('storing a layer tar', () => {
  let t: ReturnType<typeof tempDir>;
  let store: Store;
  beforeEach(async () => {
    t = tempDir('kiln-layers-');
    store = await Store.open(t.path);
  });
  afterEach(async () => {
    store.close();
    await t.cleanup();
  });

  // One size well under the limit of a single compression call, one over it: the blob must be
  // what a gzip stream makes either way, or a layer's digest would depend on its path.
  it.each([[20_000], [700_000]])('gives the blob a gzip stream gives, for a %i-byte tar', async (size) => {
    const chunks = chunksOf(size);
    const tar = Buffer.concat(chunks);
    const { layer, tarSize } = await storeLayerTarSized(store, Readable.from(chunks));
    const expected = await streamedGzip(chunks);
    expect(tarSize).toBe(size);
    expect(layer.diffId).toBe(digestOf(tar));
    expect(layer.blob).toBe(digestOf(expected));
    expect(layer.blobSize).toBe(expected.length);
    const stored = readFileSync(store.blobs.path(layer.blob));
    expect(gunzipSync(stored).equals(tar)).toBe(true);
    expect(store.db.getLayer(layer.diffId)?.blob).toBe(layer.blob);
  });

  it('fails with the source, storing nothing', async () => {
    const failing = Readable.from(
      (async function* () {
        yield Buffer.alloc(1000);
        throw new Error('the walk failed');
      })(),
    );
    await expect(storeLayerTarSized(store, failing)).rejects.toThrow('the walk failed');
    const big = Readable.from(
      (async function* () {
        yield* chunksOf(300_000);
        throw new Error('the walk failed late');
      })(),
    );
    await expect(storeLayerTarSized(store, big)).rejects.toThrow('the walk failed late');
    expect(store.db.allLayers()).toEqual([]);
  });
});
