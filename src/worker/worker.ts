import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import type { ImageOp, Vertex } from '../../solver/graph.js';
import type { ContentKey, SolvedVertex, StepContext, Worker } from '../../solver/worker.js';
import type { Executor } from '../executor/executor.js';
import { loadImage } from '../image/local.js';
import { checksumSelections } from '../sources/checksum.js';
import { exclusionFor } from '../sources/exclusion.js';
import { selectSources } from '../sources/select.js';
import { execContentKey, runExec } from './exec.js';
import { runFile, writeLayer } from './file.js';
import { checkoutInto, gitContentKey } from '../sources/git.js';
import { downloadInto, httpContentKey } from '../sources/http.js';

/** The worker on this machine: images from the local store, RUN through the executor. */
export class LocalWorker implements Worker {
  constructor(
    private readonly store: Store,
    private readonly executor: Executor,
  ) {}

  async resolveImage(op: ImageOp): Promise<{ snapshot: { layers: import('../../cache/db.js').LayerRow[] }; created: string }> {
    const img = await loadImage(this.store, op.manifest);
    return { snapshot: { layers: img.layers }, created: img.config.created ?? new Date(0).toISOString() };
  }

  async contentKey(v: Vertex, signal: AbortSignal): Promise<ContentKey | undefined> {
    if (v.op.kind === 'exec') return execContentKey(this.store, v);
    if (v.op.kind === 'http') return httpContentKey(v.op, signal);
    if (v.op.kind === 'git') return gitContentKey(v.op, signal);
    if (v.op.kind !== 'file') return undefined;
    const sums: (string | null)[] = [];
    const files: Record<string, string> = {};
    for (const action of v.op.actions) {
      if (action.action !== 'copy') continue;
      const src = v.inputs[action.from]?.op;
      if (src?.kind !== 'context') {
        sums.push(null);
        continue;
      }
      const exclusion = exclusionFor(src.exclude);
      const selections = await selectSources(src.source, action.src, exclusion, 'the build context');
      sums.push(await checksumSelections(this.store.db, selections, exclusion, src.source, files));
    }
    return { key: sums, files };
  }

  async run(v: Vertex, inputs: readonly SolvedVertex[], ctx: StepContext) {
    const op = v.op;
    if (op.kind === 'exec') return runExec(this.store, this.executor, op, inputs, ctx);
    if (op.kind === 'file') return runFile(this.store, op, inputs, ctx);
    if (op.kind === 'http') return writeLayer(this.store, ctx, (root) => downloadInto(root, op, ctx.signal));
    if (op.kind === 'git') return writeLayer(this.store, ctx, (root) => checkoutInto(root, op, ctx.signal));
    throw new KilnError('INTERNAL', `A "${op.kind}" vertex has nothing to run`);
  }
}
