import { constants } from 'node:fs';
import { chmod, chown, copyFile, lchown, lstat, lutimes, mkdir, readdir, readlink, rm, stat, symlink, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import type { CopyAction } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';
import type { Exclusion, Selection } from '../sources/select.js';

export interface CopyOptions {
  /** Owner for everything created; absent: root for context files, the source owner otherwise. */
  owner?: { uid: number; gid: number };
  fromContext: boolean;
  exclusion: Exclusion;
  /** The source root, to compute context-relative paths for exclusion. */
  srcRoot: string;
}

/** Parses `--chmod` in octal (symbolic modes arrive with the frontend issue). */
export function parseChmod(value: string): number {
  if (!/^[0-7]{3,4}$/.test(value)) {
    throw new KilnError('INVALID_CHMOD', `Invalid --chmod "${value}": expected an octal mode such as 755 or 0644`);
  }
  return parseInt(value, 8);
}

/**
 * Performs one COPY with Docker's rules: a directory source copies its contents; a file goes to
 * `dest` itself, or into it when `dest` ends with `/`, is an existing directory, or there are
 * several sources. Destinations resolve inside `destRoot`, symlinks included.
 */
export async function copyIntoRoot(destRoot: string, action: CopyAction, selections: readonly Selection[], o: CopyOptions): Promise<void> {
  const dest = posix.isAbsolute(action.dest) ? action.dest : posix.join(action.cwd || '/', action.dest);
  const matches = selections.flatMap((s) => s.matches);
  const endsWithSlash = action.dest.endsWith('/') || action.dest.endsWith('/.') || action.dest === '.';
  if (matches.length > 1 && !endsWithSlash) {
    throw new KilnError('COPY_DEST_NOT_DIR', `When copying more than one source, the destination "${action.dest}" must be a directory and end with "/"`);
  }
  const destHost = await secureJoin(destRoot, dest);
  const destIsDir = endsWithSlash || matches.length > 1 || (await isDir(destHost));
  const mode = action.chmod === undefined ? undefined : parseChmod(action.chmod);
  const ctx: EntryCtx = { ...o, mode, destRoot };
  for (const m of matches) {
    const st = await lstat(m.host);
    if (st.isDirectory()) {
      await mkdirOwned(destRoot, dest, ctx);
      await copyChildren(m.host, destHost, ctx);
    } else {
      const target = destIsDir ? posix.join(dest, posix.basename(m.rel)) : dest;
      await mkdirOwned(destRoot, posix.dirname(target), ctx);
      await copyEntry(m.host, await secureJoin(destRoot, target), ctx, true);
    }
  }
}

interface EntryCtx extends CopyOptions {
  mode: number | undefined;
  destRoot: string;
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

/** mkdir -p inside the root; directories it creates get the copy's owner. */
async function mkdirOwned(root: string, path: string, ctx: EntryCtx): Promise<void> {
  const parts = path.split('/').filter(Boolean);
  let cur = '/';
  for (const part of parts) {
    cur = posix.join(cur, part);
    const host = await secureJoin(root, cur);
    try {
      const st = await lstat(host);
      if (!st.isDirectory()) {
        throw new KilnError('COPY_NOT_DIR', `Cannot copy to "${path}": "${cur}" exists and is not a directory`);
      }
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      await mkdir(host, { mode: 0o755 });
      await chmod(host, 0o755);
      const owner = ctx.owner ?? { uid: 0, gid: 0 };
      await chown(host, owner.uid, owner.gid);
    }
  }
}

async function copyChildren(srcDir: string, destDir: string, ctx: EntryCtx): Promise<void> {
  const names = (await readdir(srcDir)).sort();
  for (const name of names) {
    const src = `${srcDir}/${name}`;
    if (ctx.fromContext && ctx.exclusion.excluded(posix.relative(ctx.srcRoot, src))) continue;
    let dest = `${destDir}/${name}`;
    const existing = await lstatOrNull(dest);
    if (existing?.isSymbolicLink() && (await lstat(src)).isDirectory()) {
      // Copying a directory onto a symlink to a directory writes through it, as Docker does,
      // but the link is resolved inside the root.
      dest = await secureJoin(ctx.destRoot, posix.join('/', posix.relative(ctx.destRoot, destDir), name));
    }
    await copyEntry(src, dest, ctx, false);
  }
}

async function lstatOrNull(p: string) {
  try {
    return await lstat(p);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

async function copyEntry(src: string, dest: string, ctx: EntryCtx, top: boolean): Promise<void> {
  // The top source was resolved through symlinks; inside a directory, links are copied as links.
  const st = top ? await stat(src) : await lstat(src);
  const owner = ctx.owner ?? (ctx.fromContext ? { uid: 0, gid: 0 } : { uid: st.uid, gid: st.gid });
  const mode = ctx.mode ?? st.mode & 0o7777;
  const existing = await lstatOrNull(dest);
  if (st.isDirectory()) {
    if (existing && !existing.isDirectory()) await rm(dest, { force: true });
    if (!existing?.isDirectory()) await mkdir(dest);
    await copyChildren(src, dest, ctx);
    await chown(dest, owner.uid, owner.gid);
    await chmod(dest, mode);
    await utimes(dest, st.atime, st.mtime);
    return;
  }
  if (existing) await rm(dest, { recursive: existing.isDirectory(), force: true });
  if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dest);
    await lchown(dest, owner.uid, owner.gid);
    await lutimes(dest, st.atime, st.mtime);
    return;
  }
  if (!st.isFile()) {
    throw new KilnError('COPY_UNSUPPORTED', `Cannot copy "${src}": only files, directories and symbolic links can be copied`);
  }
  await copyFile(src, dest, constants.COPYFILE_FICLONE);
  await chown(dest, owner.uid, owner.gid);
  await chmod(dest, mode);
  await utimes(dest, st.atime, st.mtime);
}
