import { closeSync, createReadStream, mkdirSync, openSync, renameSync, statSync, writeFileSync, writev } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type Digest, digestHex, Hasher } from './digest.js';
import { isNoSpace, KilnError, noSpaceError } from './errors.js';
import { fsyncDir, fsyncFd, isErrno, randomId, readFileQuickly } from './fsutil.js';
import { crashPoint, traced } from './trace.js';

/** Blobs small enough to verify on every read (configs, manifests). */
const VERIFY_ON_READ_LIMIT = 1 << 20;

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** Bytes of stream chunks gathered before one vectored write. */
const WRITE_BATCH_BYTES = 1024 * 1024;

function writevAsync(fd: number, parts: Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) => writev(fd, parts, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Writes every part at the file's current position, however many calls the kernel needs. */
async function writeAll(fd: number, parts: Uint8Array[]): Promise<void> {
  let rest = parts;
  while (rest.length > 0) {
    const bytesWritten = await writevAsync(fd, rest);
    let left = bytesWritten;
    let i = 0;
    while (i < rest.length && left >= rest[i]!.byteLength) left -= rest[i++]!.byteLength;
    rest = rest.slice(i);
    if (left > 0) rest[0] = rest[0]!.subarray(left);
  }
}

/**
 * The content store: `blobs/sha256/<hex>`, immutable, named by digest. Every write goes to
 * `tmp/`, is fsynced, verified and renamed into place, so a crash leaves either no blob or a
 * whole one.
 */
export class BlobStore {
  readonly dir: string;
  private readonly tmpDir: string;

  constructor(root: string) {
    this.dir = join(root, 'blobs', 'sha256');
    this.tmpDir = join(root, 'tmp');
  }

  init(): void {
    mkdirSync(this.dir, { recursive: true });
    mkdirSync(this.tmpDir, { recursive: true });
  }

  path(digest: Digest): string {
    return join(this.dir, digestHex(digest));
  }

  /** A temporary path under the store's tmp/, on the same filesystem as the blobs. */
  tempPath(prefix: string): string {
    return join(this.tmpDir, `${prefix}-${process.pid}-${randomId()}`);
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      statSync(this.path(digest));
      return true;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw err;
    }
  }

  async size(digest: Digest): Promise<number> {
    return statSync(this.path(digest)).size;
  }

  async writeBuffer(data: Uint8Array, expected?: Digest): Promise<BlobInfo> {
    const hasher = new Hasher().update(data);
    const digest = hasher.digest();
    checkExpected(digest, expected);
    // A blob already there is checked, not trusted: one damaged on disk is written again.
    if (await this.intact(digest, data.byteLength)) return { digest, size: data.byteLength };
    const tmp = this.tempPath('blob');
    const fd = openSync(tmp, 'w', 0o444);
    try {
      writeFileSync(fd, data);
      crashPoint('blob-write');
      await fsyncFd(fd);
    } catch (err) {
      closeSync(fd);
      await rm(tmp, { force: true });
      throw isNoSpace(err) ? noSpaceError(tmp, 'writing a blob', err) : err;
    }
    closeSync(fd);
    await this.commit(tmp, digest);
    return { digest, size: data.byteLength };
  }

  /** Streams `source` into the store, hashing as it goes. */
  async writeStream(source: AsyncIterable<Uint8Array> | Readable, options: { expected?: Digest; signal?: AbortSignal } = {}): Promise<BlobInfo> {
    const tmp = this.tempPath('blob');
    const hasher = new Hasher();
    const fd = openSync(tmp, 'w', 0o444);
    let ok = false;
    try {
      // Network chunks are 16-64 KiB: they are written a batch at a time, one system call (and
      // one thread-pool round trip) per WRITE_BATCH_BYTES instead of one per chunk.
      let batch: Uint8Array[] = [];
      let batched = 0;
      const flush = async () => {
        if (batched === 0) return;
        const parts = batch;
        batch = [];
        batched = 0;
        await writeAll(fd, parts);
        crashPoint('blob-write');
      };
      for await (const chunk of source as AsyncIterable<Uint8Array>) {
        options.signal?.throwIfAborted();
        hasher.update(chunk);
        batch.push(chunk);
        batched += chunk.byteLength;
        if (batched >= WRITE_BATCH_BYTES) await flush();
      }
      await flush();
      await traced('fsync', () => fsyncFd(fd));
      ok = true;
    } catch (err) {
      throw isNoSpace(err) ? noSpaceError(tmp, 'writing a blob', err) : err;
    } finally {
      closeSync(fd);
      if (!ok) await rm(tmp, { force: true });
    }
    const digest = hasher.digest();
    try {
      checkExpected(digest, options.expected);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    // The new copy is whole and verified: it takes the place of one already there, which may be
    // damaged (checking it would cost another read of it; the rename costs nothing).
    await this.commit(tmp, digest);
    return { digest, size: hasher.size };
  }

  /** Whether the blob is there with the given size and content. */
  private async intact(digest: Digest, size: number): Promise<boolean> {
    let data: Buffer;
    try {
      if (statSync(this.path(digest)).size !== size) return false;
      // As read() reads: a small blob at once, a large one off the event loop.
      data = await readFileQuickly(this.path(digest), VERIFY_ON_READ_LIMIT);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return false;
      throw err;
    }
    return new Hasher().update(data).digest() === digest;
  }

  /** Moves a file already written and fsynced under tmp/ into place as `digest`. */
  async commit(tmp: string, digest: Digest): Promise<void> {
    crashPoint('blob-rename');
    renameSync(tmp, this.path(digest));
    await fsyncDir(this.dir);
  }

  async read(digest: Digest): Promise<Buffer> {
    let data: Buffer;
    try {
      // Configs and manifests without a thread-pool round trip; a large blob off the event loop.
      data = await readFileQuickly(this.path(digest), VERIFY_ON_READ_LIMIT);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        throw new KilnError('BLOB_UNKNOWN', `Blob "${digest}" is not in the store`, { hint: 'Run "kiln store verify" to check the store' });
      }
      throw err;
    }
    if (data.byteLength <= VERIFY_ON_READ_LIMIT) {
      const actual = new Hasher().update(data).digest();
      if (actual !== digest) {
        throw new KilnError('BLOB_CORRUPT', `Blob "${digest}" is corrupt: its content hashes to "${actual}"`);
      }
    }
    return data;
  }

  async readJson<T>(digest: Digest): Promise<T> {
    return JSON.parse((await this.read(digest)).toString('utf8')) as T;
  }

  open(digest: Digest): Readable {
    return createReadStream(this.path(digest));
  }

  /** Re-hashes a blob; used by `kiln store verify`. */
  async verify(digest: Digest): Promise<boolean> {
    const hasher = new Hasher();
    for await (const chunk of createReadStream(this.path(digest))) hasher.update(chunk as Buffer);
    return hasher.digest() === digest;
  }
}

function checkExpected(actual: Digest, expected: Digest | undefined): void {
  if (expected !== undefined && actual !== expected) {
    throw new KilnError('DIGEST_MISMATCH', `Content hashes to "${actual}", expected "${expected}"`);
  }
}
