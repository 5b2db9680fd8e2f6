import { Store, defaultStoreRoot } from '../cache/store.js';
import { Solver } from '../solver/solver.js';
import type { ResourceLimits } from './executor/executor.js';
import { RuncExecutor, CONTAINER_LEASE, deleteContainer } from './executor/runc.js';
import { LocalWorker } from './worker/worker.js';

export interface EngineOptions {
  root?: string;
  runtime?: string;
  maxParallelism?: number;
  /** cgroup limits of every RUN step and `kiln run` container. */
  stepLimits?: ResourceLimits;
}

/** One store, one executor, one solver: what a CLI process or a server holds. */
export class Engine {
  private constructor(
    readonly store: Store,
    readonly executor: RuncExecutor,
    readonly solver: Solver,
  ) {}

  static async open(options: EngineOptions = {}): Promise<Engine> {
    const runtime = options.runtime ?? process.env.KILN_RUNTIME ?? 'runc';
    const store = await Store.open(options.root ?? defaultStoreRoot(), {
      cleaners: { [CONTAINER_LEASE]: (id) => deleteContainer(runtime, id) },
    });
    const executor = new RuncExecutor(store, runtime, { limits: options.stepLimits });
    const solver = new Solver(store.db, new LocalWorker(store, executor), { maxParallelism: options.maxParallelism });
    return new Engine(store, executor, solver);
  }

  close(): void {
    this.store.close();
  }
}
