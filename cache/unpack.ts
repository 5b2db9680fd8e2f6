/**
 * Unpacks an OCI layer tar into a directory that overlayfs can use as a lowerdir as it is: OCI
 * whiteouts become overlayfs whiteouts (0/0 character devices) and opaque markers become the
 * `trusted.overlay.opaque` attribute, instead of being applied to the layers below.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  rmSync,
  symlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { addAbortSignal, type Readable } from 'node:stream';
import { promisify } from 'node:util';
import { listAttributesSync, removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { KilnError } from './errors.js';
import { isWhiteout } from './overlay.js';
import type { DecodedTarHeader } from './tarheader.js';
import { readTar } from './tarreader.js';
import { crashPoint } from './trace.js';
import {
  OPAQUE_MARKER,
  RESERVED_WHITEOUT_PREFIX,
  WHITEOUT_PREFIX,
  ancestors,
  baseName,
  cleanEntryPath,
  joinPath,
  parentPath,
  resolveLinkTarget,
} from './tarpath.js';

export interface UnpackOptions {
  signal?: AbortSignal;
}

export interface UnpackResult {
  /** Bytes of regular file content written. */
  size: number;
  /** Tar entries read, whiteout markers included. */
  entries: number;
}

/**
 * Unpacks an uncompressed layer tar into `destDir` (created when missing), as root: owners are
 * numeric and kept, so are modes, times and extended attributes. A later entry for the same path
 * replaces an earlier one, and two directories merge. Names are cleaned so that nothing lands
 * outside `destDir`; an entry whose parent is a symbolic link, or a hard link whose target lies
 * outside the layer, is refused with UNSAFE_ARCHIVE. A damaged or truncated stream rejects with
 * CORRUPT_ARCHIVE. On failure `destDir` is left half written, for the caller to discard.
 *
 * The stream is consumed at the pace the files are written. Aborting destroys `tar`.
 */
export async function unpackLayer(tar: Readable, destDir: string, options: UnpackOptions = {}): Promise<UnpackResult> {
  const { signal } = options;
  signal?.throwIfAborted();
  if (signal) addAbortSignal(signal, tar);
  const root = resolve(destDir);
  mkdirSync(root, { recursive: true });
  const state: Unpack = { root, signal, dirs: new Set(['']), dirTimes: new Map(), templates: [] };
  let size = 0;
  let entries = 0;
  let current = '';
  try {
    for await (const { header, body } of readTar(tar)) {
      signal?.throwIfAborted();
      entries++;
      current = header.name;
      if (entries === 2) crashPoint('layer-unpack');
      try {
        size += await applyEntry(state, header, body);
      } catch (err) {
        throw withEntryName(err, header.name);
      }
    }
  } catch (err) {
    throw corruptStream(err, current) ?? err;
  } finally {
    for (const template of state.templates) rmSync(template, { force: true });
  }
  // Last, because creating anything in a directory moves its modification time.
  for (const [rel, time] of state.dirTimes) lutimesSync(join(root, rel), time.atime, time.mtime);
  return { size, entries };
}

/*
 * File system calls here are synchronous on purpose: a layer is mostly small files, each needing
 * half a dozen calls, and an asynchronous call costs a thread pool round trip many times the
 * price of the call itself. The event loop still runs whenever the next chunk of the stream is
 * awaited.
 */

interface Unpack {
  root: string;
  signal: AbortSignal | undefined;
  /** Paths known to be real directories (not symbolic links) created or checked by this unpack. */
  dirs: Set<string>;
  /** Directory times from the archive, applied once everything else is written. */
  dirTimes: Map<string, { atime: number; mtime: number }>;
  /** The whiteout device that new whiteouts are hard links to. */
  whiteout?: string;
  /** Every whiteout device made, all removed at the end. */
  templates: string[];
}

async function applyEntry(u: Unpack, h: DecodedTarHeader, body: AsyncIterable<Buffer>): Promise<number> {
  const rel = cleanEntryPath(h.name);
  const base = baseName(rel);
  if (base.startsWith(WHITEOUT_PREFIX)) {
    await applyMarker(u, rel, h.name);
    return 0;
  }
  if (rel === '') {
    if (h.type !== 'directory') throw new KilnError('UNSAFE_ARCHIVE', `Entry "${h.name}" would replace the layer root`);
    setMetadata(u.root, h, false);
    u.dirTimes.set('', timesOf(h));
    return 0;
  }
  makeParents(u, rel, h.name);
  const abs = join(u.root, rel);
  switch (h.type) {
    case 'directory':
      makeDirectory(u, rel, abs, h);
      return 0;
    case 'file':
      return writeFile(u, rel, abs, h, body);
    case 'symlink':
      clear(u, rel, abs, false);
      symlinkSync(h.linkname, abs);
      setMetadata(abs, h, true);
      setTimes(abs, h);
      return 0;
    case 'link':
      makeHardLink(u, rel, abs, h);
      return 0;
    case 'character-device':
    case 'block-device':
    case 'fifo': {
      clear(u, rel, abs, false);
      const kind = h.type === 'fifo' ? ['p'] : [h.type === 'block-device' ? 'b' : 'c', String(h.devmajor), String(h.devminor)];
      await mknod(['-m', '600', abs, ...kind], u.signal);
      setMetadata(abs, h, false);
      setTimes(abs, h);
      return 0;
    }
  }
}

