import { readFileSync, type Stats } from 'node:fs';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { type Digest, digestOf } from './digest.js';
import { run } from './exec.js';
import { KilnError } from './errors.js';
import { errnoName, mayHaveXattrs, nativeLibc } from './syscalls.js';

/** overlayfs' whiteout: a 0/0 character device, which hides its name in the layers below. */
export function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/** Whether overlayfs marked the directory `dir` opaque: the layers below show nothing in it. */
export function isOpaque(dir: string): boolean {
  if (mayHaveXattrs(dir) === false) return false;
  try {
    return getAttributeSync(dir, 'trusted.overlay.opaque')?.toString('latin1') === 'y';
  } catch {
    // The attribute is absent (the binding may report ENODATA as a generic failure).
    return false;
  }
}

const NO_XATTRS: readonly [string, Buffer][] = [];

/** A digest of an attribute set as contentXattrs gives it (names in order, values as base64). */
export function xattrsDigest(xattrs: readonly [string, Buffer][]): Digest {
  return digestOf(JSON.stringify(xattrs.map(([name, value]) => [name, value.toString('base64')])));
}

/** Whether an extended attribute travels with a file's content (see contentXattrs). */
export function isContentXattr(name: string): boolean {
  return !name.startsWith('trusted.overlay.') && name !== 'security.selinux';
}

/**
 * The extended attributes a copy of `path` carries, in name order (security.capability, ACLs,
 * user.*): all but overlayfs' own `trusted.overlay.*`, which describe one mount's layers, and the
 * SELinux label, which the host's policy gives a file where it lands. Not for symbolic links.
 */
export function contentXattrs(path: string): readonly [string, Buffer][] {
  if (mayHaveXattrs(path) === false) return NO_XATTRS;
  const names = listAttributesSync(path).filter(isContentXattr);
  if (names.length === 0) return NO_XATTRS;
  const out: [string, Buffer][] = [];
  for (const name of names.sort()) {
    const value = getAttributeSync(path, name);
    // null: the attribute went away between listing and reading.
    if (value !== null) out.push([name, value]);
  }
  return out;
}

export interface OverlayOptions {
  /** Lower directories, top first (short absolute paths: see Store.shortLink). */
  lower: string[];
  upper?: string;
  work?: string;
}

// The kernel takes at most one page of mount options; with ~33-byte links per layer about 120
// layers fit. Deeper chains need flattening (not done yet).
const MAX_OPTIONS = 4000;

export async function mountOverlay(target: string, o: OverlayOptions): Promise<void> {
  const parts = [`lowerdir=${o.lower.join(':')}`];
  // Without redirects and metadata-only copy-ups, whatever an upper directory holds is its own
  // content, as the layer tar and the COPY readers of layer directories take it (kernels may
  // default to either being on).
  if (o.upper !== undefined) parts.push(`upperdir=${o.upper}`, `workdir=${o.work}`, 'redirect_dir=off', 'metacopy=off');
  const options = parts.join(',');
  if (options.length > MAX_OPTIONS) {
    throw new KilnError('TOO_MANY_LAYERS', `Cannot mount a chain of ${o.lower.length} layers: the overlay options exceed one page`);
  }
  const libc = nativeLibc();
  if (libc) {
    if (libc.mount('overlay', target, 'overlay', 0, options) !== 0) {
      const errno = libc.errno();
      throw new KilnError('MOUNT_FAILED', `Cannot mount an overlay on "${target}": ${errnoName(errno)}`, { hint: `Options: ${options}` });
    }
    return;
  }
  await run('mount', ['-t', 'overlay', 'overlay', '-o', options, target]);
}

/** A memory-only filesystem, for what must never reach a disk (secrets). */
export async function mountTmpfs(target: string, options: string): Promise<void> {
  const libc = nativeLibc();
  if (libc) {
    if (libc.mount('tmpfs', target, 'tmpfs', 0, options) !== 0) {
      throw new KilnError('MOUNT_FAILED', `Cannot mount a tmpfs on "${target}": ${errnoName(libc.errno())}`);
    }
    return;
  }
  await run('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', target]);
}

export async function unmount(target: string): Promise<void> {
  const libc = nativeLibc();
  for (let attempt = 0; ; attempt++) {
    let failure: string;
    if (libc) {
      if (libc.umount2(target, 0) === 0) return;
      failure = errnoName(libc.errno());
      if (failure === 'EINVAL' || failure === 'ENOENT') return; // not a mount point (any more)
    } else {
      const r = await run('umount', [target], { allowFail: true });
      if (r.code === 0) return;
      failure = r.stderr.trim();
    }
    if (!(await isMountPoint(target))) return;
    if (attempt >= 20) throw new KilnError('UNMOUNT_FAILED', `Cannot unmount "${target}": ${failure}`);
    // A process that just exited may still hold the mount for a moment.
    await new Promise((res) => setTimeout(res, 25 * (attempt + 1)));
  }
}

export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountsUnder(path)).includes(path);
}

/** Mount points at or under `prefix`, deepest first. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  const found: string[] = [];
  const under = prefix.endsWith('/') ? prefix : `${prefix}/`;
  for (const line of mounts.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const p = unescapeMountPath(field);
    if (p === prefix || p.startsWith(under)) found.push(p);
  }
  return found.sort((a, b) => b.length - a.length);
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
