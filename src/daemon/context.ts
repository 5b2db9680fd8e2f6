/**
 * Build contexts uploaded as tar streams. A context is only data for COPY and ADD, yet it is
 * written on the server's disk and later read by the build, so it is held to a stricter rule
 * than a layer: a name with `..` or a leading `/`, a link that points outside the context and
 * any device are refused outright rather than cleaned, and the whole upload has a size limit.
 */
import { closeSync, constants, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, chmodSync, openSync, symlinkSync, writeSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { setAttributeSync } from '@napi-rs/xattr';
import { KilnError } from '../../cache/errors.js';
import { isContentXattr } from '../../cache/overlay.js';
import { randomId } from '../../cache/fsutil.js';
import type { Store } from '../../cache/store.js';
import { crashPoint, faultPoint } from '../../cache/trace.js';
import { readTar } from '../../cache/tarreader.js';
import type { DecodedTarHeader } from '../../cache/tarheader.js';
import type { ContextFileCache } from './file-cache.js';
import type { ContextEntry } from './wire.js';

export interface UploadedContext {
  dir: string;
  /** Bytes of the upload as it crossed the wire. */
  size: number;
  dispose(): Promise<void>;
}

/**
 * A new context directory under the store's `tmp/`, leased while the build uses it. Disposing of
 * it also forgets the checksum memos of its files: every build gets a directory of its own, so
 * they would only pile up in the index.
 */
function contextDir(store: Store): { dir: string; dispose(): Promise<void> } {
  const dir = join(store.root, 'tmp', `context-${process.pid}-${randomId(8)}`);
  const lease = store.lease('dir', dir);
  return {
    dir,
    dispose: async () => {
      await rm(dir, { recursive: true, force: true });
      store.db.forgetChecksumsUnder(dir);
      store.release(lease);
    },
  };
}

/**
 * A context's root, as `mkdir` makes a directory (the store above it is private): a tar without
 * an entry for its root (the docker client's) gets the root a local context usually has.
 */
function makeRoot(dir: string): void {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
}

/** A context with nothing in it, for a Dockerfile given without one (`kiln build - < Dockerfile`). */
export function emptyContext(store: Store): UploadedContext {
  const { dir, dispose } = contextDir(store);
  makeRoot(dir);
  return { dir, size: 0, dispose };
}

/**
 * Unpacks a context tar (plain or gzip) into a new leased directory under the store's `tmp/`,
 * so that a crash leaves nothing that start-up recovery does not remove.
 */
export async function receiveContext(store: Store, body: AsyncIterable<Buffer>, options: { maxBytes: number; signal: AbortSignal }): Promise<UploadedContext> {
  const { dir, dispose } = contextDir(store);
  let size = 0;
  try {
    makeRoot(dir);
    const counted = limitBytes(body, options.maxBytes, (n) => (size = n));
    await unpackContext(await maybeGunzip(counted), dir, options.signal);
    crashPoint('context-upload');
    faultPoint('context-upload');
    return { dir, size, dispose };
  } catch (err) {
    await dispose();
    throw err;
  }
}

/**
 * An incremental upload: the contents the cache lacked arrive as a tar named by checksum and go
 * into the cache first, then the context directory is made from the list and the cache (hard
 * links to one inode per content and metadata: see ContextFileCache.place).
 */
export async function receiveContextList(
  store: Store,
  cache: ContextFileCache,
  entries: readonly ContextEntry[],
  contents: AsyncIterable<Buffer>,
  options: { maxBytes: number; signal: AbortSignal; onBytes?: (n: number) => void },
): Promise<UploadedContext & { filesReceived: number }> {
  let total = 0;
  const checksums = new Set<string>();
  for (const e of entries) {
    if (e.type !== 'file') continue;
    total += e.size ?? 0;
    if (e.checksum === undefined) throw new KilnError('INVALID_REQUEST', `The context list gives no checksum for "${e.path}"`);
    checksums.add(e.checksum);
  }
  if (total > options.maxBytes) {
    throw new KilnError('CONTEXT_TOO_LARGE', `The build context is larger than the server's limit of ${options.maxBytes} bytes`, {
      hint: 'Leave large files out with a .dockerignore, or start the server with a larger --max-context-size',
    });
  }
  let sent = 0;
  const filesReceived = await cache.receive(
    limitBytes(contents, options.maxBytes, (n) => {
      options.onBytes?.(n - sent);
      sent = n;
    }),
    checksums,
    options.signal,
  );
  const { dir, dispose } = contextDir(store);
  try {
    makeRoot(dir);
    seedChecksums(store, materialise(cache, entries, dir, options.signal));
    crashPoint('context-upload');
    return { dir, size: sent, dispose, filesReceived };
  } catch (err) {
    await dispose();
    throw err;
  }
}

/** Returns the files placed, with their checksums. */
function materialise(cache: ContextFileCache, entries: readonly ContextEntry[], root: string, signal: AbortSignal): { abs: string; sum: string }[] {
  const files: { abs: string; sum: string }[] = [];
  const dirs = new Set<string>(['']);
  const dirTimes: [string, number][] = [];
  for (const e of entries) {
    signal.throwIfAborted();
    const rel = contextEntryPath(e.path);
    if (rel === '' && e.type !== 'dir') throw unsafe(e.path, 'a root that is not a directory');
    makeParents(root, rel, dirs, e.path);
    const abs = join(root, rel);
    switch (e.type) {
      case 'dir':
        placeDir(abs, e.path, e, entryXattrs(e));
        dirs.add(rel);
        dirTimes.push([abs, e.mtime]);
        break;
      case 'file': {
        if (lstatSync(abs, { throwIfNoEntry: false })) throw unsafe(e.path, 'a second entry for the same path');
        if (typeof e.checksum !== 'string' || typeof e.size !== 'number') throw new KilnError('INVALID_REQUEST', `The context list gives no checksum or size for "${e.path}"`);
        const xattrs = entryXattrs(e);
        if (!cache.place({ ...e, checksum: e.checksum, size: e.size, xattrs }, abs)) {
          throw new KilnError('CONTEXT_CONTENT_MISSING', `The build service no longer holds the content of "${e.path}"`, { hint: 'Run the build again: the client sends it anew' });
        }
        // A file with attributes is left to the build's checksum, which covers them.
        if (xattrs.length === 0) files.push({ abs, sum: e.checksum });
        break;
      }
      case 'symlink':
        if (typeof e.target !== 'string' || !linkStaysInside(rel, e.target)) throw unsafe(e.path, `a symbolic link to "${e.target}" outside the context`);
        symlinkSync(e.target, abs);
        lchownSync(abs, e.uid, e.gid);
        lutimesSync(abs, e.mtime, e.mtime);
        break;
      default:
        throw unsafe(e.path, `a ${String((e as { type: unknown }).type)}, which a build context cannot hold`);
    }
  }
  for (const [abs, mtime] of dirTimes.reverse()) lutimesSync(abs, mtime, mtime);
  return files;
}

/**
 * The checksums are known and verified: recording them in the store's memo spares the build
 * from hashing every file of a context it has never seen at this path.
 */
function seedChecksums(store: Store, files: readonly { abs: string; sum: string }[]): void {
  const rows = [];
  for (const f of files) {
    const st = lstatSync(f.abs, { bigint: true });
    rows.push({ path: f.abs, dev: Number(st.dev), ino: Number(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), sum: f.sum });
  }
  store.db.putChecksums(rows);
}

async function* limitBytes(body: AsyncIterable<Buffer>, max: number, onCount: (n: number) => void): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of body) {
    n += chunk.length;
    onCount(n);
    if (n > max) {
      throw new KilnError('CONTEXT_TOO_LARGE', `The build context is larger than the server's limit of ${max} bytes`, {
        hint: 'Leave large files out with a .dockerignore, or start the server with a larger --max-context-size',
      });
    }
    yield chunk;
  }
}

