import type { LayerRow } from '../../cache/db.js';
import type { Digest } from '../../cache/digest.js';
import type { Vertex } from '../../solver/graph.js';
import type { SolvedVertex } from '../../solver/worker.js';
import type { CacheMode } from './spec.js';

/** The config blob of a cache export: it names what a registry would otherwise only see as layers. */
export const MEDIA_TYPE_CACHE_CONFIG = 'application/vnd.kiln.cache.config.v1+json';
/** The manifest's artifact type, so registries and tools can tell a cache from a runnable image. */
export const ARTIFACT_TYPE_CACHE = 'application/vnd.kiln.cache.v1';
/** Annotation on a layer that holds a RUN cache mount rather than a step's result. */
export const ANNOTATION_CACHE_MOUNT = 'dev.kiln.cache.mount.id';
/** Image config field that carries inline cache records (as BuildKit's `moby.buildkit.cache.v0`). */
export const INLINE_CACHE_FIELD = 'dev.kiln.cache.v1';

/** One solved step: its cache key and result; `layer` indexes the manifest's layers. */
export interface CacheRecord {
  key: string;
  diffId: Digest | null;
  created: string;
  layer: number | null;
}

export interface CacheConfig {
  records: CacheRecord[];
  /** Cache mounts exported with `cache-mounts=true`: their id and layer. */
  cacheMounts?: { id: string; layer: number }[];
}

/** A step result worth exporting, before layers are numbered. */
export interface SolvedRecord {
  key: string;
  layer: LayerRow | null;
  created: string;
}

/** Whether a vertex's result is recorded under its key (sources are resolved, not cached). */
function cacheable(v: Vertex): boolean {
  return v.op.kind !== 'image' && v.op.kind !== 'context';
}

/** The vertex whose filesystem a vertex builds on, if any. */
function parentOf(v: Vertex): Vertex | undefined {
  const op = v.op;
  if (op.kind === 'exec') return op.root >= 0 ? v.inputs[op.root] : undefined;
  if (op.kind === 'file') return v.inputs[op.base];
  return undefined;
}

/**
 * The records to export. `max` takes every solved step; `min` the final image's chain only: the
 * steps whose layers it has, which is what a build of the same target needs to skip its last stage.
 */
export function collectRecords(results: ReadonlyMap<Digest, SolvedVertex>, root: Vertex | undefined, mode: CacheMode): SolvedRecord[] {
  let chosen: SolvedVertex[];
  if (mode === 'max') {
    chosen = [...results.values()];
  } else {
    chosen = [];
    for (let v = root; v; v = parentOf(v)) {
      const r = results.get(v.digest);
      if (r) chosen.push(r);
    }
    chosen.reverse();
  }
  const seen = new Set<string>();
  const out: SolvedRecord[] = [];
  for (const r of chosen) {
    if (!cacheable(r.vertex) || seen.has(r.key)) continue;
    seen.add(r.key);
    out.push({ key: r.key, layer: r.layer, created: r.created });
  }
  return out;
}
