/**
 * mount(2) and umount2(2) called in-process through libc: a mount costs ~0.5 ms this way against
 * ~4 ms for spawning mount(8), and every RUN step mounts and unmounts once. When the FFI cannot
 * load, the callers fall back to the mount and umount programs. Also llistxattr(2), which the
 * layer writer asks of every file: about half the cost of the xattr addon's call.
 */
import { constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

interface Libc {
  mount(source: string, target: string, fstype: string, flags: number, data: string | null): number;
  umount2(target: string, flags: number): number;
  llistxattr(path: string, list: null, size: number): number;
  statx(dirfd: number, path: string, flags: number, mask: number, buf: Buffer): number;
  openat(dirfd: number, path: string, flags: number): number;
  close(fd: number): number;
  flistxattr(fd: number, list: null, size: number): number;
  errno(): number;
}

let libc: Libc | null | undefined;

export function nativeLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const koffi = loadKoffi();
    const lib = koffi.load('libc.so.6');
    libc = {
      mount: lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
      umount2: lib.func('int umount2(const char *target, int flags)'),
      llistxattr: lib.func('long llistxattr(const char *path, void *list, unsigned long size)'),
      statx: lib.func('int statx(int dirfd, const char *path, int flags, unsigned int mask, _Out_ uint8_t *buf)'),
      openat: lib.func('int openat(int dirfd, const char *path, int flags)'),
      close: lib.func('int close(int fd)'),
      flistxattr: lib.func('long flistxattr(int fd, void *list, unsigned long size)'),
      errno: () => koffi.errno(),
    };
  } catch {
    // No FFI on this machine: the mount programs do the same job, only slower.
    libc = null;
  }
  return libc;
}

/**
 * koffi's package entry spends ~10 ms finding its addon (it reads node's ELF header to tell glibc
 * from musl) before the ~3 ms the addon takes to load, on every build that runs a step. On x64
 * Linux the glibc addon is tried first, directly; anything else goes through the entry.
 */
function loadKoffi(): typeof import('koffi') {
  const require = createRequire(import.meta.url);
  if (process.platform === 'linux' && process.arch === 'x64') {
    try {
      const dir = dirname(require.resolve('@koromix/koffi-linux-x64/package.json'));
      return require(join(dir, 'linux_x64', 'koffi.node')) as typeof import('koffi');
    } catch {
      // Not there, or not loadable here (musl): the entry knows which addon to take.
    }
  }
  return require('koffi') as typeof import('koffi');
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 16: 'EBUSY', 20: 'ENOTDIR', 22: 'EINVAL', 28: 'ENOSPC', 40: 'ELOOP', 13: 'EACCES', 19: 'ENODEV',
};

export function errnoName(n: number): string {
  return ERRNO_NAMES[n] ?? `errno ${n}`;
}

/**
 * Whether `path` (not followed if a link) may have extended attributes: false only when libc
 * says the list is empty (or the filesystem has none). Undefined without the FFI.
 */
export function mayHaveXattrs(path: string): boolean | undefined {
  const c = nativeLibc();
  if (!c) return undefined;
  return listSizeSays(c, c.llistxattr(path, null, 0));
}

/** mayHaveXattrs for an open file. */
export function fdMayHaveXattrs(fd: number): boolean | undefined {
  const c = nativeLibc();
  if (!c) return undefined;
  return listSizeSays(c, c.flistxattr(fd, null, 0));
}

function listSizeSays(c: Libc, size: number): boolean {
  // -1 (an error: ENOTSUP has nothing to list, the rest are for the caller's full read to report).
  return size !== 0 && !(size < 0 && c.errno() === ENOTSUP);
}

/*
 * Descriptor-relative calls for the layer writer: a directory opened once, then each entry named
 * by its own name (no path built, converted and looked up again per call), and a file's
 * attributes listed on the descriptor its content is read from. Per small file this costs about
 * 5 us less than Node's open, read and close with llistxattr by path. All answer undefined when
 * the FFI is missing or the call fails, and the caller then takes Node's path-based way, which
 * also reports the error.
 */

const { O_RDONLY, O_NOFOLLOW, O_DIRECTORY } = constants;
/** Linux's, on every architecture Node runs on (Node keeps it out of fs.constants). */
const O_CLOEXEC = 0o2000000;

/** A directory's descriptor, for openFileAt and statEntryAt; closeFd it when done. */
export function openDirectory(path: string): number | undefined {
  const c = nativeLibc();
  if (!c) return undefined;
  const fd = c.openat(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  return fd >= 0 ? fd : undefined;
}

/** Opens the entry `name` of the directory `dirfd` for reading, not following a link. */
export function openFileAt(dirfd: number, name: string): number | undefined {
  const c = nativeLibc();
  if (!c) return undefined;
  const fd = c.openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  return fd >= 0 ? fd : undefined;
}

export function closeFd(fd: number): void {
  nativeLibc()?.close(fd);
}

const ENOTSUP = 95;

/** What the layer writer needs of an entry, from statx(2) without following a link. */
export interface EntryStat {
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Modification time in whole seconds, rounded down (also before 1970). */
  mtime: number;
  nlink: number;
  /** Identifies the file among its filesystem's (device and inode); only for nlink > 1. */
  id: string;
  rdevMajor: number;
  rdevMinor: number;
}

const statxBuffer = Buffer.alloc(256);
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
/** STATX_TYPE | MODE | NLINK | UID | GID | MTIME | INO | SIZE: the fields read below. */
const STATX_NEEDED = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x100 | 0x200;

/**
 * lstat through statx(2) into one reused buffer: no Stats object, no Dates or BigInts to collect
 * (the layer writer stats every file of a layer). Undefined without the FFI, or when the call
 * fails or the filesystem leaves a field out; the caller then asks Node, which also reports the
 * error.
 */
export function statEntry(path: string): EntryStat | undefined {
  return statEntryAt(AT_FDCWD, path);
}

/** statEntry of the entry `name` of the directory `dirfd` (or a path, with AT_FDCWD). */
export function statEntryAt(dirfd: number, name: string): EntryStat | undefined {
  const c = nativeLibc();
  if (!c || c.statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_NEEDED, statxBuffer) !== 0) return undefined;
  const b = statxBuffer;
  if ((b.readUInt32LE(0) & STATX_NEEDED) !== STATX_NEEDED) return undefined;
  const nlink = b.readUInt32LE(16);
  return {
    mode: b.readUInt16LE(28),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    size: Number(b.readBigUInt64LE(40)),
    // struct statx_timestamp: tv_sec (s64), then tv_nsec (u32, always below a second).
    mtime: Number(b.readBigInt64LE(112)),
    nlink,
    id: nlink > 1 ? `${b.readUInt32LE(136)}:${b.readUInt32LE(140)}:${b.readBigUInt64LE(32)}` : '',
    rdevMajor: b.readUInt32LE(128),
    rdevMinor: b.readUInt32LE(132),
  };
}