/** Docker clients may gzip the context (`--compress`): the first two bytes tell. */
async function maybeGunzip(source: AsyncGenerator<Buffer>): Promise<AsyncIterable<Buffer>> {
  const first = await source.next();
  if (first.done) return (async function* () {})();
  const head = first.value;
  async function* all(): AsyncGenerator<Buffer> {
    yield head;
    yield* source;
  }
  if (head.length < 2 || head[0] !== 0x1f || head[1] !== 0x8b) return all();
  const compressed = Readable.from(all());
  const gunzip = createGunzip();
  // pipe() does not pass errors on: the size limit or a client that went away would be an
  // unhandled 'error' of the source, which ends the process, and the reader would wait forever.
  compressed.once('error', (err) => gunzip.destroy(err));
  return compressed.pipe(gunzip);
}

function unsafe(name: string, why: string): KilnError {
  return new KilnError('UNSAFE_CONTEXT', `The build context holds "${name}", ${why}`, {
    hint: 'A context may only hold files, directories and links that stay inside it',
  });
}

/** The entry's path inside the context, or an error for names that climb or start at `/`. */
export function contextEntryPath(name: string): string {
  if (name.startsWith('/')) throw unsafe(name, 'an absolute path');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw unsafe(name, 'a path that climbs out of the context with ".."');
  return parts.join('/');
}

