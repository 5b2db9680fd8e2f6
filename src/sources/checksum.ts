import { createReadStream, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import type { ChecksumMemo, StoreDb } from '../../cache/db.js';
import { digestOf, Hasher } from '../../cache/digest.js';
import { crashPoint } from '../../cache/trace.js';
import { TimeSlice } from '../fsutil/timeslice.js';
import { NO_EXCLUSION, type Exclusion, type Selection } from './select.js';

type Entry = [rel: string, type: string, mode: number, uid: number, gid: number, size: number, content: string];

/** Files up to this size are hashed from one read; larger ones are streamed. */
const READ_WHOLE = 1024 * 1024;

/**
 * The content checksum of selected files: relative path, type, mode, owner, size, content hash
 * and link target of each — never mtime, so touching a file keeps the cache. Content hashes are
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
  const visit = async (host: string, rel: string, relToRoot: string, top: boolean, memos: Map<string, ChecksumMemo> | undefined): Promise<void> => {
    if (filtered && !top && relToRoot !== '' && exclusion.excluded(relToRoot)) return;
    const wait = slice.pause();
    if (wait) await wait;
    const st = lstatSync(host, { bigint: true });
    const mode = Number(st.mode & 0o7777n);
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    if (st.isDirectory()) {
      entries.push([rel, 'dir', mode, uid, gid, 0, '']);
      const below = memos ?? db.checksumsUnder(host);
      const names = readdirSync(host).sort();
      for (const name of names) {
        await visit(`${host}/${name}`, rel === '.' ? name : `${rel}/${name}`, relToRoot === '' ? name : `${relToRoot}/${name}`, false, below);
      }
    } else if (st.isSymbolicLink()) {
      entries.push([rel, 'symlink', mode, uid, gid, 0, readlinkSync(host)]);
    } else if (st.isFile()) {
      const memo = memos ? memos.get(host) : db.getChecksum(host);
      const size = Number(st.size);
      const dev = Number(st.dev);
      const ino = Number(st.ino);
      const mtimeNs = String(st.mtimeNs);
      const ctimeNs = String(st.ctimeNs);
      let sum: string;
      if (memo && memo.dev === dev && memo.ino === ino && memo.size === size && memo.mtimeNs === mtimeNs && memo.ctimeNs === ctimeNs) {
        sum = memo.sum;
      } else {
        sum = size <= READ_WHOLE ? new Hasher().update(readFileSync(host)).digest() : await hashFile(host);
        memoWrites.push({ path: host, dev, ino, size, mtimeNs, ctimeNs, sum });
        crashPoint('checksum');
      }
      entries.push([rel, 'file', mode, uid, gid, size, sum]);
    } else {
      entries.push([rel, 'other', mode, uid, gid, 0, String(st.rdev)]);
    }
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

async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}
