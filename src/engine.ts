import { Store, defaultStoreRoot } from '../cache/store.js';
import { configuredRuntime } from './config.js';
import { Solver } from '../solver/solver.js';
import { BridgeNetwork, type BridgeOptions } from './executor/network.js';
import type { ResourceLimits } from './executor/executor.js';
import { RuncExecutor, CONTAINER_LEASE, deleteContainer } from './executor/runc.js';
import { LocalWorker } from './worker/worker.js';

export interface EngineOptions {
  root?: string;
  runtime?: string;
  maxParallelism?: number;
  /** Settings of RUN steps' default network (a server's open host ports, its pool). */
  network?: BridgeOptions;
  /** A build service's engine: ADD sources may not reach this host or its credentials (src/sources/egress.ts). */
  service?: boolean;
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
    const runtime = options.runtime ?? configuredRuntime();
    const store = await Store.open(options.root ?? defaultStoreRoot(), {
      cleaners: { [CONTAINER_LEASE]: (id) => deleteContainer(runtime, id) },
    });
    const executor = new RuncExecutor(store, runtime, { limits: options.stepLimits, network: new BridgeNetwork(options.network) });
    const solver = new Solver(store.db, new LocalWorker(store, executor, { service: options.service }), { maxParallelism: options.maxParallelism });
    return new Engine(store, executor, solver);
  }

  /**
   * Closes the store; when RUN steps had networks, once their namespaces are removed. A process
   * that ran none closes at once, so its exit needs no wait.
   */
  close(): Promise<void> {
    const network = this.executor.network;
    if (network.idle) {
      this.store.close();
      return Promise.resolve();
    }
    return network.close().finally(() => this.store.close());
  }
}