/** Whether a link target, read from the link's own directory, stays inside the context. */
export function linkStaysInside(linkPath: string, target: string): boolean {
  if (target.startsWith('/')) return false;
  // Counted by hand: joining onto `/` would clamp `..` at the root and hide the escape.
  let depth = linkPath.split('/').length - 1;
  for (const part of target.split('/')) {
    if (part === '..') depth--;
    else if (part !== '' && part !== '.') depth++;
    if (depth < 0) return false;
  }
  return true;
}

/**
 * The tar reader speaks of layers; a damaged context says it is the context, and what to do.
 * Only "Layer archive…" messages are the reader's own. zlib's errors (a gzip cut short, or
 * bytes that only start like one) are the client's data too, not a failure of the server.
 */
function contextArchiveError(err: unknown): unknown {
  const hint = 'Send the context again as a tar, plain or compressed with gzip';
  const zlibCode = (err as NodeJS.ErrnoException | undefined)?.code;
  if (err instanceof Error && typeof zlibCode === 'string' && zlibCode.startsWith('Z_')) {
    return new KilnError('CONTEXT_CORRUPT', `The build context archive is not valid gzip: ${err.message}`, { hint, cause: err });
  }
  if (!(err instanceof KilnError) || !err.message.startsWith('Layer archive')) return err;
  return new KilnError('CONTEXT_CORRUPT', `The build context archive${err.message.slice('Layer archive'.length)}`, { hint, cause: err });
}

async function unpackContext(source: AsyncIterable<Buffer>, root: string, signal: AbortSignal): Promise<void> {
  try {
    await unpackEntries(source, root, signal);
  } catch (err) {
    throw contextArchiveError(err);
  }
}

