import type { Digest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import type { BuildDefinition, HistoryEntry, ImageConfig } from '../../solver/graph.js';
import type { SolvedVertex } from '../../solver/worker.js';

/**
 * The final image config: the base's history plus one entry per instruction, creation times
 * taken from the results (a cached step keeps its time, so a no-op rebuild gives the same ID).
 */
export function assembleConfig(def: BuildDefinition, results: ReadonlyMap<Digest, SolvedVertex>): ImageConfig {
  const final = def.root ? results.get(def.root.digest) : undefined;
  const layers = final?.snapshot.layers ?? [];
  const history: HistoryEntry[] = [...(def.image.history ?? [])];
  let created = def.image.created;
  for (const h of def.history) {
    const r = h.vertex ? results.get(h.vertex) : undefined;
    if (r && (created === undefined || r.created > created)) created = r.created;
    history.push({
      created: r?.created ?? created,
      created_by: h.created_by,
      comment: h.comment ?? 'buildkit.dockerfile.v0',
      ...(r?.layer ? {} : { empty_layer: true }),
    });
  }
  created ??= new Date().toISOString();
  for (const h of history) h.created ??= created;
  const nonEmpty = history.filter((h) => !h.empty_layer).length;
  if (nonEmpty !== layers.length) {
    throw new KilnError('INTERNAL', `The image has ${layers.length} layers but ${nonEmpty} history entries with a layer`);
  }
  return {
    ...def.image,
    created,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history,
  };
}
