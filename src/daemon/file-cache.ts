/**
 * The server's content-addressed cache of uploaded context files, `context-files/sha256/HEX`
 * under the store: what one upload sent, later uploads of any client only name. Files are
 * written to `tmp/`, hashed while written, fsynced and renamed into place, so a name always
 * holds its content. A use refreshes a file's mtime; files unused for `maxAgeMs` are swept.
 *
 * Contexts are made of hard links to `context-files/variants/HEX-MODE-UID-GID-MTIME`: one inode
 * per content and metadata, since linked names share mode, owner and times. Linking is an
 * order of magnitude cheaper than copying on a slow disk, and builds only read a context (a
 * read-write bind mount of it is an overlay), so the shared inode is never written.
 */
import { chmodSync, closeSync, constants, copyFileSync, fsyncSync, lchownSync, linkSync, lutimesSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setAttributeSync } from '@napi-rs/xattr';
import { KilnError } from '../../cache/errors.js';
import { Hasher, isDigest } from '../../cache/digest.js';
import { isErrno, randomId } from '../../cache/fsutil.js';
import { CONTEXT_FILES_DIR, CONTEXT_FILES_MAX_AGE_MS } from '../../cache/gc.js';
import { xattrsDigest } from '../../cache/overlay.js';
import type { Store } from '../../cache/store.js';
import { readTar } from '../../cache/tarreader.js';

/** Sweeps run at most this often: listing a large cache is not free. */
const SWEEP_EVERY_MS = 3600 * 1000;

export class ContextFileCache {
  readonly dir: string;
  readonly variants: string;
  private lastSweep = 0;

  constructor(
    private readonly store: Store,
    private readonly maxAgeMs = CONTEXT_FILES_MAX_AGE_MS,
  ) {
    this.dir = join(store.root, CONTEXT_FILES_DIR, 'sha256');
    this.variants = join(store.root, CONTEXT_FILES_DIR, 'variants');
  }

  path(checksum: string): string {
    if (!isDigest(checksum)) throw new KilnError('INVALID_REQUEST', `"${checksum}" is not a sha256 checksum`);
    return join(this.dir, checksum.slice(7));
  }

  /**
   * The checksums whose content the cache lacks. Those it has are touched, so that a sweep
   * between this answer and the build that relies on it does not take them away.
   */
  missing(checksums: readonly string[]): string[] {
    const out: string[] = [];
    const now = new Date();
    for (const sum of new Set(checksums)) {
      const p = this.path(sum);
      try {
        utimesSync(p, now, now);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
        out.push(sum);
      }
    }
    return out;
  }

  /** The size of a cached content, or undefined when the cache lacks it. */
  size(checksum: string): number | undefined {
    return statSync(this.path(checksum), { throwIfNoEntry: false })?.size;
  }

