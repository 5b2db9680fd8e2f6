/**
 * Go's `path/filepath.Clean` on Unix: the shortest path lexically equal to `path`. Repeated
 * slashes, `.` segments and trailing slashes go away, `..` eats the segment before it, and `..`
 * at the root stays at the root. An empty result is `.`.
 */
export function cleanPath(path: string): string {
  const rooted = path.startsWith('/');
  const parts: string[] = [];
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      if (parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
      else if (!rooted) parts.push('..');
      continue;
    }
    parts.push(segment);
  }
  const joined = (rooted ? '/' : '') + parts.join('/');
  return joined === '' ? '.' : joined;
}

/** Go's `filepath.Dir`: everything before the last slash, cleaned. */
export function parentDir(path: string): string {
  return cleanPath(path.slice(0, path.lastIndexOf('/') + 1));
}
