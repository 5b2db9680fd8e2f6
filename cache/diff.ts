/**
 * Turns an overlayfs upperdir (the changes one exec made) into an uncompressed OCI layer tar.
 */
import { closeSync, constants, lstatSync, openSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable, addAbortSignal } from 'node:stream';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { KilnError } from './errors.js';
import { closeFd, type EntryStat, fdMayHaveXattrs, mayHaveXattrs, openDirectory, openFileAt, statEntry, statEntryAt } from './syscalls.js';
import { encodeTarHeader, endOfArchive, paddingFor, type TarHeader } from './tarheader.js';
import { OPAQUE_MARKER, WHITEOUT_PREFIX, joinPath } from './tarpath.js';

export interface DiffTarOptions {
  signal?: AbortSignal;
  /** Later modification times are written as this one (seconds since the epoch), for reproducible layers. */
  sourceDateEpoch?: number;
}

/**
 * Streams the layer tar of an overlayfs upperdir. Returns at once: the directory is walked as the
 * stream is read, so a consumer that stops reading stops the walk, and failures (including an
 * abort through `signal`) arrive as the stream's `error`.
 *
 * The archive is deterministic for a given tree: depth first, a directory before its contents;
 * within a directory the whiteouts come first (OCI asks that they precede their siblings), then
 * the other entries, each group by name. Whiteouts (0/0 character devices) become empty files
 * `dir/.wh.NAME`; a directory marked `trusted.overlay.opaque=y` is followed by `dir/.wh..wh..opq`.
 * A file with several names in the layer is stored once and then as hard link entries. Every
 * `trusted.overlay.*` attribute is left out. The upperdir must not change while it is read.
 */
export function diffTar(upperDir: string, options: DiffTarOptions = {}): Readable {
  const stream = Readable.from(layerTar(upperDir, options), { objectMode: false, highWaterMark: BATCH_BYTES });
  if (options.signal) addAbortSignal(options.signal, stream);
  return stream;
}

/**
 * Small headers and files are gathered into chunks of about this size before they are handed on.
 * The event loop gets control back at least once per chunk.
 */
const BATCH_BYTES = 64 * 1024;
/** Files up to this size are read in one go; larger ones are streamed in pieces of the same size. */
const READ_BYTES = 256 * 1024;

/*
 * Metadata and small files are read with synchronous calls: a layer is mostly small files, and
 * each asynchronous call is a round trip through the thread pool that costs far more than the
 * system call itself (10,000 small files took about 2 s that way, against about 0.3 s now).
 */

type Kind = 'whiteout' | 'directory' | 'file' | 'symlink' | 'character-device' | 'block-device' | 'fifo' | 'socket';

interface Node {
  name: string;
  abs: string;
  rel: string;
  st: EntryStat;
  kind: Kind;
}

interface Walk {
  signal: AbortSignal | undefined;
  epoch: number | undefined;
  /** `dev:ino` of files with several names → the name they were first stored under. */
  links: Map<string, string>;
  parts: Buffer[];
  bytes: number;
}

/**
 * The same tar as diffTar's, as the chunks of a generator: for a consumer that reads them in a
 * loop, a stream around them costs more than a small layer's whole walk. An abort through
 * `signal` is thrown from the walk.
 */
export async function* layerTar(upperDir: string, options: DiffTarOptions = {}): AsyncGenerator<Buffer, void, undefined> {
  const walk: Walk = {
    signal: options.signal,
    epoch: options.sourceDateEpoch,
    links: new Map(),
    parts: [],
    bytes: 0,
  };
  yield* directoryChunks(walk, resolve(upperDir), '');
  add(walk, endOfArchive());
  yield take(walk);
}

function add(walk: Walk, chunk: Buffer): boolean {
  walk.parts.push(chunk);
  walk.bytes += chunk.length;
  return walk.bytes >= BATCH_BYTES;
}

function take(walk: Walk): Buffer {
  const chunk = walk.parts.length === 1 ? walk.parts[0]! : Buffer.concat(walk.parts, walk.bytes);
  walk.parts = [];
  walk.bytes = 0;
  return chunk;
}

async function* directoryChunks(walk: Walk, dirAbs: string, dirRel: string): AsyncGenerator<Buffer, void, undefined> {
  const dirfd = openDirectory(dirAbs);
  try {
    yield* entryChunks(walk, dirAbs, dirRel, dirfd);
  } finally {
    if (dirfd !== undefined) closeFd(dirfd);
  }
}

