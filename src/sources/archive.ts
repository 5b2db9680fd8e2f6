import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, rm, symlink, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { limitUnpacked, maxUnpackedSize } from '../../cache/tarreader.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { writeTarEntry } from '../fsutil/tar-entry.js';

type Compression = 'none' | 'gzip' | 'bzip2' | 'xz';

/**
 * The longest host path an entry may get: PATH_MAX less its NUL, and less room for the layer's
 * final directory name (a 64-digit digest), which is longer than the work directory's. Deeper,
 * the kernel refuses the path (ENAMETOOLONG) partway through the unpack, or later when the
 * layer is read, moved or removed.
 */
const MAX_HOST_PATH = 4096 - 1 - 64;

function tooDeep(path: string, name: string, room: number): KilnError {
  const shown = name.length > 80 ? `${name.slice(0, 40)}…${name.slice(-40)}` : name;
  return new KilnError('ARCHIVE_INVALID', `Cannot unpack "${posix.basename(path)}": entry "${shown}" is nested too deeply (a path of ${Buffer.byteLength(name)} bytes)`, {
    hint: `Here the paths in the archive must be shorter than ${room} bytes`,
  });
}

function compressionOf(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  return 'none';
}

/** A tar header block: the `ustar` magic, or (old tars) a checksum that adds up. */
function isTarHeader(block: Buffer): boolean {
  if (block.length < 512) return false;
  if (block.subarray(257, 262).toString('latin1') === 'ustar') return true;
  const stored = parseInt(block.subarray(148, 156).toString('latin1').replace(/\0.*$/, '').trim(), 8);
  if (Number.isNaN(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i]!;
  return sum === stored;
}

/** The file's content, decompressed; bzip2 and xz go through Debian's tools over a pipe. */
function decompressed(path: string, compression: Compression, signal?: AbortSignal): Readable {
  const raw = createReadStream(path, { signal });
  if (compression === 'none') return raw;
  if (compression === 'gzip') {
    const gunzip = createGunzip();
    raw.on('error', (e) => gunzip.destroy(e));
    return raw.pipe(gunzip);
  }
  const tool = compression === 'bzip2' ? 'bzip2' : 'xz';
  const child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'], signal });
  const out = new PassThrough();
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.on('error', (e) => out.destroy(new KilnError('ARCHIVE_INVALID', `Cannot run ${tool} to unpack "${posix.basename(path)}": ${e.message}`)));
  child.on('close', (code) => {
    if (code !== 0) out.destroy(new KilnError('ARCHIVE_INVALID', `Cannot unpack "${posix.basename(path)}": ${tool} failed: ${stderr.trim() || `exit code ${code}`}`));
  });
  raw.pipe(child.stdin);
  child.stdin.on('error', () => {
    // The tool may exit before reading everything (a corrupt file); its exit code reports that.
  });
  child.stdout.pipe(out);
  return out;
}

/** The archive's compression when the file is a tar (plain or compressed), else undefined. */
export async function detectArchive(path: string, signal?: AbortSignal): Promise<Compression | undefined> {
  const fh = await open(path, 'r');
  let head: Buffer;
  try {
    head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    head = head.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const compression = compressionOf(head);
  if (compression === 'none') return isTarHeader(head) ? 'none' : undefined;
  const stream = decompressed(path, compression, signal);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= 512) break;
    }
  } catch (err) {
    // A file that only looks compressed (garbage, or cut short before a tar header came out of
    // it) is copied as it is, as Docker does.
    if (err instanceof KilnError || isZlibError(err)) return undefined;
    throw err;
  } finally {
    stream.destroy();
  }
  return isTarHeader(Buffer.concat(chunks)) ? compression : undefined;
}

export interface ExtractOptions {
  /** Owner of everything extracted; absent keeps the archive's numeric owners. */
  owner?: { uid: number; gid: number };
  signal?: AbortSignal;
}