  /**
   * Adds the files of a tar whose entries are named by checksum hex; only `wanted` checksums are
   * accepted, and each content must hash to its name.
   */
  async receive(source: AsyncIterable<Buffer>, wanted: ReadonlySet<string>, signal: AbortSignal): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(join(this.store.root, 'tmp'), { recursive: true });
    let files = 0;
    for await (const { header, body } of readTar(source)) {
      signal.throwIfAborted();
      const checksum = `sha256:${header.name}`;
      if (header.type !== 'file' || !wanted.has(checksum)) {
        throw new KilnError('INVALID_REQUEST', `The context upload holds "${header.name}", which its list does not name`);
      }
      // Named with the pid, as store recovery expects: a crash mid-write leaves nothing behind.
      const tmp = join(this.store.root, 'tmp', `cfile-${process.pid}-${randomId(8)}`);
      const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      const hasher = new Hasher();
      try {
        for await (const chunk of body) {
          hasher.update(chunk);
          for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
        }
        fsyncSync(fd);
      } catch (err) {
        closeSync(fd);
        unlinkSync(tmp);
        throw err;
      }
      closeSync(fd);
      const actual = hasher.digest();
      if (actual !== checksum) {
        unlinkSync(tmp);
        throw new KilnError('CONTEXT_CHECKSUM_MISMATCH', `The uploaded content named "${checksum}" hashes to "${actual}"`, {
          hint: 'A file of the context changed while it was being sent; run the build again',
        });
      }
      // An equal content that another upload placed meanwhile is simply replaced by its twin.
      renameSync(tmp, this.path(checksum));
      files++;
    }
    return files;
  }

  /**
   * Places a file of the given content and metadata at `dest` (which must not exist): a hard link
   * to its variant, made from the content first if needed. Returns false when the cache holds
   * neither the variant nor the content.
   */
  place(entry: PlacedFile, dest: string): boolean {
    const hex = this.path(entry.checksum).slice(this.dir.length + 1);
    // Attributes make a variant of their own (a digest of them in its name).
    const attrs = entry.xattrs.length === 0 ? '' : `-x${xattrsDigest(entry.xattrs).slice(7, 23)}`;
    const variant = join(this.variants, `${hex}-${(entry.mode & 0o7777).toString(8)}-${entry.uid}-${entry.gid}-${entry.mtime}${attrs}`);
    try {
      linkSync(variant, dest);
      return true;
    } catch (err) {
      if (isErrno(err, 'EMLINK')) {
        // The variant has as many names as the file system allows: this context gets a copy.
        copyFileSync(variant, dest, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        setMetadata(dest, entry);
        return true;
      }
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    const size = this.size(entry.checksum);
    if (size === undefined) return false;
    // The name was verified when the content arrived; the size is the cheap check on reading.
    if (size !== entry.size) throw new KilnError('CONTEXT_CHECKSUM_MISMATCH', `The cached content "${entry.checksum}" has ${size} bytes, the context list says ${entry.size}`);
    mkdirSync(this.variants, { recursive: true });
    const tmp = join(this.store.root, 'tmp', `cfile-${process.pid}-${randomId(8)}`);
    try {
      copyFileSync(this.path(entry.checksum), tmp, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      setMetadata(tmp, entry);
      renameSync(tmp, variant);
    } catch (err) {
      unlinkSync(tmp);
      throw err;
    }
    linkSync(variant, dest);
    return true;
  }

  /** Removes contents unused for `maxAgeMs`, at most once an hour. */
  async sweep(now = Date.now()): Promise<number> {
    if (now - this.lastSweep < SWEEP_EVERY_MS) return 0;
    this.lastSweep = now;
    let removed = 0;
    // Contents are touched when an upload relies on them; a variant's ctime moves with each link.
    for (const [dir, used] of [
      [this.dir, 'mtimeMs'],
      [this.variants, 'ctimeMs'],
    ] as const) {
      removed += await this.sweepDir(dir, used, now);
    }
    return removed;
  }

  private async sweepDir(dir: string, used: 'mtimeMs' | 'ctimeMs', now: number): Promise<number> {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const p = join(dir, name);
      try {
        if (now - (await stat(p))[used] > this.maxAgeMs) {
          await rm(p, { force: true });
          removed++;
        }
      } catch (err) {
        // Removed by a concurrent sweep: already what this one wanted.
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    return removed;
  }
}

/** A context file to place: its content, metadata and extended attributes (in name order). */
export interface PlacedFile {
  checksum: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  xattrs: readonly [string, Buffer][];
}

function setMetadata(path: string, e: PlacedFile): void {
  // Owner before mode: a change of owner clears set-user-ID and set-group-ID bits; both before
  // the attributes, since it also clears file capabilities.
  lchownSync(path, e.uid, e.gid);
  chmodSync(path, e.mode & 0o7777);
  for (const [name, value] of e.xattrs) setAttributeSync(path, name, value);
  lutimesSync(path, e.mtime, e.mtime);
}
