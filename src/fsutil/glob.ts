import { lstatSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { isErrno } from '../../cache/fsutil.js';

const MAGIC = /[*?[\\]/;

export function hasGlob(pattern: string): boolean {
  return MAGIC.test(pattern);
}

/**
 * One path segment as a regular expression, with Go filepath.Match semantics; also a whole path
 * as Go's path.Match takes one (`*` and `?` never match `/`), as docker's reference filter does.
 */
export function segmentRegex(segment: string): RegExp {
  let re = '^';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\' && i + 1 < segment.length) re += escapeRe(segment[++i]!);
    else if (c === '[') {
      const end = segment.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let cls = segment.slice(i + 1, end);
      if (cls.startsWith('^') || cls.startsWith('!')) cls = `^${cls.slice(1)}`;
      re += `[${cls.replace(/\\(.)/g, '\\$1')}]`;
      i = end;
    } else re += escapeRe(c);
  }
  return new RegExp(`${re}$`, 's');
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/**
 * Paths under `root` (relative, `/`-separated) matching `pattern`. `*`, `?` and classes stay
 * within a segment; a `**` segment matches any number of segments. Results are sorted. One
 * synchronous readdir per directory walked (see the note in cache/fsutil.ts).
 */
export function glob(root: string, pattern: string): string[] {
  const segments = pattern.split('/').filter((s) => s !== '' && s !== '.');
  const out = new Set<string>();
  const walk = (dir: string, i: number): void => {
    if (i === segments.length) {
      out.add(dir);
      return;
    }
    const seg = segments[i]!;
    if (!hasGlob(seg)) {
      const next = dir === '' ? seg : `${dir}/${seg}`;
      if (exists(posix.join(root, next))) walk(next, i + 1);
      return;
    }
    const entries = list(posix.join(root, dir));
    if (seg === '**') {
      walk(dir, i + 1);
      for (const e of entries) if (e.dir) walk(dir === '' ? e.name : `${dir}/${e.name}`, i);
      return;
    }
    const re = segmentRegex(seg);
    for (const e of entries) {
      if (re.test(e.name)) walk(dir === '' ? e.name : `${dir}/${e.name}`, i + 1);
    }
  };
  walk('', 0);
  return [...out].filter((p) => p !== '').sort();
}

function list(dir: string): { name: string; dir: boolean }[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).map((d) => ({ name: d.name, dir: d.isDirectory() }));
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return [];
    throw err;
  }
}

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}
