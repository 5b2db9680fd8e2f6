import {
  chmodSync,
  chownSync,
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  linkSync,
  futimesSync,
  lchownSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { chmod, chown, copyFile, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { contentXattrs, isWhiteout } from '../../cache/overlay.js';
import { mayHaveXattrs } from '../../cache/syscalls.js';
import type { CopyAction } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { TimeSlice } from '../fsutil/timeslice.js';
import { detectArchive, extractArchive } from '../sources/archive.js';
import { cleanSource, NO_EXCLUSION, type Exclusion, type Selection } from '../sources/select.js';

export interface CopyOptions {
  /** Owner for everything created; absent: root for context files, the source owner otherwise. */
  owner?: { uid: number; gid: number };
  fromContext: boolean;
  /** Paths left out, relative to the source root: .dockerignore for the context. */
  exclusion: Exclusion;
  /** COPY/ADD --exclude: paths left out, relative to each matched source (a file: its name). */
  excludes?: Exclusion;
  signal?: AbortSignal;
  /** The source root, to compute context-relative paths for exclusion. */
  srcRoot: string;
  /**
   * The upper directory of the overlay mounted on the destination root. A directory the copy
   * creates is then filled there directly (writing through overlayfs costs about twice as much
   * per file): it is new, so the layers below have nothing in it. Only for a copy after which
   * nothing reads the new directories through the mount.
   */
  upper?: string;
  /**
   * The sources are read-only layer directories themselves rather than a view of them: a
   * whiteout in one (a 0/0 character device) hides what it names and is not copied.
   */
  layerSources?: boolean;
  /**
   * With layerSources, and the layers are not part of the destination's chain. A file the copy
   * keeps as it is (owner, mode and times: no --chown or --chmod) and
   * writes into `upper` is then a hard link to its source instead of a copy: nothing writes to
   * a layer once it is made, and a container's change to the file lands in an upper directory of
   * its own. Only a file with no other name is linked, so that no view of a chain ever shows one
   * file under two names that the image has as two files.
   */
  linkSources?: boolean;
}

/** A `--chmod` value as a function of a file's mode: octal sets it, symbolic edits it. */
export type ModeChange = (mode: number, isDir: boolean) => number;

const WHO: Record<string, number> = { u: 0o4700, g: 0o2070, o: 0o1007, a: 0o7777 };

export function parseChmod(value: string): ModeChange {
  if (/^[0-7]{3,4}$/.test(value)) {
    const fixed = parseInt(value, 8);
    return () => fixed;
  }
  const clauses = value.split(',').map((c) => /^([ugoa]*)([-+=])([rwxXst]*)$/.exec(c));
  if (clauses.some((c) => c === null)) {
    throw new KilnError('INVALID_CHMOD', `Invalid --chmod "${value}": expected an octal mode such as 755 or a symbolic one such as u+x,go-w`);
  }
  return (start, isDir) => {
    let mode = start & 0o7777;
    for (const c of clauses as RegExpExecArray[]) {
      const who = (c[1] || 'a').split('').reduce((m, w) => m | WHO[w]!, 0);
      let bits = 0;
      for (const p of c[3]!) {
        if (p === 'r') bits |= 0o444;
        else if (p === 'w') bits |= 0o222;
        else if (p === 'x' || (p === 'X' && (isDir || (start & 0o111) !== 0))) bits |= 0o111;
        else if (p === 's') bits |= 0o6000;
        else if (p === 't') bits |= 0o1000;
      }
      bits &= who;
      if (c[2] === '+') mode |= bits;
      else if (c[2] === '-') mode &= ~bits;
      else mode = (mode & ~who) | bits;
    }
    return mode;
  };
}

/** With --parents: a match's path below the pattern's `/./` pivot, or its whole path. */
function parentsPath(pattern: string, rel: string): string {
  const pivot = pattern.indexOf('/./');
  if (pivot < 0) return rel;
  const base = cleanSource(pattern.slice(0, pivot));
  return base === '.' ? rel : posix.relative(base, rel);
}

/**
 * Performs one COPY with Docker's rules: a directory source copies its contents; a file goes to
 * `dest` itself, or into it when `dest` ends with `/`, is an existing directory, or there are
 * several sources. Destinations resolve inside `destRoot`, symlinks included.
 */
export async function copyIntoRoot(destRoot: string, action: CopyAction, selections: readonly Selection[], o: CopyOptions): Promise<void> {
  const dest = posix.isAbsolute(action.dest) ? action.dest : posix.join(action.cwd || '/', action.dest);
  const matches = selections.flatMap((s) => s.matches.map((m) => ({ ...m, pattern: s.pattern })));
  const endsWithSlash = action.dest.endsWith('/') || action.dest.endsWith('/.') || action.dest === '.';
  if (matches.length > 1 && !endsWithSlash) {
    throw new KilnError('COPY_DEST_NOT_DIR', `When copying more than one source, the destination "${action.dest}" must be a directory and end with "/"`);
  }
  const destHost = await secureJoin(destRoot, dest);
  const destIsDir = endsWithSlash || matches.length > 1 || (await isDir(destHost));
  const mode = action.chmod === undefined ? undefined : parseChmod(action.chmod);
  const ctx: EntryCtx = { ...o, mode, destRoot, slice: new TimeSlice(o.signal), umask: process.umask() };
  for (const m of matches) {
    const st = lstatSync(m.host);
    if (o.excludes?.excluded(posix.basename(m.rel))) continue;
    ctx.matchRoot = st.isDirectory() ? m.host : posix.dirname(m.host);
    if (action.parents) {
      const target = posix.join(dest, parentsPath(m.pattern, m.rel));
      await mkdirOwned(destRoot, posix.dirname(target), ctx);
      await copyTop(m.host, await secureJoin(destRoot, target), ctx);
      continue;
    }
    const archive = action.extract && !st.isDirectory() ? await detectArchive(m.host, o.signal) : undefined;
    if (archive !== undefined) {
      // ADD unpacks a local archive into the destination, which is then a directory.
      await mkdirOwned(destRoot, dest, ctx);
      await extractArchive(m.host, archive, destRoot, dest, { owner: o.owner, signal: o.signal });
      continue;
    }
    if (st.isDirectory()) {
      const fresh = await mkdirOwned(destRoot, dest, ctx);
      await copyChildren(m.host, fresh ? fillTarget(destHost, ctx) : destHost, ctx, fresh);
    } else {
      const target = destIsDir ? posix.join(dest, posix.basename(m.rel)) : dest;
      await mkdirOwned(destRoot, posix.dirname(target), ctx);
      await copyTop(m.host, await secureJoin(destRoot, target), ctx);
    }
  }
}

interface EntryCtx extends CopyOptions {
  mode: ModeChange | undefined;
  destRoot: string;
  /** The matched source being copied, which --exclude patterns are relative to. */
  matchRoot?: string;
  slice: TimeSlice;
  /** The copy buffer of small files, allocated by the first one. */
  buffer?: Buffer;
  /** The process umask: a file whose mode it leaves whole is created with that mode. */
  umask: number;
}

/** New files belong to root:root unless their directory passes its group on (set-group-ID). */
const ROOT = process.geteuid?.() === 0 && process.getegid?.() === 0;

async function isDir(p: string): Promise<boolean> {
  try {
    return lstatSync(p).isDirectory();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

/**
 * mkdir -p inside the root; directories it creates get the copy's owner. True when it created
 * the last one, which is then empty.
 */
async function mkdirOwned(root: string, path: string, ctx: EntryCtx): Promise<boolean> {
  const parts = path.split('/').filter(Boolean);
  let cur = '/';
  let created = false;
  for (const part of parts) {
    cur = posix.join(cur, part);
    const host = await secureJoin(root, cur);
    created = false;
    try {
      const st = lstatSync(host);
      if (!st.isDirectory()) {
        throw new KilnError('COPY_NOT_DIR', `Cannot copy to "${path}": "${cur}" exists and is not a directory`);
      }
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      const owner = ctx.owner ?? { uid: 0, gid: 0 };
      for (const dir of await mkdirResolved(root, host)) {
        chmodSync(dir, 0o755);
        chownSync(dir, owner.uid, owner.gid);
        created = true;
      }
    }
  }
  return created;
}

/**
 * Creates `host` (already resolved inside `root` by secureJoin) and any missing parents, as
 * Docker does when a link in the image names a directory that does not exist yet. Everything
 * missing lies below the resolved, existing prefix, so nothing is created outside the root.
 * Returns the directories it made, outermost first.
 */
export async function mkdirResolved(root: string, host: string): Promise<string[]> {
  if (host !== root && !host.startsWith(`${root}/`)) {
    throw new KilnError('PATH_ESCAPE', `Refusing to create "${host}" outside the root "${root}"`);
  }
  const first = mkdirSync(host, { recursive: true, mode: 0o755 });
  if (first === undefined) return [];
  const made = [first];
  for (const part of posix.relative(first, host).split('/').filter(Boolean)) made.push(posix.join(made[made.length - 1]!, part));
  return made;
}

/*
 * Below the matched sources, files are copied with synchronous calls, paced by a TimeSlice: a
 * context is mostly small files, each needing about eight calls, and an asynchronous call is a
 * thread pool round trip several times dearer than the call itself (5,000 files took 8 s that
 * way). File owners, modes and times are set through the open descriptor, and a directory this
 * copy created is known to be empty, so its entries are written without looking for old ones.
 */

/** Files up to this size are copied through one buffer; larger ones by the kernel (reflink or sendfile) in the thread pool. */
const SMALL_FILE = 1024 * 1024;

/** Where to write the contents of `dir`, which this copy has just created: see CopyOptions.upper. */
function fillTarget(dir: string, ctx: EntryCtx): string {
  return ctx.upper !== undefined && dir.startsWith(`${ctx.destRoot}/`) ? ctx.upper + dir.slice(ctx.destRoot.length) : dir;
}

/** Copies the entries of `srcDir` into `destDir`; `fresh`: this copy created `destDir` just now. */
async function copyChildren(srcDir: string, destDir: string, ctx: EntryCtx, fresh: boolean): Promise<void> {
  const names = readdirSync(srcDir).sort();
  const rootOwned = ROOT && (lstatSync(destDir).mode & 0o2000) === 0;
  for (const name of names) {
    const wait = ctx.slice.pause();
    if (wait) await wait;
    const src = `${srcDir}/${name}`;
    if (ctx.fromContext && ctx.exclusion !== NO_EXCLUSION && ctx.exclusion.excluded(posix.relative(ctx.srcRoot, src))) continue;
    if (ctx.excludes && ctx.excludes !== NO_EXCLUSION && ctx.matchRoot && ctx.excludes.excluded(posix.relative(ctx.matchRoot, src))) continue;
    const st = lstatSync(src);
    if (ctx.layerSources && isWhiteout(st)) continue;
    let dest = `${destDir}/${name}`;
    let existing = fresh ? null : lstatOrNull(dest);
    if (existing?.isSymbolicLink() && st.isDirectory()) {
      // Copying a directory onto a symlink to a directory writes through it, as Docker does,
      // but the link is resolved inside the root.
      dest = await secureJoin(ctx.destRoot, posix.join('/', posix.relative(ctx.destRoot, destDir), name));
      existing = lstatOrNull(dest);
    }
    await copyEntry(src, st, dest, existing, ctx, rootOwned);
  }
}

function lstatOrNull(p: string): Stats | null {
  return lstatSync(p, { throwIfNoEntry: false }) ?? null;
}

/**
 * Whether `src` may become `dest` as a hard link (see CopyOptions.linkSources): the copy keeps
 * its metadata, it has one name, and no extended attributes (overlayfs' own ones, which a copy
 * leaves behind, would come along).
 */
function linkable(src: string, st: Stats, dest: string, ctx: EntryCtx): boolean {
  if (!ctx.linkSources || ctx.owner !== undefined || ctx.mode !== undefined || ctx.upper === undefined) return false;
  return st.nlink === 1 && dest.startsWith(`${ctx.upper}/`) && !(mayHaveXattrs(src) ?? listAttributesSync(src).length > 0);
}

/**
 * Gives `dest` the extended attributes of `src` (contentXattrs: file capabilities, ACLs, user.*),
 * as BuildKit's COPY does; after chown, which clears security.capability.
 */
function copyXattrs(src: string, dest: string): void {
  for (const [name, value] of contentXattrs(src)) {
    try {
      setAttributeSync(dest, name, value);
    } catch (err) {
      throw new KilnError('COPY_XATTR', `Cannot copy the extended attribute "${name}" of "${src}": ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

/** Copies the matched source `src` itself, which was resolved through symlinks, to `dest`. */
async function copyTop(src: string, dest: string, ctx: EntryCtx): Promise<void> {
  await copyEntry(src, statSync(src), dest, lstatOrNull(dest), ctx, false);
}

/**
 * Copies one entry; `st` describes `src`, `existing` what `dest` is now (null: nothing).
 * `rootOwned`: a file created in dest's directory belongs to root:root already.
 */
async function copyEntry(src: string, st: Stats, dest: string, existing: Stats | null, ctx: EntryCtx, rootOwned: boolean): Promise<void> {
  const owner = ctx.owner ?? (ctx.fromContext ? { uid: 0, gid: 0 } : { uid: st.uid, gid: st.gid });
  const mode = ctx.mode ? ctx.mode(st.mode & 0o7777, st.isDirectory()) : st.mode & 0o7777;
  if (st.isDirectory()) {
    if (existing && !existing.isDirectory()) rmSync(dest, { force: true });
    const fresh = !existing?.isDirectory();
    if (fresh) mkdirSync(dest);
    const into = fresh ? fillTarget(dest, ctx) : dest;
    await copyChildren(src, into, ctx, fresh);
    chownSync(into, owner.uid, owner.gid);
    chmodSync(into, mode);
    copyXattrs(src, into);
    utimesSync(into, st.atimeMs / 1000, st.mtimeMs / 1000);
    return;
  }
  if (existing) rmSync(dest, { recursive: existing.isDirectory(), force: true });
  if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(src), dest);
    lchownSync(dest, owner.uid, owner.gid);
    lutimesSync(dest, st.atimeMs / 1000, st.mtimeMs / 1000);
    return;
  }
  if (!st.isFile()) {
    throw new KilnError('COPY_UNSUPPORTED', `Cannot copy "${src}": only files, directories and symbolic links can be copied`);
  }
  if (linkable(src, st, dest, ctx)) {
    linkSync(src, dest);
    return;
  }
  if (st.size > SMALL_FILE) {
    // Off the event loop: copying a large file takes long enough to stall progress and Ctrl-C.
    await copyFile(src, dest, constants.COPYFILE_FICLONE);
    await chown(dest, owner.uid, owner.gid);
    await chmod(dest, mode);
    copyXattrs(src, dest);
    await utimes(dest, st.atimeMs / 1000, st.mtimeMs / 1000);
    return;
  }
  const buffer = (ctx.buffer ??= Buffer.allocUnsafe(SMALL_FILE));
  const input = openSync(src, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    // Most files need neither chown nor chmod after they are created: each call saved is a
    // tenth of a small file's copy.
    const finalMode = (mode & ~0o777) === 0 && (mode & ctx.umask) === 0;
    const owned = rootOwned && owner.uid === 0 && owner.gid === 0;
    const output = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, finalMode ? mode : 0o600);
    try {
      // To the end of the file as it is now, not as it was stat'ed: the copy is whole either way.
      // A short read of a regular file is its end.
      for (;;) {
        const length = readSync(input, buffer, 0, buffer.length, null);
        for (let done = 0; done < length; ) done += writeSync(output, buffer, done, length - done);
        if (length < buffer.length) break;
      }
      // chown before chmod: changing the owner clears the set-user-ID and set-group-ID bits.
      if (!owned) fchownSync(output, owner.uid, owner.gid);
      if (!finalMode) fchmodSync(output, mode);
      copyXattrs(src, dest);
      futimesSync(output, st.atimeMs / 1000, st.mtimeMs / 1000);
    } finally {
      closeSync(output);
    }
  } finally {
    closeSync(input);
  }
}
