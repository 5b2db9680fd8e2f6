import { resolve } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { parseReference } from '../image/reference.js';

/** `min`: the records of the final image's own steps; `max`: every step the build solved. */
export type CacheMode = 'min' | 'max';

export type CacheTo =
  | { type: 'registry'; ref: string; mode: CacheMode; cacheMounts: boolean }
  | { type: 'local'; dest: string; mode: CacheMode; cacheMounts: boolean }
  | { type: 'inline' };

export type CacheFrom = { type: 'registry'; ref: string } | { type: 'local'; src: string };

function invalid(flag: string, value: string, why: string): KilnError {
  return new KilnError('INVALID_CACHE_SPEC', `Invalid ${flag} "${value}": ${why}`, { exitCode: 2 });
}

function fields(flag: string, value: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw invalid(flag, value, `"${part}" is not KEY=VALUE`);
    out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

function checkRef(flag: string, value: string, ref: string | undefined): string {
  if (!ref) throw invalid(flag, value, 'type=registry needs ref=');
  try {
    parseReference(ref);
  } catch (err) {
    if (err instanceof KilnError) throw invalid(flag, value, err.message);
    throw err;
  }
  return ref;
}

/** BuildKit's `--cache-to` syntax: `type=registry,ref=R[,mode=max]`, `type=local,dest=DIR`, `type=inline`. */
export function parseCacheTo(value: string): CacheTo {
  const flag = '--cache-to';
  const f = fields(flag, value);
  const type = f.get('type');
  if (type === 'inline') return { type: 'inline' };
  const mode = f.get('mode') ?? 'min';
  if (mode !== 'min' && mode !== 'max') throw invalid(flag, value, `mode must be min or max, not "${mode}"`);
  const mounts = f.get('cache-mounts') ?? 'false';
  if (mounts !== 'true' && mounts !== 'false') throw invalid(flag, value, `cache-mounts takes true or false, not "${mounts}"`);
  const cacheMounts = mounts === 'true';
  if (type === 'registry') return { type, ref: checkRef(flag, value, f.get('ref')), mode, cacheMounts };
  if (type === 'local') {
    const dest = f.get('dest');
    if (!dest) throw invalid(flag, value, 'type=local needs dest=');
    return { type, dest: resolve(dest), mode, cacheMounts };
  }
  throw invalid(flag, value, `type must be registry, local or inline${type ? `, not "${type}"` : ''}`);
}

/** `--cache-from type=registry,ref=R`, `type=local,src=DIR`, or a bare reference (as buildx). */
export function parseCacheFrom(value: string): CacheFrom {
  const flag = '--cache-from';
  if (!value.includes('=')) return { type: 'registry', ref: checkRef(flag, value, value) };
  const f = fields(flag, value);
  const type = f.get('type');
  if (type === 'registry') return { type, ref: checkRef(flag, value, f.get('ref')) };
  if (type === 'local') {
    const src = f.get('src');
    if (!src) throw invalid(flag, value, 'type=local needs src=');
    return { type, src: resolve(src) };
  }
  throw invalid(flag, value, `type must be registry or local${type ? `, not "${type}"` : ''}`);
}
