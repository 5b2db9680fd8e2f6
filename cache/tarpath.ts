/**
 * Names of layer tar entries: how they map to paths inside a layer root, and the OCI whiteout
 * names that stand for overlayfs whiteouts and opaque directories.
 */

/** Prefix of a whiteout entry: `dir/.wh.NAME` removes `dir/NAME` of the layers below. */
export const WHITEOUT_PREFIX = '.wh.';

/** Marker entry `dir/.wh..wh..opq`: `dir` hides everything the layers below put in it. */
export const OPAQUE_MARKER = '.wh..wh..opq';

/**
 * Names under this prefix are aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`), never a
 * whiteout of a file called `.wh.…`.
 */
export const RESERVED_WHITEOUT_PREFIX = '.wh..wh.';

/**
 * Where an entry lands, relative to the layer root, without a leading or trailing `/`; `''` is
 * the root itself. The name is cleaned as a rooted path, so `../x`, `/x` and `a/../../x` all
 * become `x`: no name can climb out of the root.
 */
export function cleanEntryPath(name: string): string {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts.join('/');
}

/**
 * The layer path a hard link entry points to, or `undefined` when its `..` components climb
 * above the root. A leading `/` means the layer root, as tar itself reads link names.
 */
export function resolveLinkTarget(linkname: string): string | undefined {
  const parts: string[] = [];
  for (const part of linkname.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else {
      parts.push(part);
    }
  }
  return parts.join('/');
}

/** `a/b/c` → `a/b`; a top-level name's parent is the root, `''`. */
export function parentPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash === -1 ? '' : path.slice(0, slash);
}

/** `a/b/c` → `c`. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** `a` + `b` → `a/b`, with the root `''` as the identity. */
export function joinPath(parent: string, name: string): string {
  return parent === '' ? name : `${parent}/${name}`;
}

/** Every proper ancestor of a layer path, outermost first: `a/b/c` → `a`, `a/b`. */
export function ancestors(path: string): string[] {
  const out: string[] = [];
  let slash = path.indexOf('/');
  while (slash !== -1) {
    out.push(path.slice(0, slash));
    slash = path.indexOf('/', slash + 1);
  }
  return out;
}
