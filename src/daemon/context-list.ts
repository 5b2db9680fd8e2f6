/**
 * The client's half of an incremental context upload: the context walked as a local build
 * would see it (`.dockerignore`, or the ignore file beside the Dockerfile), each file with its
 * content checksum. Checksums are memoised in a small cache file per context directory, keyed
 * by (dev, inode, size, mtime, ctime), so an unchanged context costs one stat per file.
 */
import { type BigIntStats, createReadStream } from 'node:fs';
import { lstat, mkdir, readFile, readdir, readlink, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseIgnoreFile } from '../../frontend/ignore/index.js';
import { digestOf, Hasher } from '../../cache/digest.js';
import { isErrno, randomId } from '../../cache/fsutil.js';
import { contentXattrs } from '../../cache/overlay.js';
import { RACY_MS } from '../sources/checksum.js';
import { exclusionFor } from '../sources/exclusion.js';
import type { ContextEntry } from './wire.js';

/**
 * A memo entry: dev, inode, size, mtime (ns), ctime (ns), checksum ('' for a directory) and the
 * extended attributes sent (a change of them moves the ctime).
 */
type Memo = [dev: string, ino: string, size: number, mtimeNs: string, ctimeNs: string, checksum: string, xattrs?: Record<string, string>];

/** Memo files of another version are ignored (version 1 had no attributes). */
const MEMO_VERSION = 2;

/** Recent entries are not memoised, as in a local build's checksums (see RACY_MS). */
const RACY_NS = BigInt(RACY_MS) * 1_000_000n;

export interface ContextList {
  entries: ContextEntry[];
  /** Host paths by checksum, to send what the server lacks. */
  sources: Map<string, string>;
}

/**
 * Lists the context: directories, regular files and symbolic links in name order; other kinds
 * (sockets, fifos) are left out as the full upload leaves them out. The Dockerfile and the ignore
 * files always go along, as the server reads them.
 */
export async function listContext(root: string, options: { dockerfile?: string; signal?: AbortSignal }): Promise<ContextList> {
  const ignoreFiles = [...(options.dockerfile !== undefined ? [`${options.dockerfile}.dockerignore`] : []), '.dockerignore'];
  let patterns: string[] = [];
  for (const rel of ignoreFiles) {
    try {
      patterns = parseIgnoreFile(await readFile(join(root, rel), 'utf8'));
      break;
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  const exclusion = exclusionFor(patterns);
  // With an exception (`!keep`), something under an excluded directory may still be wanted.
  const hasExceptions = patterns.some((p) => p.startsWith('!'));
  const always = new Set([...ignoreFiles, options.dockerfile ?? 'Dockerfile']);
  const memoPath = memoFile(root);
  const memo = await readMemo(memoPath);
  const nextMemo: Record<string, Memo> = {};
  const now = BigInt(Date.now()) * 1_000_000n;
  const entries: ContextEntry[] = [];
  const sources = new Map<string, string>();

  /** The memoised checksum and attributes while the stat matches, else `fresh`'s, memoised once the entry is not recent. */
  const known = async (rel: string, abs: string, st: BigIntStats, fresh: () => Promise<string>): Promise<{ checksum: string; xattrs?: Record<string, string> }> => {
    const key = [String(st.dev), String(st.ino), Number(st.size), String(st.mtimeNs), String(st.ctimeNs)] as const;
    const old = memo[rel];
    let found: { checksum: string; xattrs?: Record<string, string> };
    if (old && key.every((v, i) => v === old[i])) found = { checksum: old[5], xattrs: old[6] };
    else found = { checksum: await fresh(), xattrs: xattrsOf(abs) };
    if (now - st.mtimeNs > RACY_NS && now - st.ctimeNs > RACY_NS) nextMemo[rel] = [...key, found.checksum, ...(found.xattrs ? [found.xattrs] : [])] as Memo;
    return found;
  };
  const describe = (rel: string, st: BigIntStats) => ({ path: rel, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), mtime: Number(st.mtimeMs / 1000n) });
  const dirEntry = async (rel: string, abs: string, st: BigIntStats): Promise<ContextEntry> => {
    const { xattrs } = await known(rel, abs, st, async () => '');
    return { ...describe(rel, st), type: 'dir', ...(xattrs ? { xattrs } : {}) };
  };

  const walk = async (dir: string, prefix: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      options.signal?.throwIfAborted();
      const rel = prefix === '' ? name : `${prefix}/${name}`;
      const abs = join(dir, name);
      const st = await lstat(abs, { bigint: true });
      const excluded = exclusion.excluded(rel);
      if (st.isDirectory()) {
        if (excluded && !hasExceptions && ![...always].some((a) => a.startsWith(`${rel}/`))) continue;
        entries.push(await dirEntry(rel, abs, st));
        await walk(abs, rel);
      } else if (excluded && !always.has(rel)) {
        continue;
      } else if (st.isSymbolicLink()) {
        entries.push({ ...describe(rel, st), type: 'symlink', target: await readlink(abs) });
      } else if (st.isFile()) {
        const { checksum, xattrs } = await known(rel, abs, st, () => hashFile(abs));
        entries.push({ ...describe(rel, st), type: 'file', size: Number(st.size), checksum, ...(xattrs ? { xattrs } : {}) });
        if (!sources.has(checksum)) sources.set(checksum, abs);
      }
    }
  };
  // The root goes first, as `.`: a build's checksum of `COPY .` covers its mode and owner.
  entries.push(await dirEntry('.', root, await lstat(root, { bigint: true })));
  await walk(root, '');
  await writeMemo(memoPath, nextMemo);
  return { entries, sources };
}

/** The attributes a COPY would carry of `path`, for the list (none: undefined). */
function xattrsOf(path: string): Record<string, string> | undefined {
  const xattrs = contentXattrs(path);
  return xattrs.length === 0 ? undefined : Object.fromEntries(xattrs.map(([name, value]) => [name, value.toString('base64')]));
}

async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}

/** One memo file per context directory, under `$XDG_CACHE_HOME/kiln` (or `~/.cache/kiln`). */
function memoFile(root: string): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'kiln', 'context-checksums', `${digestOf(root).slice(7, 39)}.json`);
}

async function readMemo(path: string): Promise<Record<string, Memo>> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as { version?: number; files?: Record<string, Memo> };
    return parsed.version === MEMO_VERSION && parsed.files ? parsed.files : {};
  } catch (err) {
    // No memo yet, or one cut short by a crash: every file is hashed afresh.
    if (isErrno(err, 'ENOENT') || err instanceof SyntaxError) return {};
    throw err;
  }
}

async function writeMemo(path: string, files: Record<string, Memo>): Promise<void> {
  const tmp = `${path}.${process.pid}-${randomId(4)}`;
  try {
    await mkdir(join(path, '..'), { recursive: true, mode: 0o700 });
    await writeFile(tmp, JSON.stringify({ version: MEMO_VERSION, files }), { mode: 0o600 });
    await rename(tmp, path);
  } catch (err) {
    // A read-only or full cache directory only costs hashing again next time.
    if (!isErrno(err, 'EACCES') && !isErrno(err, 'EROFS') && !isErrno(err, 'ENOSPC') && !isErrno(err, 'EPERM')) throw err;
  }
}
