import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobStore } from '../../cache/blobs.js';
import { digestOf, parseDigest, canonicalJson } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import { tempDir } from '../helpers/kiln.js';

describe('the content store', () => {
  let t: ReturnType<typeof tempDir>;
  let blobs: BlobStore;
  beforeEach(async () => {
    t = tempDir();
    blobs = new BlobStore(t.path);
    await blobs.init();
  });
  afterEach(() => t.cleanup());

  it('stores a buffer under its digest, read-only, and reads it back verified', async () => {
    const info = await blobs.writeBuffer(Buffer.from('hello'));
    expect(info.digest).toBe(digestOf('hello'));
    expect(readdirSync(blobs.dir)).toEqual([info.digest.slice(7)]);
    expect((await blobs.read(info.digest)).toString()).toBe('hello');
    expect(readdirSync(join(t.path, 'tmp'))).toEqual([]);
  });

  it('streams, and rejects content that does not match the expected digest without leaving a file', async () => {
    const expected = digestOf('other');
    await expect(blobs.writeStream(Readable.from([Buffer.from('content')]), { expected })).rejects.toThrow(/expected "sha256:/);
    expect(readdirSync(blobs.dir)).toEqual([]);
    expect(readdirSync(join(t.path, 'tmp'))).toEqual([]);
    const ok = await blobs.writeStream(Readable.from([Buffer.from('con'), Buffer.from('tent')]));
    expect(ok).toEqual({ digest: digestOf('content'), size: 7 });
  });

  it('writes many small chunks in batches, every byte in order, the empty ones included', async () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < 3000; i++) chunks.push(i % 100 === 0 ? Buffer.alloc(0) : Buffer.from(`chunk ${i} `.repeat(80)));
    const whole = Buffer.concat(chunks);
    const info = await blobs.writeStream(Readable.from(chunks));
    expect(whole.length).toBeGreaterThan(2 * 1024 * 1024);
    expect(info).toEqual({ digest: digestOf(whole), size: whole.length });
    expect((await blobs.read(info.digest)).equals(whole)).toBe(true);
  });

  it('detects a corrupt blob on read and on verify', async () => {
    const info = await blobs.writeBuffer(Buffer.from('good'));
    const path = blobs.path(info.digest);
    chmodSync(path, 0o644);
    writeFileSync(path, 'evil');
    await expect(blobs.read(info.digest)).rejects.toThrow(KilnError);
    await expect(blobs.read(info.digest)).rejects.toThrow(/is corrupt/);
    expect(await blobs.verify(info.digest)).toBe(false);
  });

  it('names a missing blob', async () => {
    await expect(blobs.read(digestOf('nope'))).rejects.toThrow(/is not in the store/);
  });
});

describe('digests', () => {
  it('are a checked type', () => {
    expect(() => parseDigest('sha256:abc')).toThrow(/Invalid digest/);
    expect(parseDigest(digestOf('x'))).toBe(digestOf('x'));
  });

  it('canonical JSON sorts keys and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: undefined, c: [2, undefined] } })).toBe('{"a":{"c":[2,null]},"b":1}');
  });
});