/** `.wh.NAME` becomes a whiteout device `NAME`; `.wh..wh..opq` makes its directory opaque. */
async function applyMarker(u: Unpack, rel: string, name: string): Promise<void> {
  const base = baseName(rel);
  const dir = parentPath(rel);
  if (base === OPAQUE_MARKER) {
    makeParents(u, rel, name);
    setAttributeSync(join(u.root, dir), 'trusted.overlay.opaque', 'y');
    return;
  }
  if (base.startsWith(RESERVED_WHITEOUT_PREFIX)) return; // aufs bookkeeping, meaningless to overlayfs
  const victim = base.slice(WHITEOUT_PREFIX.length);
  if (victim === '' || victim === '.' || victim === '..') {
    throw new KilnError('UNSAFE_ARCHIVE', `Whiteout "${name}" would delete the directory that holds it`);
  }
  const target = joinPath(dir, victim);
  makeParents(u, target, name);
  const abs = join(u.root, target);
  const existing = lstatSync(abs, { throwIfNoEntry: false });
  // A whiteout hides only what the layers below hold. When this layer has its own entry there,
  // that entry already hides them, and a directory has to hide their contents as well.
  if (existing?.isDirectory()) setAttributeSync(abs, 'trusted.overlay.opaque', 'y');
  if (existing !== undefined) return;
  const template = await whiteoutTemplate(u);
  try {
    linkSync(template, abs);
  } catch (err) {
    if (errorCode(err) !== 'EMLINK') throw err;
    u.whiteout = undefined;
    linkSync(await whiteoutTemplate(u), abs);
  }
}

/**
 * One whiteout device per unpack, and every whiteout a hard link to it, as overlayfs itself does
 * in an upperdir: one `mknod` process instead of one per deleted file. The device's own name is
 * removed at the end; should a crash leave it behind, overlayfs hides it like any whiteout.
 */
async function whiteoutTemplate(u: Unpack): Promise<string> {
  if (u.whiteout === undefined) {
    const path = join(u.root, `.kiln-whiteout-${randomBytes(8).toString('hex')}`);
    await mknod(['-m', '000', path, 'c', '0', '0'], u.signal);
    u.templates.push(path);
    u.whiteout = path;
  }
  return u.whiteout;
}

/**
 * Creates the missing parents of `rel` and checks the existing ones with lstat, so that no entry
 * is ever written through a symbolic link, least of all one this archive made.
 */
function makeParents(u: Unpack, rel: string, name: string): void {
  for (const dir of ancestors(rel)) {
    if (u.dirs.has(dir)) continue;
    const abs = join(u.root, dir);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (st === undefined) {
      mkdirSync(abs);
      chmodSync(abs, 0o755);
    } else if (st.isSymbolicLink()) {
      throw new KilnError('UNSAFE_ARCHIVE', `Entry "${name}" would be written through the symbolic link "${dir}"`, {
        hint: 'A layer may not place files behind a symbolic link; the archive is malformed or malicious',
      });
    } else if (isWhiteout(st)) {
      // Deleted below and given new content in this layer: the new directory replaces the old one.
      rmSync(abs);
      mkdirSync(abs);
      chmodSync(abs, 0o755);
      setAttributeSync(abs, 'trusted.overlay.opaque', 'y');
    } else if (!st.isDirectory()) {
      throw new KilnError('CORRUPT_ARCHIVE', `Entry "${name}" lies under "${dir}", which is not a directory`);
    }
    u.dirs.add(dir);
  }
}

/**
 * Makes room for a new entry at `rel`: whatever is there goes, except a directory when a
 * directory is coming. Returns what was there.
 */
function clear(u: Unpack, rel: string, abs: string, keepDirectory: boolean): Stats | undefined {
  const st = lstatSync(abs, { throwIfNoEntry: false });
  if (st === undefined || (keepDirectory && st.isDirectory())) return st;
  rmSync(abs, { recursive: true });
  if (st.isDirectory()) {
    for (const known of [...u.dirs, ...u.dirTimes.keys()]) {
      if (known === rel || known.startsWith(`${rel}/`)) {
        u.dirs.delete(known);
        u.dirTimes.delete(known);
      }
    }
  }
  return st;
}

function makeDirectory(u: Unpack, rel: string, abs: string, h: DecodedTarHeader): void {
  const previous = clear(u, rel, abs, true);
  if (previous?.isDirectory()) {
    // The later entry's attributes replace the earlier ones; overlayfs' own flags stay.
    for (const name of listAttributesSync(abs)) {
      if (!name.startsWith('trusted.overlay.') && !h.xattrs.has(name)) removeAttributeSync(abs, name);
    }
  } else {
    mkdirSync(abs, 0o700);
    if (previous !== undefined && isWhiteout(previous)) setAttributeSync(abs, 'trusted.overlay.opaque', 'y');
  }
  setMetadata(abs, h, false);
  u.dirs.add(rel);
  u.dirTimes.set(rel, timesOf(h));
}