/** Unpacks a tar archive into `dest` (a path inside `root`); entries cannot escape the root. */
export async function extractArchive(path: string, compression: Compression, root: string, dest: string, o: ExtractOptions = {}): Promise<void> {
  const extract = tar.extract();
  const dirs: { host: string; mtime: Date }[] = [];
  // Directories made or found on the way, by path inside the root: resolving each entry's
  // parents afresh cost one lstat per component of every prefix, and 250 nested directories
  // took 46 s. An unpack never removes a directory, so what was one stays one.
  const parents = new Map<string, string>();
  const ensureParent = async (rel: string): Promise<string> => {
    const dir = posix.dirname(rel);
    let host = parents.get(dir);
    if (host === undefined) {
      // Links in the parents resolve inside the root, as in docker's chrooted unpack; those
      // naming directories that do not exist yet have them made inside the root where they point.
      host = await secureJoin(root, dir);
      await mkdir(host, { mode: 0o755, recursive: true });
      parents.set(dir, host);
    }
    return host;
  };
  let current: string | undefined;
  let inflight: Promise<void> | undefined;
  extract.on('entry', (header, stream, next) => {
    current = header.size ? header.name : undefined;
    // A tar cut inside this entry fails the entry's stream and the extractor with the same error,
    // possibly while the handler below is still making directories and has not read the stream
    // yet; the pipeline below reports it from the extractor. Unheard here, it ended the process.
    stream.on('error', () => {});
    stream.once('end', () => (current = undefined));
    const handle = async () => {
      // tar-stream has no type for GNU's 'S' (sparse): it says null. Its holes would have to be
      // written out byte by byte; refused, like every PAX sparse format, before anything is written.
      const pax = (header as { pax?: Record<string, string> }).pax ?? {};
      if (header.type === null || Object.keys(pax).some((k) => k.startsWith('GNU.sparse.'))) {
        throw new KilnError('ARCHIVE_UNSUPPORTED', `Cannot unpack "${pax['GNU.sparse.name'] ?? header.name}" of "${posix.basename(path)}": it is a sparse file (GNU tar --sparse) or another entry type only GNU tar knows`, {
          hint: 'Make the archive without --sparse (-S)',
        });
      }
      // Without the trailing `/` of a directory's name, so that its children find it as their parent.
      const rel = posix.join(dest, posix.normalize(`/${header.name}`)).replace(/(.)\/+$/, '$1');
      if (Buffer.byteLength(root) + Buffer.byteLength(rel) > MAX_HOST_PATH) throw tooDeep(path, header.name, MAX_HOST_PATH - Buffer.byteLength(root) - Buffer.byteLength(dest));
      // The entry's own name is never followed: an entry replaces a link of the same name, not
      // its target.
      const host = posix.join(await ensureParent(rel), posix.basename(rel));
      const uid = o.owner?.uid ?? header.uid ?? 0;
      const gid = o.owner?.gid ?? header.gid ?? 0;
      const mode = (header.mode ?? 0o644) & 0o7777;
      const mtime = header.mtime ?? new Date(0);
      if (header.type === 'directory') {
        // A link or file in the way goes; chmod and chown below must not follow a link to the host.
        const existing = await lstat(host).catch((err: unknown) => {
          if (isErrno(err, 'ENOENT')) return undefined;
          throw err;
        });
        if (existing && !existing.isDirectory()) await rm(host, { force: true });
        try {
          await mkdir(host, { mode });
        } catch (err) {
          if (!isErrno(err, 'EEXIST')) throw err;
        }
        await lchown(host, uid, gid);
        await chmod(host, mode);
        dirs.push({ host, mtime });
        parents.set(rel, host);
        stream.resume();
        return;
      }
      await rm(host, { force: true, recursive: false }).catch((err: unknown) => {
        // A directory of the same name stays: an archive does not replace directories with files.
        if (!isErrno(err, 'EISDIR') && !isErrno(err, 'ERR_FS_EISDIR')) throw err;
      });
      if (header.type === 'file' || header.type === 'contiguous-file') {
        // Exclusive: what was there is gone, and a link appearing in its place is not followed.
        await writeTarEntry(stream, host, { mode, flags: 'wx' });
        await lchown(host, uid, gid);
        await chmod(host, mode);
        await utimes(host, mtime, mtime);
        return;
      }
      stream.resume();
      if (header.type === 'symlink') {
        await symlink(header.linkname ?? '', host);
        await lchown(host, uid, gid);
        await lutimes(host, mtime, mtime);
      } else if (header.type === 'link') {
        const target = await secureJoin(root, posix.join(dest, posix.normalize(`/${header.linkname ?? ''}`)));
        await link(target, host);
      } else {
        throw new KilnError('ARCHIVE_UNSUPPORTED', `Cannot unpack "${header.name}" of "${posix.basename(path)}": ${header.type} entries are not supported`);
      }
    };
    inflight = handle().then(
      () => next(),
      (err: unknown) => next(err as Error),
    );
  });
  try {
    await pipeline(decompressed(path, compression, o.signal), limitUnpacked(maxUnpackedSize(), `Archive "${posix.basename(path)}"`), extract);
  } catch (err) {
    // The entry being written when the archive failed finishes (or fails) first, so that nothing
    // is written into the destination after the caller has been told it failed.
    await inflight;
    if (err instanceof KilnError) throw err;
    throw new KilnError('ARCHIVE_INVALID', `Cannot unpack "${posix.basename(path)}": ${unpackProblem(err, current)}`, {
      hint: 'The archive is damaged or cut short: make or download it again',
      cause: err,
    });
  }
  // Directory times last: writing their entries changed them.
  for (const d of dirs.reverse()) await utimes(d.host, d.mtime, d.mtime);
}

function isZlibError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' && code.startsWith('Z_');
}

/** What went wrong reading an archive, in words: tar-stream's and zlib's messages say little. */
function unpackProblem(err: unknown, entry: string | undefined): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'Z_BUF_ERROR') return 'its gzip data is cut short';
  if (isZlibError(err)) return `its gzip data is corrupt (${(err as Error).message})`;
  const message = (err as Error).message;
  if (message === 'Unexpected end of data') return entry === undefined ? 'it is cut short' : `it is cut short in entry "${entry}"`;
  return message;
}
