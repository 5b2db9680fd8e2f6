import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import type { StoreDb } from '../../cache/db.js';
import { canonicalJson, digestOf, Hasher } from '../../cache/digest.js';
import type { Exclusion, Selection } from './select.js';

type Entry = [rel: string, type: string, mode: number, uid: number, gid: number, size: number, content: string];

/**
 * The content checksum of selected files: relative path, type, mode, owner, size, content hash
 * and link target of each — never mtime, so touching a file keeps the cache. Content hashes are
 * memoised by (dev, inode, size, mtime, ctime) in the index: an unchanged file costs one stat.
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
  const visit = async (host: string, rel: string, top: boolean): Promise<void> => {
    const relToRoot = posix.relative(root, host);
    if (!top && relToRoot !== '' && exclusion.excluded(relToRoot)) return;
    const st = await lstat(host, { bigint: true });
    const mode = Number(st.mode & 0o7777n);
    const base: [number, number, number] = [mode, Number(st.uid), Number(st.gid)];
    if (st.isDirectory()) {
      entries.push([rel, 'dir', ...base, 0, '']);
      const names = (await readdir(host)).sort();
      for (const name of names) await visit(`${host}/${name}`, rel === '.' ? name : `${rel}/${name}`, false);
    } else if (st.isSymbolicLink()) {
      entries.push([rel, 'symlink', ...base, 0, await readlink(host)]);
    } else if (st.isFile()) {
      const memo = db.getChecksum(host);
      const key = { dev: Number(st.dev), ino: Number(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
      let sum: string;
      if (memo && memo.dev === key.dev && memo.ino === key.ino && memo.size === key.size && memo.mtimeNs === key.mtimeNs && memo.ctimeNs === key.ctimeNs) {
        sum = memo.sum;
      } else {
        sum = await hashFile(host);
        memoWrites.push({ path: host, ...key, sum });
      }
      entries.push([rel, 'file', ...base, key.size, sum]);
    } else {
      entries.push([rel, 'other', ...base, 0, String(st.rdev)]);
    }
  };
  for (const sel of selections) {
    entries.push([`>${sel.pattern}`, 'pattern', 0, 0, 0, 0, '']);
    for (const m of sel.matches) await visit(m.host, m.rel, true);
  }
  db.putChecksums(memoWrites);
  if (files) {
    for (const [rel, type, mode, uid, gid, size, content] of entries) {
      if (type !== 'pattern') files[rel] = `${type} ${mode.toString(8)} ${uid}:${gid} ${size} ${content}`;
    }
  }
  return digestOf(canonicalJson(entries));
}

async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}
