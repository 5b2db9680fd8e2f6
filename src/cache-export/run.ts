import type { Digest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import type { ImageConfig, Vertex } from '../../solver/graph.js';
import type { ProgressNumbers, ProgressSink } from '../../solver/progress.js';
import type { CacheImport, SolvedVertex } from '../../solver/worker.js';
import { exportCache, withInlineCache } from './export.js';
import { importCache } from './import.js';
import { collectRecords } from './records.js';
import type { CacheFrom, CacheTo } from './spec.js';

export interface CacheRunOptions {
  progress: ProgressSink;
  numbers: ProgressNumbers;
  signal?: AbortSignal;
  insecureRegistries?: readonly string[];
}

/** Runs `fn` as one bookkeeping step of the build's progress. */
async function step<T>(name: string, o: CacheRunOptions, fn: () => Promise<T>): Promise<T> {
  const id = o.numbers.id(`internal:${name}`);
  const start = Date.now();
  o.progress({ type: 'vertex.start', id, name, time: start });
  try {
    const out = await fn();
    o.progress({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - start });
    return out;
  } catch (err) {
    o.progress({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - start, message: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

/**
 * Reads every `--cache-from` before the solve. As BuildKit does, a cache that cannot be read
 * (not pushed yet, a typo, a registry down) is a warning: the build runs its steps instead.
 */
export async function importCaches(store: Store, from: readonly CacheFrom[], o: CacheRunOptions): Promise<CacheImport[]> {
  const out: CacheImport[] = [];
  for (const f of from) {
    const where = f.type === 'registry' ? f.ref : f.src;
    try {
      const imported = await step(`importing cache manifest from ${where}`, o, () => importCache(store, f, o));
      const seeded = await imported.seedCacheMounts(o.signal);
      if (seeded > 0) o.progress({ type: 'info', message: `Seeded ${seeded} cache mount${seeded === 1 ? '' : 's'} from ${where}` });
      out.push(imported);
    } catch (err) {
      if (!(err instanceof KilnError) || err.code === 'CANCELLED' || o.signal?.aborted) throw err;
      o.progress({ type: 'warning', message: `Cannot import the cache from "${where}": ${err.message}` });
    }
  }
  return out;
}

/** The final image's config with the records of its own steps inline (`--cache-to type=inline`). */
export function inlineCache(config: ImageConfig, results: ReadonlyMap<Digest, SolvedVertex>, root: Vertex | undefined): ImageConfig {
  return withInlineCache(config, collectRecords(results, root, 'min'));
}

/** Writes every `--cache-to` but inline (which lives in the image) once the image is written. */
export async function exportCaches(store: Store, to: readonly CacheTo[], results: ReadonlyMap<Digest, SolvedVertex>, root: Vertex | undefined, o: CacheRunOptions): Promise<void> {
  const mountIds = new Set<string>();
  for (const r of results.values()) {
    if (r.vertex.op.kind !== 'exec') continue;
    for (const m of r.vertex.op.mounts ?? []) if (m.type === 'cache') mountIds.add(m.id);
  }
  for (const t of to) {
    if (t.type === 'inline') continue;
    const name = t.type === 'registry' ? `exporting cache to registry ${t.ref}` : `exporting cache to directory ${t.dest}`;
    await step(name, o, () => exportCache(store, t, collectRecords(results, root, t.mode), { signal: o.signal, insecureRegistries: o.insecureRegistries, cacheMountIds: [...mountIds] }));
  }
}
