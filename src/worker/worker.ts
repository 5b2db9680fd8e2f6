import { KilnError } from '../../cache/errors.js';
import type { LayerRow } from '../../cache/db.js';
import type { Store } from '../../cache/store.js';
import type { ImageOp, Vertex } from '../../solver/graph.js';
import type { ContentKey, SolvedVertex, StepContext, Worker } from '../../solver/worker.js';
import type { Executor } from '../executor/executor.js';
import { loadImage } from '../image/local.js';
import { checkoutInto, gitContentKey } from '../sources/git.js';
import { downloadInto, httpContentKey } from '../sources/http.js';
import { execContentKey, fileContentKey } from './keys.js';

/**
 * The worker on this machine: images from the local store, RUN through the executor. The code
 * that runs steps (mounts, copies, containers, layer tars) loads when the first step runs: a
 * build whose steps are all cached never needs it.
 */
export class LocalWorker implements Worker {
  constructor(
    private readonly store: Store,
    private readonly executor: Executor,
    private readonly options: { service?: boolean } = {},
  ) {}

  async resolveImage(op: ImageOp): Promise<{ snapshot: { layers: LayerRow[] }; created: string }> {
    const img = await loadImage(this.store, op.manifest);
    return { snapshot: { layers: img.layers }, created: img.config.created ?? new Date(0).toISOString() };
  }

  async contentKey(v: Vertex, signal: AbortSignal): Promise<ContentKey | undefined> {
    if (v.op.kind === 'exec') return execContentKey(this.store, v);
    if (v.op.kind === 'http') return httpContentKey(v.op, { signal, service: this.options.service });
    if (v.op.kind === 'git') return gitContentKey(v.op, { signal, service: this.options.service });
    return fileContentKey(this.store, v);
  }

  async run(v: Vertex, inputs: readonly SolvedVertex[], ctx: StepContext) {
    const op = v.op;
    if (op.kind === 'exec') return (await import('./exec.js')).runExec(this.store, this.executor, op, inputs, ctx);
    const { runFile, writeLayer } = await import('./file.js');
    if (op.kind === 'file') return runFile(this.store, op, inputs, ctx);
    if (op.kind === 'http') return writeLayer(this.store, ctx, (root) => downloadInto(root, op, { signal: ctx.signal, service: this.options.service }));
    if (op.kind === 'git') return writeLayer(this.store, ctx, (root) => checkoutInto(root, op, { signal: ctx.signal, service: this.options.service }));
    throw new KilnError('INTERNAL', `A "${op.kind}" vertex has nothing to run`);
  }
}