async function writeFile(u: Unpack, rel: string, abs: string, h: DecodedTarHeader, body: AsyncIterable<Buffer>): Promise<number> {
  const fd = createExclusive(u, rel, abs);
  let written = 0;
  try {
    for await (const chunk of body) {
      for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
      written += chunk.length;
    }
    // Owner first: chown clears setuid and setgid bits and file capabilities.
    fchownSync(fd, h.uid, h.gid);
    fchmodSync(fd, h.mode);
    setXattrs(abs, h.xattrs);
    const { atime, mtime } = timesOf(h);
    futimesSync(fd, atime, mtime);
  } finally {
    closeSync(fd);
  }
  return written;
}

/** Most paths are new, so the create is tried first and what is in the way cleared only on EEXIST. */
function createExclusive(u: Unpack, rel: string, abs: string): number {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    return openSync(abs, flags, 0o600);
  } catch (err) {
    if (errorCode(err) !== 'EEXIST') throw err;
  }
  clear(u, rel, abs, false);
  return openSync(abs, flags, 0o600);
}

function makeHardLink(u: Unpack, rel: string, abs: string, h: DecodedTarHeader): void {
  const target = resolveLinkTarget(h.linkname);
  if (target === undefined || target === '') {
    throw new KilnError('UNSAFE_ARCHIVE', `Hard link "${h.name}" points outside the layer, to "${h.linkname}"`, {
      hint: 'The archive is malformed or malicious',
    });
  }
  if (target === rel) return;
  for (const dir of ancestors(target)) {
    if (u.dirs.has(dir)) continue;
    const st = lstatSync(join(u.root, dir), { throwIfNoEntry: false });
    if (st?.isSymbolicLink()) {
      throw new KilnError('UNSAFE_ARCHIVE', `Hard link "${h.name}" reaches "${h.linkname}" through the symbolic link "${dir}"`);
    }
    if (!st?.isDirectory()) throw missingTarget(h);
    u.dirs.add(dir);
  }
  const targetAbs = join(u.root, target);
  const st = lstatSync(targetAbs, { throwIfNoEntry: false });
  if (st === undefined) throw missingTarget(h);
  if (st.isDirectory()) {
    throw new KilnError('CORRUPT_ARCHIVE', `Hard link "${h.name}" points to the directory "${h.linkname}"`);
  }
  clear(u, rel, abs, false);
  linkSync(targetAbs, abs);
}

function missingTarget(h: DecodedTarHeader): KilnError {
  return new KilnError('CORRUPT_ARCHIVE', `Hard link "${h.name}" points to "${h.linkname}", which is not in the layer`);
}

/** Owner, mode and extended attributes; times are set separately, after all writes. */
function setMetadata(abs: string, h: DecodedTarHeader, symlink: boolean): void {
  lchownSync(abs, h.uid, h.gid);
  if (!symlink) chmodSync(abs, h.mode);
  setXattrs(abs, h.xattrs);
}

function setXattrs(abs: string, xattrs: ReadonlyMap<string, Buffer>): void {
  for (const [name, value] of xattrs) {
    // overlayfs trusts these in a lowerdir (redirects, opacity): only marker entries may set them.
    if (name.startsWith('trusted.overlay.')) continue;
    setAttributeSync(abs, name, value);
  }
}

function timesOf(h: DecodedTarHeader): { atime: number; mtime: number } {
  return { atime: h.atime ?? h.mtime, mtime: h.mtime };
}

function setTimes(abs: string, h: DecodedTarHeader): void {
  const { atime, mtime } = timesOf(h);
  lutimesSync(abs, atime, mtime);
}

const execFileAsync = promisify(execFile);

/** Node has no mknod(2). */
async function mknod(args: string[], signal: AbortSignal | undefined): Promise<void> {
  await execFileAsync('mknod', args, { signal });
}

function errorCode(err: unknown): string | undefined {
  return err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
}

/** Names the entry in errors that do not already say which one failed. */
function withEntryName(err: unknown, name: string): unknown {
  if (err instanceof KilnError || (err instanceof Error && err.name === 'AbortError')) return err;
  return corruptStream(err, name) ?? new KilnError('UNPACK_FAILED', `Cannot unpack "${name}": ${(err as Error).message}`, { cause: err });
}

/** zlib's errors (`Z_BUF_ERROR`, `Z_DATA_ERROR`) mean the compressed layer is damaged, not the disk. */
function corruptStream(err: unknown, name: string): KilnError | undefined {
  if (!errorCode(err)?.startsWith('Z_')) return undefined;
  const where = name ? ` in entry "${name}"` : '';
  return new KilnError('CORRUPT_ARCHIVE', `Layer archive is corrupt${where}: ${(err as Error).message}`, {
    hint: 'The compressed stream is cut short or damaged: fetch or rebuild the layer again',
    cause: err,
  });
}