/** The entries of one directory; `dirfd`, when the FFI opened it, names them for the *at calls. */
async function* entryChunks(walk: Walk, dirAbs: string, dirRel: string, dirfd: number | undefined): AsyncGenerator<Buffer, void, undefined> {
  const nodes = listDirectory(dirAbs, dirRel, dirfd);
  for (const node of nodes) {
    walk.signal?.throwIfAborted();
    const kind = node.kind;
    if (kind === 'socket') continue; // tar has no type for sockets; they mean nothing outside a running container
    if (kind === 'whiteout') {
      if (add(walk, encodeTarHeader(header(walk, node, joinPath(dirRel, WHITEOUT_PREFIX + node.name), 'file', NO_XATTRS)))) yield take(walk);
      continue;
    }
    if (node.name.startsWith(WHITEOUT_PREFIX)) {
      throw new KilnError('UNREPRESENTABLE_PATH', `Cannot store "${node.rel}" in a layer`, {
        hint: `Names starting with "${WHITEOUT_PREFIX}" mark deletions in OCI layers; rename the file`,
      });
    }
    if (kind === 'directory') {
      const { xattrs, opaque } = readXattrs(node);
      add(walk, encodeTarHeader(header(walk, node, `${node.rel}/`, 'directory', xattrs)));
      if (opaque) {
        const marker = header(walk, node, `${node.rel}/${OPAQUE_MARKER}`, 'file', NO_XATTRS);
        marker.mode = 0;
        add(walk, encodeTarHeader(marker));
      }
      yield* directoryChunks(walk, node.abs, node.rel);
      continue;
    }
    const first = firstName(walk, node);
    if (first !== undefined) {
      const link = header(walk, node, node.rel, 'link', NO_XATTRS);
      link.linkname = first;
      if (add(walk, encodeTarHeader(link))) yield take(walk);
      continue;
    }
    if (kind === 'file') {
      const size = node.st.size;
      // Small files are read whole, synchronously, without a generator of their own, from a
      // descriptor that also answers for their attributes.
      const small = size > 0 && size <= READ_BYTES;
      const fd = small && dirfd !== undefined ? openFileAt(dirfd, node.name) : undefined;
      let content: Buffer | undefined;
      try {
        const { xattrs } = fd !== undefined && fdMayHaveXattrs(fd) === false ? NONE : readXattrs(node);
        const h = header(walk, node, node.rel, 'file', xattrs);
        h.size = size;
        add(walk, encodeTarHeader(h));
        if (small) content = fd === undefined ? readSmallFile(node, size) : readSmallFileFrom(fd, node, size);
      } finally {
        if (fd !== undefined) closeFd(fd);
      }
      if (content !== undefined) {
        if (add(walk, content)) yield take(walk);
      } else if (size > 0) {
        yield* largeFileChunks(walk, node, size);
      }
      continue;
    }
    const { xattrs } = readXattrs(node);
    const h = header(walk, node, node.rel, kind === 'symlink' ? 'symlink' : kind, xattrs);
    if (kind === 'symlink') {
      h.linkname = readlinkSync(node.abs);
    } else {
      h.devmajor = node.st.rdevMajor;
      h.devminor = node.st.rdevMinor;
    }
    if (add(walk, encodeTarHeader(h))) yield take(walk);
  }
}

/** The children of a directory, stat'ed and in archive order. */
function listDirectory(dirAbs: string, dirRel: string, dirfd: number | undefined): Node[] {
  const nodes = readdirSync(dirAbs).map((name): Node => {
    const abs = `${dirAbs}/${name}`;
    const st = (dirfd === undefined ? statEntry(abs) : statEntryAt(dirfd, name)) ?? nodeStat(abs);
    return { name, abs, rel: joinPath(dirRel, name), st, kind: kindOf(st) };
  });
  return nodes.sort((a, b) => {
    const aw = a.kind === 'whiteout';
    const bw = b.kind === 'whiteout';
    if (aw !== bw) return aw ? -1 : 1;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });
}

/** statEntry's answer from Node's lstat, which also throws what went wrong. */
function nodeStat(abs: string): EntryStat {
  const st = lstatSync(abs, { bigint: true });
  const [rdevMajor, rdevMinor] = deviceNumbers(st.rdev);
  return {
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    mtime: Number(floorDiv(st.mtimeNs, 1_000_000_000n)),
    nlink: Number(st.nlink),
    id: st.nlink > 1n ? `${st.dev}:${st.ino}` : '',
    rdevMajor,
    rdevMinor,
  };
}

function kindOf(st: EntryStat): Kind {
  switch (st.mode & 0o170000) {
    case 0o100000:
      return 'file';
    case 0o040000:
      return 'directory';
    case 0o120000:
      return 'symlink';
    case 0o020000:
      return st.rdevMajor === 0 && st.rdevMinor === 0 ? 'whiteout' : 'character-device';
    case 0o060000:
      return 'block-device';
    case 0o010000:
      return 'fifo';
    default:
      return 'socket';
  }
}