async function unpackEntries(source: AsyncIterable<Buffer>, root: string, signal: AbortSignal): Promise<void> {
  const dirs = new Set<string>(['']);
  const dirTimes: [string, number][] = [];
  for await (const { header, body } of readTar(source)) {
    signal.throwIfAborted();
    const rel = contextEntryPath(header.name);
    if (rel === '' && header.type !== 'directory') throw unsafe(header.name, 'a root that is not a directory');
    makeParents(root, rel, dirs, header.name);
    const abs = join(root, rel);
    switch (header.type) {
      case 'directory':
        placeDir(abs, header.name, header, header.xattrs);
        dirs.add(rel);
        dirTimes.push([abs, header.mtime]);
        break;
      case 'file':
        await writeEntry(abs, header, body);
        setContextXattrs(abs, header.xattrs);
        break;
      case 'symlink':
        if (!linkStaysInside(rel, header.linkname)) throw unsafe(header.name, `a symbolic link to "${header.linkname}" outside the context`);
        symlinkSync(header.linkname, abs);
        lchownSync(abs, header.uid, header.gid);
        lutimesSync(abs, header.mtime, header.mtime);
        break;
      case 'link': {
        const target = contextEntryPath(header.linkname);
        const st = lstatSync(join(root, target), { throwIfNoEntry: false });
        if (target === '' || !st || st.isDirectory()) throw unsafe(header.name, `a hard link to "${header.linkname}", which is not a file of the context`);
        makeParents(root, target, dirs, header.name);
        linkSync(join(root, target), abs);
        break;
      }
      default:
        throw unsafe(header.name, `a ${header.type}, which a build context cannot hold`);
    }
  }
  // Last, because creating anything in a directory moves its modification time.
  for (const [abs, mtime] of dirTimes.reverse()) lutimesSync(abs, mtime, mtime);
}

/**
 * Gives a context file or directory the extended attributes its entry carries (the docker
 * client sends file capabilities), after chown, which clears them. As COPY does, overlayfs' own
 * and the SELinux label are left out: they would mean something on this host.
 */
function setContextXattrs(abs: string, xattrs: Iterable<[string, Buffer]>): void {
  for (const [name, value] of xattrs) if (isContentXattr(name)) setAttributeSync(abs, name, value);
}

/**
 * A list entry's extended attributes in name order, checked: only those a COPY carries
 * (isContentXattr), values in base64. The client sends nothing else.
 */
function entryXattrs(e: ContextEntry): [string, Buffer][] {
  if (e.xattrs === undefined) return [];
  if (typeof e.xattrs !== 'object' || e.xattrs === null || Array.isArray(e.xattrs)) {
    throw new KilnError('INVALID_REQUEST', `The context list gives malformed extended attributes for "${e.path}"`);
  }
  return Object.entries(e.xattrs)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, value]) => {
      if (typeof value !== 'string' || !isContentXattr(name) || !/^(trusted|user|security|system)\./.test(name)) {
        throw new KilnError('INVALID_REQUEST', `The context list gives "${e.path}" an extended attribute a context cannot carry: "${name}"`);
      }
      return [name, Buffer.from(value, 'base64')];
    });
}

/**
 * A directory of the context, or its root (which the client sends as `.`: a build's checksum of
 * `COPY .` covers the root's mode and owner, so a root that differed from the client's would miss
 * the cache of the same context built locally). Its time is set by the caller, after its entries.
 */
function placeDir(abs: string, name: string, h: { mode: number; uid: number; gid: number }, xattrs: Iterable<[string, Buffer]>): void {
  const st = lstatSync(abs, { throwIfNoEntry: false });
  if (st && !st.isDirectory()) throw unsafe(name, 'a directory that replaces another entry');
  if (!st) mkdirSync(abs);
  chmodSync(abs, h.mode & 0o7777);
  lchownSync(abs, h.uid, h.gid);
  setContextXattrs(abs, xattrs);
}

/** Parents are created as needed and must be real directories: nothing is written through a link. */
function makeParents(root: string, rel: string, dirs: Set<string>, name: string): void {
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    if (dirs.has(dir)) continue;
    const abs = join(root, dir);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st) mkdirSync(abs, 0o755);
    else if (!st.isDirectory()) throw unsafe(name, `an entry under "${dir}", which is not a directory`);
    dirs.add(dir);
  }
}

async function writeEntry(abs: string, h: DecodedTarHeader, body: AsyncIterable<Buffer>): Promise<void> {
  let fd: number;
  try {
    fd = openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw unsafe(h.name, 'a second entry for the same path');
    throw err;
  }
  try {
    for await (const chunk of body) {
      for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
    }
    fchownSync(fd, h.uid, h.gid);
    fchmodSync(fd, h.mode & 0o7777);
    futimesSync(fd, h.atime ?? h.mtime, h.mtime);
  } finally {
    closeSync(fd);
  }
}
