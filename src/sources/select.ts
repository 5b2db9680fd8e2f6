import { lstatSync } from 'node:fs';
import { posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { glob, hasGlob } from '../fsutil/glob.js';

/** Decides whether a context path (relative, `/`-separated) is left out of the build. */
export interface Exclusion {
  excluded(rel: string): boolean;
}

export const NO_EXCLUSION: Exclusion = { excluded: () => false };

export interface Selection {
  /** The source as written. */
  pattern: string;
  /** What it matched: paths relative to the source root, with their host paths. */
  matches: { rel: string; host: string }[];
}

/** Whether a source path names something above its root (`..`, `../x`, `a/../../x`). */
export function escapesRoot(pattern: string): boolean {
  const normalized = posix.normalize(pattern);
  return normalized === '..' || normalized.startsWith('../');
}

/** Cleans a source path so that it stays inside its root (`../x` → `x`, `/a` → `a`). */
export function cleanSource(p: string): string {
  const cleaned = posix.normalize(`/${p}`).slice(1);
  return cleaned === '' ? '.' : cleaned.replace(/\/$/, '');
}

/**
 * Expands COPY sources against a root: globs are matched, plain paths resolved with symlinks
 * followed inside the root. A source that matches nothing (or only excluded files) is an error.
 */
export async function selectSources(root: string, patterns: readonly string[], exclusion: Exclusion, what: string): Promise<Selection[]> {
  const out: Selection[] = [];
  for (const pattern of patterns) {
    if (escapesRoot(pattern)) {
      throw new KilnError('SOURCE_OUTSIDE', `Source "${pattern}" is outside ${what}`, { hint: 'COPY and ADD can only read files inside the context; move the file into it' });
    }
    const clean = cleanSource(pattern);
    const rels = hasGlob(clean) ? glob(root, clean) : [clean];
    const matches: { rel: string; host: string }[] = [];
    for (const rel of rels) {
      if (rel !== '.' && exclusion.excluded(rel)) continue;
      const host = await secureJoin(root, rel);
      try {
        lstatSync(host);
      } catch (err) {
        if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) continue;
        throw err;
      }
      matches.push({ rel: posix.relative(root, host) || '.', host });
    }
    if (matches.length === 0) {
      throw new KilnError('SOURCE_NOT_FOUND', `Source "${pattern}" not found in ${what}${what === 'the build context' ? ' (or excluded by .dockerignore)' : ''}`);
    }
    out.push({ pattern, matches });
  }
  return out;
}