/** An entry's header from its stat: owner, permission bits and modification time (clamped to the epoch). */
function header(walk: Walk, node: Node, name: string, type: TarHeader['type'], xattrs: ReadonlyMap<string, Buffer>): TarHeader {
  const st = node.st;
  const mtime = walk.epoch !== undefined && st.mtime > walk.epoch ? walk.epoch : st.mtime;
  return { name, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: 0, mtime, xattrs };
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}

/**
 * For the second and later names of a multiply linked file, the name it was first stored under.
 * Whiteouts also show several links (overlayfs shares one whiteout inode) but never reach here.
 */
function firstName(walk: Walk, node: Node): string | undefined {
  if (node.st.nlink < 2) return undefined;
  const first = walk.links.get(node.st.id);
  if (first === undefined) walk.links.set(node.st.id, node.rel);
  return first;
}

/** Linux's encoding of dev_t (glibc `gnu_dev_major` / `gnu_dev_minor`). */
function deviceNumbers(rdev: bigint): [number, number] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

const NO_XATTRS: ReadonlyMap<string, Buffer> = new Map();
const NONE = { xattrs: NO_XATTRS, opaque: false };

/**
 * Extended attributes to store, in name order, and whether overlayfs marked the directory
 * opaque. overlayfs' own attributes describe this mount only and are dropped, except that the
 * ones whose meaning lives outside the upperdir make the diff impossible.
 */
function readXattrs(node: Node): { xattrs: ReadonlyMap<string, Buffer>; opaque: boolean } {
  if (mayHaveXattrs(node.abs) === false) return NONE;
  const names = listAttributesSync(node.abs);
  if (names.length === 0) return NONE;
  const xattrs = new Map<string, Buffer>();
  let opaque = false;
  for (const name of names.sort()) {
    if (name.startsWith('trusted.overlay.')) {
      if (name === 'trusted.overlay.opaque') {
        opaque = getAttributeSync(node.abs, name)?.toString('latin1') === 'y';
      } else if (name === 'trusted.overlay.redirect' || name === 'trusted.overlay.metacopy') {
        throw new KilnError('UNSUPPORTED_LAYER', `Cannot diff "${node.rel}": overlayfs stored it as a reference into a lower layer`, {
          hint: 'Mount the overlay with redirect_dir=off and metacopy=off so the upperdir holds every change itself',
        });
      }
      continue;
    }
    const value = getAttributeSync(node.abs, name);
    // A null value means the attribute went away between listing and reading.
    if (value !== null) xattrs.set(name, value);
  }
  return { xattrs, opaque };
}

/** A file of at most READ_BYTES with its padding, read in one go. */
function readSmallFile(node: Node, size: number): Buffer {
  const fd = openSync(node.abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return readSmallFileFrom(fd, node, size);
  } finally {
    closeSync(fd);
  }
}

/** readSmallFile from a descriptor the caller opened (and closes). */
function readSmallFileFrom(fd: number, node: Node, size: number): Buffer {
  const padding = paddingFor(size);
  const buffer = Buffer.allocUnsafe(size + padding);
  let done = 0;
  while (done < size) {
    const bytesRead = readSync(fd, buffer, done, size - done, done);
    if (bytesRead === 0) throw shrank(node);
    done += bytesRead;
  }
  if (padding > 0) buffer.fill(0, size);
  return buffer;
}

async function* largeFileChunks(walk: Walk, node: Node, size: number): AsyncGenerator<Buffer, void, undefined> {
  const padding = paddingFor(size);
  if (walk.bytes > 0) yield take(walk);
  const handle = await open(node.abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    for (let position = 0; position < size; position += READ_BYTES) {
      walk.signal?.throwIfAborted();
      const length = Math.min(READ_BYTES, size - position);
      const buffer = Buffer.allocUnsafe(length);
      await readExactly(handle, buffer, length, position, node);
      yield buffer;
    }
    if (padding > 0) add(walk, Buffer.alloc(padding));
  } finally {
    await handle.close();
  }
}

async function readExactly(
  handle: Awaited<ReturnType<typeof open>>,
  buffer: Buffer,
  length: number,
  position: number,
  node: Node,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw shrank(node);
    done += bytesRead;
  }
}

function shrank(node: Node): KilnError {
  return new KilnError('LAYER_CHANGED', `File "${node.rel}" shrank while its layer was being read`, {
    hint: 'Nothing may write to an upperdir while it is turned into a layer',
  });
}
