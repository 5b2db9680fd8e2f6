import { lstatSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { isErrno } from '../../cache/fsutil.js';
import { compileMatch, type Matcher } from './match.js';

const MAGIC = /[*?[\\]/;

export function hasGlob(pattern: string): boolean {
  return MAGIC.test(pattern);
}

/**
 * Paths under `root` (relative, `/`-separated) matching `pattern`. `*`, `?` and classes stay
 * within a segment (Go filepath.Match, see match.ts); a `**` segment matches any number of
 * segments. Results are sorted. One synchronous readdir per directory walked (see the note in
 * cache/fsutil.ts). Throws KilnError('INVALID_PATTERN') for a malformed pattern.
 */
export function glob(root: string, pattern: string): string[] {
  // A run of `**` segments means what one does; kept, each would walk the tree once more.
  const segments = pattern.split('/').filter((s, i, all) => s !== '' && s !== '.' && !(s === '**' && all[i - 1] === '**'));
  const matchers: (Matcher | undefined)[] = segments.map((s) => (s !== '**' && hasGlob(s) ? compileMatch(s, { source: pattern }) : undefined));
  const out = new Set<string>();
  // Each directory is listed once and reached at most once per segment: the walk is bounded by
  // the tree's size times the pattern's segments, however many `**` the pattern has.
  const listed = new Map<string, { name: string; dir: boolean }[]>();
  const visited = new Set<string>();
  const entriesOf = (dir: string) => {
    let entries = listed.get(dir);
    if (!entries) listed.set(dir, (entries = list(posix.join(root, dir))));
    return entries;
  };
  const walk = (dir: string, i: number): void => {
    const key = `${i}\0${dir}`;
    if (visited.has(key)) return;
    visited.add(key);
    if (i === segments.length) {
      out.add(dir);
      return;
    }
    const seg = segments[i]!;
    const child = (name: string) => (dir === '' ? name : `${dir}/${name}`);
    if (seg === '**') {
      walk(dir, i + 1);
      for (const e of entriesOf(dir)) if (e.dir) walk(child(e.name), i);
      return;
    }
    const match = matchers[i];
    if (!match) {
      if (exists(posix.join(root, child(seg)))) walk(child(seg), i + 1);
      return;
    }
    for (const e of entriesOf(dir)) if (match(e.name)) walk(child(e.name), i + 1);
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
