import { type BigIntStats, createReadStream, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import type { ChecksumMemo, StoreDb } from '../../cache/db.js';
import { digestOf, Hasher } from '../../cache/digest.js';
import { contentXattrs } from '../../cache/overlay.js';
import { crashPoint } from '../../cache/trace.js';
import { TimeSlice } from '../fsutil/timeslice.js';
import { NO_EXCLUSION, type Exclusion, type Selection } from './select.js';

type Entry = [rel: string, type: string, mode: number, uid: number, gid: number, size: number, content: string];

/** Files up to this size are hashed from one read; larger ones are streamed. */
const READ_WHOLE = 1024 * 1024;

/**
 * The content checksum of selected files: relative path, type, mode, owner, size, content hash,
 * extended attributes (of files and directories) and link target of each — never mtime, so touching a file keeps the cache. Content hashes are
 * memoised by (dev, inode, size, mtime, ctime) in the index: an unchanged file costs one stat.
 *
 * The tree is walked with synchronous calls paced by a TimeSlice (a thread pool round trip per
 * file cost more than the stat itself), the memo of a selected directory is read in one query,
 * and the new memo rows are written in one transaction.
 */
export async function checksumSelections(
  db: StoreDb,
  selections: readonly Selection[],
  exclusion: Exclusion,
  root: string,
  /** When given, receives each entry's path and what its checksum covers, to explain cache misses. */
  files?: Record<string, string>,
): Promise<string> {
  const entries: Entry[] = [];
  const memoWrites: Parameters<StoreDb['putChecksums']>[0] = [];
  const slice = new TimeSlice();
  const filtered = exclusion !== NO_EXCLUSION;
  /** `relToRoot`: the path relative to `root` that .dockerignore patterns match, '' for the root. */
  const visit = async (host: string, rel: string, relToRoot: string, top: boolean, memos: Map<string, ChecksumMemo> | undefined, stat?: BigIntStats): Promise<void> => {
    if (filtered && !top && relToRoot !== '' && exclusion.excluded(relToRoot)) return;
    let st = stat;
    if (!st) {
      const wait = slice.pause();
      if (wait) await wait;
      st = lstatSync(host, { bigint: true });
    }
    if (!st.isDirectory()) {
      const big = visitLeaf(host, rel, st, memos);
      if (big) await big;
      return;
    }
    entries.push([rel, 'dir', Number(st.mode & 0o7777n), Number(st.uid), Number(st.gid), 0, memoised(host, st, memos, () => xattrsOf(host))]);
    const below = memos ?? db.checksumsUnder(host);
    const names = readdirSync(host).sort();
    for (const name of names) {
      const childHost = `${host}/${name}`;
      const childRel = rel === '.' ? name : `${rel}/${name}`;
      const childRelToRoot = relToRoot === '' ? name : `${relToRoot}/${name}`;
      if (filtered && exclusion.excluded(childRelToRoot)) continue;
      const pause = slice.pause();
      if (pause) await pause;
      const child = lstatSync(childHost, { bigint: true });
      // Files, links and the rest without an async call of their own: only directories recurse.
      if (child.isDirectory()) {
        await visit(childHost, childRel, childRelToRoot, true, below, child); // exclusion checked above
        continue;
      }
      const big = visitLeaf(childHost, childRel, child, below);
      if (big) await big;
    }
  };
  /** Records a non-directory; a promise only when a large file must be hashed as a stream. */
  const visitLeaf = (host: string, rel: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined): Promise<void> | undefined => {
    const mode = Number(st.mode & 0o7777n);
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    if (st.isSymbolicLink()) {
      entries.push([rel, 'symlink', mode, uid, gid, 0, readlinkSync(host)]);
      return undefined;
    }
    if (!st.isFile()) {
      entries.push([rel, 'other', mode, uid, gid, 0, String(st.rdev)]);
      return undefined;
    }
    const size = Number(st.size);
    const known = memoHit(host, st, memos);
    if (known !== undefined) {
      entries.push([rel, 'file', mode, uid, gid, size, known]);
      return undefined;
    }
    // The entry takes its place in the list now; its sum is filled in once the content is hashed.
    const at = entries.length;
    entries.push([rel, 'file', mode, uid, gid, size, '']);
    const xattrs = xattrsOf(host);
    const record = (content: string) => {
      const sum = xattrs === '' ? content : `${content} ${xattrs}`;
      memoWrites.push(memoRow(host, st, sum));
      crashPoint('checksum');
      entries[at]![6] = sum;
    };
    if (size <= READ_WHOLE) {
      record(new Hasher().update(readFileSync(host)).digest());
      return undefined;
    }
    return hashFile(host).then(record);
  };
  /** The memoised sum of `host` when its stat still matches the memo's. */
  const memoHit = (host: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined): string | undefined => {
    const memo = memos ? memos.get(host) : db.getChecksum(host);
    if (!memo) return undefined;
    const same = memo.dev === Number(st.dev) && memo.ino === Number(st.ino) && memo.size === Number(st.size);
    return same && memo.mtimeNs === String(st.mtimeNs) && memo.ctimeNs === String(st.ctimeNs) ? memo.sum : undefined;
  };
  /** A directory's sum (its extended attributes), memoised like a file's: no xattr read when unchanged. */
  const memoised = (host: string, st: BigIntStats, memos: Map<string, ChecksumMemo> | undefined, compute: () => string): string => {
    const known = memoHit(host, st, memos);
    if (known !== undefined) return known;
    const sum = compute();
    memoWrites.push(memoRow(host, st, sum));
    return sum;
  };
  for (const sel of selections) {
    entries.push([`>${sel.pattern}`, 'pattern', 0, 0, 0, 0, '']);
    for (const m of sel.matches) await visit(m.host, m.rel, posix.relative(root, m.host), true, undefined);
  }
  db.putChecksums(memoWrites);
  if (files) {
    for (const [rel, type, mode, uid, gid, size, content] of entries) {
      if (type !== 'pattern') files[rel] = `${type} ${mode.toString(8)} ${uid}:${gid} ${size} ${content}`;
    }
  }
  // The entries hold only strings and numbers, for which JSON.stringify is canonical JSON
  // already (the same text canonicalJson gives, so keys stay as they were) without its copy.
  return digestOf(JSON.stringify(entries));
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
  return `xattrs:${digestOf(JSON.stringify(xattrs.map(([name, value]) => [name, value.toString('base64')])))}`;
}

async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}
