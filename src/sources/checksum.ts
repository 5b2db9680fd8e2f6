import { type BigIntStats, type Stats, createReadStream, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import type { ChecksumMemo, StoreDb } from '../../cache/db.js';
import { digestOf, Hasher } from '../../cache/digest.js';
import { contentXattrs, xattrsDigest } from '../../cache/overlay.js';
import { crashPoint } from '../../cache/trace.js';
import { TimeSlice } from '../fsutil/timeslice.js';
import { NO_EXCLUSION, type Exclusion, type Selection } from './select.js';

type Entry = [rel: string, type: string, mode: number, uid: number, gid: number, size: number, content: string];

/** Files up to this size are hashed from one read; larger ones are streamed. */
const READ_WHOLE = 1024 * 1024;

/**
 * An entry changed this recently (mtime or ctime) is never memoised: written again within the
 * file system's timestamp granularity (a jiffy on kernels before 6.13, two seconds on FAT), it
 * would keep its stat and so its stale checksum. It is hashed again until it is this old.
 */
export const RACY_MS = 2000;

/** The checksum of a context selection, and on demand what it covers of each entry. */
export interface SelectionChecksum {
  sum: string;
  /** Relative path → `type mode uid:gid size content` of each entry: what explains a cache miss. */
  files(): Record<string, string>;
}

/** A directory walked entry by entry: its own entries in order, and the subdirectories between them. */
interface DirWrite {
  path: string;
  rel: string;
  stamp: string;
  items: (Entry | { subdir: string })[];
}

/**
 * The content checksum of selected files: relative path, type, mode, owner, size, content hash,
 * extended attributes (of files and directories) and link target of each — never mtime, so
 * touching a file keeps the cache. The checksum is the digest of that list as JSON.
 *
 * Two memos in the index make an unchanged context cost one stat pass:
 * - per directory, a stamp of what its entries' stats were (name, mode, owner, size, device,
 *   inode, mtime and ctime of each; any write, chmod, chown or attribute change moves the ctime)
 *   with the JSON text those entries gave. A directory whose stamp still matches contributes
 *   that text as it is: no memo row per file is read and no entry is rebuilt.
 * - per file, its content hash by (dev, inode, size, mtime, ctime), read for the directories
 *   whose stamp changed: an edit rehashes the edited file only.
 *
 * The tree is walked with synchronous calls paced by a TimeSlice (a thread pool round trip per
 * file cost more than the stat itself), and the new memo rows are written in one transaction.
 */
export async function checksumSelections(
  db: StoreDb,
  selections: readonly Selection[],
  exclusion: Exclusion,
  root: string,
  /** The time the racy window is measured from (tests move it). */
  now = Date.now(),
): Promise<SelectionChecksum> {
  const settledMs = now - RACY_MS;
  const settledNs = BigInt(settledMs) * 1_000_000n;
  /** Whether an entry's stat may be memoised (see RACY_MS). */
  const settled = (st: BigIntStats) => st.mtimeNs < settledNs && st.ctimeNs < settledNs;
  /** The list in order: entries, and the JSON text (comma-joined entries) of unchanged directories. */
  const out: (Entry | string)[] = [];
  const memoWrites: (ChecksumMemo & { path: string })[] = [];
  const dirWrites: DirWrite[] = [];
  const slice = new TimeSlice();
  const filtered = exclusion !== NO_EXCLUSION;
  const stamp = new Stamp();

  /**
   * A matched source (selectSources applied the exclusion to it already); `relToRoot` is its
   * path relative to `root`, which .dockerignore patterns match.
   */
  const visitTop = async (host: string, rel: string, relToRoot: string): Promise<void> => {
    const wait = slice.pause();
    if (wait) await wait;
    const st = lstatSync(host, { bigint: true });
    if (!st.isDirectory()) {
      const entry = leaf(host, rel, st, undefined);
      out.push(entry);
      const big = pending.get(entry);
      if (big) await big;
      return;
    }
    out.push(directoryEntry(host, rel, st, undefined));
    await visitDirectory(host, rel, relToRoot);
  };

  /** The entries below directory `host` (its own entry is its parent's, or the top's). */
  const visitDirectory = async (host: string, rel: string, relToRoot: string): Promise<void> => {
    const names: string[] = [];
    let racy = false;
    stamp.reset();
    for (const name of readdirSync(host).sort()) {
      if (filtered && exclusion.excluded(relToRoot === '' ? name : `${relToRoot}/${name}`)) continue;
      const pause = slice.pause();
      if (pause) await pause;
      names.push(name);
      const st = lstatSync(`${host}/${name}`);
      stamp.add(name, st);
      if (st.mtimeMs >= settledMs || st.ctimeMs >= settledMs) racy = true;
    }
    const stampDigest = stamp.digest();
    const known = db.getChecksumDir(host, rel);
    const childRel = (name: string) => (rel === '.' ? name : `${rel}/${name}`);
    const childRelToRoot = (name: string) => (relToRoot === '' ? name : `${relToRoot}/${name}`);
    if (known?.stamp === stampDigest) {
      const pieces = JSON.parse(known.pieces) as string[];
      for (let i = 0; i < pieces.length; i++) {
        if (i % 2 === 0) {
          if (pieces[i] !== '') out.push(pieces[i]!);
        } else {
          await visitDirectory(`${host}/${pieces[i]}`, childRel(pieces[i]!), childRelToRoot(pieces[i]!));
        }
      }
      return;
    }
    const memos = db.checksumsIn(host);
    const write: DirWrite = { path: host, rel, stamp: stampDigest, items: [] };
    for (const name of names) {
      const childHost = `${host}/${name}`;
      // The memos compare times to the nanosecond, which only BigInt stats carry.
      const st = lstatSync(childHost, { bigint: true });
      if (st.isDirectory()) {
        const entry = directoryEntry(childHost, childRel(name), st, memos);
        out.push(entry);
        write.items.push(entry, { subdir: name });
        await visitDirectory(childHost, childRel(name), childRelToRoot(name));
        continue;
      }
      const entry = leaf(childHost, childRel(name), st, memos);
      out.push(entry);
      write.items.push(entry);
      const big = pending.get(entry);
      if (big) await big;
    }
    // A stamp with a recent entry in it is not kept: the entry may change again unseen.
    if (!racy) dirWrites.push(write);
  };

  /** Entries whose content is still being hashed from a stream (files above READ_WHOLE). */
  const pending = new Map<Entry, Promise<void>>();

  const directoryEntry = (host: string, rel: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined): Entry => {
    let xattrs = memoHit(host, st, memos);
    if (xattrs === undefined) {
      xattrs = xattrsOf(host);
      if (settled(st)) memoWrites.push(memoRow(host, st, xattrs));
    }
    return [rel, 'dir', Number(st.mode & 0o7777n), Number(st.uid), Number(st.gid), 0, xattrs];
  };

  /** A non-directory's entry; a file's content comes from the memo or is hashed now (or streamed: see pending). */
  const leaf = (host: string, rel: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined): Entry => {
    const mode = Number(st.mode & 0o7777n);
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    if (st.isSymbolicLink()) return [rel, 'symlink', mode, uid, gid, 0, readlinkSync(host)];
    if (!st.isFile()) return [rel, 'other', mode, uid, gid, 0, String(st.rdev)];
    const size = Number(st.size);
    const entry: Entry = [rel, 'file', mode, uid, gid, size, memoHit(host, st, memos) ?? ''];
    if (entry[6] !== '') return entry;
    const xattrs = xattrsOf(host);
    const record = (content: string) => {
      const sum = xattrs === '' ? content : `${content} ${xattrs}`;
      if (settled(st)) memoWrites.push(memoRow(host, st, sum));
      crashPoint('checksum');
      entry[6] = sum;
    };
    if (size <= READ_WHOLE) record(new Hasher().update(readFileSync(host)).digest());
    else pending.set(entry, hashFile(host).then(record));
    return entry;
  };

  /** The memoised sum of `host` when its stat still matches the memo's. */
  const memoHit = (host: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined): string | undefined => {
    const memo = memos ? memos.get(host) : db.getChecksum(host);
    if (!memo) return undefined;
    const same = memo.dev === Number(st.dev) && memo.ino === Number(st.ino) && memo.size === Number(st.size);
    return same && memo.mtimeNs === String(st.mtimeNs) && memo.ctimeNs === String(st.ctimeNs) ? memo.sum : undefined;
  };

  for (const sel of selections) {
    out.push([`>${sel.pattern}`, 'pattern', 0, 0, 0, 0, '']);
    for (const m of sel.matches) await visitTop(m.host, m.rel, posix.relative(root, m.host));
  }
  db.putChecksums(memoWrites, dirWrites.map((d) => ({ path: d.path, rel: d.rel, stamp: d.stamp, pieces: JSON.stringify(piecesOf(d.items)) })));
  // The entries hold only strings and numbers, for which JSON.stringify is canonical JSON
  // already (the same text canonicalJson gives, so keys stay as they were) without its copy.
  const text = `[${out.map((p) => (typeof p === 'string' ? p : JSON.stringify(p))).join(',')}]`;
  return {
    sum: digestOf(text),
    files: () => {
      const files: Record<string, string> = {};
      for (const [rel, type, mode, uid, gid, size, content] of JSON.parse(text) as Entry[]) {
        if (type !== 'pattern') files[rel] = `${type} ${mode.toString(8)} ${uid}:${gid} ${size} ${content}`;
      }
      return files;
    },
  };
}

/**
 * A directory's stamp: the digest of each entry's name and stat (mode, owner, size, rdev,
 * device, inode, mtime and ctime), written as numbers into one buffer rather than as text.
 */
class Stamp {
  private buffer = Buffer.allocUnsafe(64 * 1024);
  private length = 0;

  reset(): void {
    this.length = 0;
  }

  add(name: string, st: Stats): void {
    const need = this.length + Buffer.byteLength(name) + 1 + 9 * 8;
    if (need > this.buffer.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.buffer.length * 2));
      this.buffer.copy(bigger, 0, 0, this.length);
      this.buffer = bigger;
    }
    const b = this.buffer;
    let at = this.length + b.write(name, this.length);
    b[at++] = 0;
    at = b.writeDoubleLE(st.mode, at);
    at = b.writeDoubleLE(st.uid, at);
    at = b.writeDoubleLE(st.gid, at);
    at = b.writeDoubleLE(st.size, at);
    at = b.writeDoubleLE(st.rdev, at);
    at = b.writeDoubleLE(st.dev, at);
    at = b.writeDoubleLE(st.ino, at);
    at = b.writeDoubleLE(st.mtimeMs, at);
    this.length = b.writeDoubleLE(st.ctimeMs, at);
  }

  digest(): string {
    return digestOf(this.buffer.subarray(0, this.length));
  }
}

/**
 * What a directory's memo keeps: the JSON text of its entries between subdirectories, and the
 * names of those, alternating (text, name, text, …, text).
 */
function piecesOf(items: DirWrite['items']): string[] {
  const pieces: string[] = [];
  let run: string[] = [];
  for (const item of items) {
    if (Array.isArray(item)) {
      run.push(JSON.stringify(item));
      continue;
    }
    pieces.push(run.join(','), item.subdir);
    run = [];
  }
  pieces.push(run.join(','));
  return pieces;
}

function memoRow(path: string, st: BigIntStats, sum: string): ChecksumMemo & { path: string } {
  return { path, dev: Number(st.dev), ino: Number(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), sum };
}

/**
 * What a file's or directory's checksum covers of its extended attributes: '' without any (so
 * the checksums of trees without them are what they were), else a digest of the names and values
 * a COPY carries (contentXattrs). Setting an attribute changes the ctime, so the memo notices.
 */
function xattrsOf(path: string): string {
  const xattrs = contentXattrs(path);
  if (xattrs.length === 0) return '';
  return `xattrs:${xattrsDigest(xattrs)}`;
}

async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}
