import type { Store } from '../../cache/store.js';
import type { Vertex } from '../../solver/graph.js';
import type { ContentKey } from '../../solver/worker.js';
import { checksumSelections, type SelectionChecksum } from '../sources/checksum.js';
import { exclusionFor } from '../sources/exclusion.js';
import { selectSources } from '../sources/select.js';

/*
 * The content parts of step keys: what a step reads from the build context. Every build works
 * them out, cached steps included, so this module stays apart from the code that runs steps
 * (loaded only when one runs).
 */

/** A file op's: the context files each COPY/ADD action selects (null for other sources). */
export async function fileContentKey(store: Store, v: Vertex): Promise<ContentKey | undefined> {
  if (v.op.kind !== 'file') return undefined;
  const sums: (string | null)[] = [];
  const parts: SelectionChecksum[] = [];
  for (const action of v.op.actions) {
    if (action.action !== 'copy') continue;
    const src = v.inputs[action.from]?.op;
    if (src?.kind !== 'context') {
      sums.push(null);
      continue;
    }
    const exclusion = exclusionFor(src.exclude);
    const selections = await selectSources(src.source, action.src, exclusion, 'the build context');
    const part = await checksumSelections(store.db, selections, exclusion, src.source);
    parts.push(part);
    sums.push(part.sum);
  }
  return { key: sums, files: () => filesOf(parts) };
}

/**
 * A RUN step's: files it reads from the build context through bind or cache-seed mounts. Inputs
 * from stages and images are covered by their keys already.
 */
export async function execContentKey(store: Store, v: Vertex): Promise<ContentKey | undefined> {
  if (v.op.kind !== 'exec' || !v.op.mounts) return undefined;
  const sums: (string | null)[] = [];
  const parts: SelectionChecksum[] = [];
  let any = false;
  for (const m of v.op.mounts) {
    const index = m.type === 'bind' ? m.input : m.type === 'cache' ? m.input : undefined;
    const src = index === undefined ? undefined : v.inputs[index]?.op;
    if (src?.kind !== 'context') {
      sums.push(null);
      continue;
    }
    any = true;
    const source = m.type === 'bind' ? m.source : m.type === 'cache' ? (m.source ?? '/') : '/';
    const exclusion = exclusionFor(src.exclude);
    const selections = await selectSources(src.source, [source], exclusion, 'the build context');
    const part = await checksumSelections(store.db, selections, exclusion, src.source);
    parts.push(part);
    sums.push(part.sum);
  }
  return any ? { key: sums, files: () => filesOf(parts) } : undefined;
}

/** Every selection's files in one record, for explaining misses (worked out only then). */
function filesOf(parts: readonly SelectionChecksum[]): Record<string, string> {
  return Object.assign({}, ...parts.map((p) => p.files())) as Record<string, string>;
}
