import pLimit, { type LimitFunction } from 'p-limit';
import { availableParallelism } from 'node:os';
import type { LayerRow, StoreDb } from '../cache/db.js';
import { canonicalJson, type Digest } from '../cache/digest.js';
import { contextKey, stepKey } from './keys.js';
import { KilnError, VertexError } from '../cache/errors.js';
import { isAlive, selfIdentity } from '../cache/lease.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { explainMiss, type Ingredients, stepIdentities, summarizeReasons } from './explain.js';
import { imageChain, topoSort, type Vertex } from './graph.js';
import { ProgressNumbers, type ProgressEvent, type ProgressSink } from './progress.js';
import { type CacheImport, EMPTY_SESSION, type Session, type SolvedVertex, type Worker } from './worker.js';

export interface SolveOptions {
  noCache?: boolean;
  /** Stages whose steps run again whatever the cache holds (`--no-cache-filter`). */
  noCacheFilter?: readonly string[];
  signal?: AbortSignal;
  progress?: ProgressSink;
  numbers?: ProgressNumbers;
  /**
   * Names this build's steps apart from other builds' for cache-miss explanations: the
   * Dockerfile and context, say. Steps are compared with the last build of the same scope.
   */
  scope?: string;
  /** Names given as build args, so that explanations call them that. */
  buildArgs?: readonly string[];
  session?: Session;
  /** Exported caches to reuse results from (`--cache-from`), asked in order after the local cache. */
  cacheImports?: readonly CacheImport[];
  /**
   * Whether a hit from an imported cache becomes a local record that later builds hit without
   * the import (default true). A build service's clients get false: what one client's import
   * claims a step gives must not become another client's result.
   */
  keepImported?: boolean;
  /**
   * `SOURCE_DATE_EPOCH` (seconds): every layer a step makes is written with its file times clamped
   * to it, so it is part of those steps' keys (absent, keys are what they were without it).
   */
  sourceDateEpoch?: number;
}

type SolveState = Required<Pick<SolveOptions, 'progress' | 'numbers' | 'session'>> &
  SolveOptions & {
    signal: AbortSignal;
    identities: Map<Digest, string>;
    /** imageChain of the roots: the steps whose layers need their compressed blob. */
    imageLayers: ReadonlySet<Digest>;
    buildArgSet: ReadonlySet<string>;
    /** Cache records this solve hit whose last use is older than TOUCH_AFTER_MS, marked used at its end. */
    used: string[];
  };

/**
 * A cache hit marks its record used only when its last use is older than this: least recently
 * used is kept to the minute, and a rebuild within a minute of the last one writes nothing to the
 * index (every write costs a WAL commit and a checkpoint with three fsyncs when the process ends).
 */
const TOUCH_AFTER_MS = 60_000;

/** How often a process waiting for another process's run of the same step looks again. */
const SHARED_POLL_MS = 200;
/** How long it waits at most before running the step itself (the owner may be stuck, not dead). */
const SHARED_WAIT_MS = 30 * 60_000;

/**
 * Solves graphs: computes each vertex's cache key, reuses a recorded result when there is one,
 * runs the rest through the worker with bounded concurrency. Within one solve every vertex runs
 * at most once; across concurrent solves on one Solver, equal cache keys share one execution.
 */
export class Solver {
  private readonly limit: LimitFunction;
  private readonly inflight = new Map<string, SharedRun>();

  constructor(
    private readonly db: StoreDb,
    private readonly worker: Worker,
    options: { maxParallelism?: number } = {},
  ) {
    this.limit = pLimit(options.maxParallelism ?? availableParallelism());
  }

  async solve(roots: readonly Vertex[], options: SolveOptions = {}): Promise<Map<Digest, SolvedVertex>> {
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) onAbort();
    const numbers = options.numbers ?? new ProgressNumbers();
    const progress = options.progress ?? (() => {});
    const session = options.session ?? EMPTY_SESSION;
    checkEntitlements(roots, session);
    const identities = stepIdentities(roots, options.scope ?? '');
    const imageLayers = imageChain(roots);
    const buildArgSet = new Set(options.buildArgs ?? []);
    const memo = new Map<Digest, Promise<SolvedVertex>>();
    const results = new Map<Digest, SolvedVertex>();
    const used: string[] = [];

    const solveVertex = (v: Vertex): Promise<SolvedVertex> => {
      let p = memo.get(v.digest);
      if (!p) {
        const state: SolveState = { ...options, signal: controller.signal, numbers, progress, session, identities, imageLayers, buildArgSet, used };
        p = this.solveOne(v, solveVertex, state).then((r) => {
          results.set(v.digest, r);
          return r;
        });
        // A failure cancels every sibling still running.
        p.catch((err: unknown) => controller.abort(err));
        memo.set(v.digest, p);
      }
      return p;
    };
    try {
      await Promise.all(roots.map(solveVertex));
      // One write for every hit (a failed solve leaves its hits' last use as it was).
      this.db.touchCache(used);
      return results;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  private async solveOne(
    v: Vertex,
    solveInput: (v: Vertex) => Promise<SolvedVertex>,
    o: SolveState,
  ): Promise<SolvedVertex> {
    const inputs = await Promise.all(v.inputs.map(solveInput));
    o.signal.throwIfAborted();
    const op = v.op;
    if (op.kind === 'context') {
      const key = contextKey(op);
      return { vertex: v, key, snapshot: { layers: [] }, layer: null, created: new Date(0).toISOString(), cached: true };
    }
    const id = v.meta.hidden ? 0 : o.numbers.id(v.digest);
    if (op.kind === 'image') {
      const start = Date.now();
      if (!v.meta.hidden) o.progress({ type: 'vertex.start', id, name: v.meta.name, kind: v.op.kind, time: start });
      const base = await this.worker.resolveImage(op, o.signal);
      if (!v.meta.hidden) o.progress({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - start });
      return { vertex: v, key: op.manifest, snapshot: base.snapshot, layer: null, created: base.created, cached: true };
    }
    let content: Awaited<ReturnType<Worker['contentKey']>>;
    try {
      content = await this.worker.contentKey(v, o.signal);
    } catch (err) {
      // A source that cannot be checksummed (missing, outside the context) fails this step.
      if (!(err instanceof KilnError) || err.code === 'CANCELLED') throw err;
      const now = Date.now();
      o.progress({ type: 'vertex.start', id, name: v.meta.name, kind: v.op.kind, time: now });
      o.progress({ type: 'vertex.error', id, time: now, duration: 0, message: err.message });
      throw new VertexError(v.meta.name, err, { location: v.meta.location });
    }
    const key = stepKey({ op, inputs: inputs.map((i) => i.key), content: content?.key ?? null, sourceDateEpoch: o.sourceDateEpoch });
    // What the key was made of, kept to explain a later miss: needed only when the key is new.
    let made: Ingredients | undefined;
    const ingredients = (): Ingredients => (made ??= {
      op,
      inputs: inputs.map((i) => ({ key: i.key, kind: i.vertex.op.kind, manifest: i.vertex.op.kind === 'image' ? i.vertex.op.manifest : undefined })),
      content: content?.key ?? null,
      files: content?.files?.(),
      sourceDateEpoch: o.sourceDateEpoch,
    });
    const identity = o.identities.get(v.digest);
    const previous = identity === undefined ? undefined : this.db.getStep(identity);
    const remember = () => {
      if (identity !== undefined && previous?.key !== key) {
        this.db.putStep({ identity, key, ingredients: canonicalJson(ingredients()) });
      }
    };
    const noCache = o.noCache === true || (v.meta.stage !== undefined && (o.noCacheFilter ?? []).includes(v.meta.stage));
    const parent = op.kind === 'exec' ? inputs[op.root] : op.kind === 'file' ? inputs[op.base] : undefined;
    const parentLayers = parent?.snapshot.layers ?? [];
    const finish = (layer: LayerRow | null, created: string, cached: boolean): SolvedVertex => ({
      vertex: v,
      key,
      snapshot: { layers: layer ? [...parentLayers, layer] : parentLayers },
      layer,
      created,
      cached,
    });

    if (!noCache) {
      const hit = this.lookup(key, o.used) ?? (await this.lookupImported(key, v.meta.name, o));
      if (hit) {
        o.progress({ type: 'vertex.start', id, name: v.meta.name, kind: v.op.kind, time: Date.now() });
        o.progress({ type: 'vertex.cached', id, name: v.meta.name, time: Date.now() });
        remember();
        return finish(hit.layer, hit.created, true);
      }
    }

    let reasons: string[] | undefined;
    if (!noCache && previous) {
      reasons =
        previous.key === key
          ? ['the cached result was pruned']
          : explainMiss(JSON.parse(previous.ingredients) as Ingredients, ingredients(), v, {
              stepNumber: (input) => o.numbers.id(input.digest),
              buildArgs: o.buildArgSet,
            });
    }
    const explain = () => {
      if (reasons) o.progress({ type: 'vertex.miss', id, reason: summarizeReasons(reasons), reasons, time: Date.now() });
    };

    let shared = this.inflight.get(key);
    const listener = { id, progress: o.progress };
    if (!shared) {
      const run: SharedRun = { controller: new AbortController(), waiters: 0, listeners: new Set(), promise: undefined! };
      run.listeners.add(listener);
      run.promise = this.execute(v, inputs, key, run, { ...o, explain, fresh: noCache });
      this.inflight.set(key, run);
      run.promise.finally(() => this.inflight.delete(key)).catch(() => {
        // The failure is reported to every waiter through its own await below.
      });
      shared = run;
    } else {
      o.progress({ type: 'vertex.start', id, name: v.meta.name, kind: v.op.kind, time: Date.now() });
      explain();
      shared.listeners.add(listener);
    }
    const r = await this.join(shared, listener, o.signal);
    remember();
    return finish(r.layer, r.created, false);
  }

  /**
   * Waits for a shared run on behalf of one solve. A solve that is cancelled stops waiting at
   * once; the run itself is cancelled only when no solve waits for it any more, so one client
   * going away never fails another client's build.
   */
  private async join(run: SharedRun, listener: Listener, signal: AbortSignal): Promise<RunResult> {
    run.waiters++;
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        run.listeners.delete(listener);
        listener.progress({ type: 'vertex.error', id: listener.id, time: Date.now(), duration: 0, message: 'cancelled' });
        if (--run.waiters === 0) run.controller.abort(signal.reason);
        reject(cancelled(signal));
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([run.promise, aborted]);
    } finally {
      if (!signal.aborted) {
        signal.removeEventListener('abort', onAbort!);
        run.waiters--;
      }
      aborted.catch(() => {
        // Only raced above; a cancellation after the run settled has nobody to tell.
      });
    }
  }

  private lookup(key: string, used: string[]): { layer: LayerRow | null; created: string } | undefined {
    const found = this.db.lookupCache(key);
    // A record whose layer was collected is no hit.
    if (!found || found.layer === undefined) return undefined;
    if (Date.now() - found.row.lastUsed >= TOUCH_AFTER_MS) used.push(key);
    return { layer: found.layer, created: found.row.created };
  }

  /**
   * A result from an imported cache. Its layer is downloaded only when something needs it; the
   * record is kept locally once the layer is in the store, so the next build hits without the import.
   */
  private async lookupImported(key: string, description: string, o: SolveState): Promise<{ layer: LayerRow | null; created: string } | undefined> {
    for (const source of o.cacheImports ?? []) {
      const found = source.lookup(key);
      if (!found) continue;
      let layer: LayerRow | null;
      const record = () => {
        if (o.keepImported !== false) this.db.putCache({ key, diffId: found.diffId, created: found.created, description });
      };
      try {
        layer = found.diffId === null ? null : (this.db.getLayer(found.diffId) ?? (await source.fetchLayer(found.diffId, o.signal, record)));
      } catch (err) {
        // As a cache that cannot be read at all, a layer that cannot be fetched costs a run, not the build.
        if (!(err instanceof KilnError) || err.code === 'CANCELLED' || o.signal.aborted) throw err;
        o.progress({ type: 'warning', message: `Cannot fetch the cached layer of ${description}: ${err.message}` });
        continue;
      }
      // A layer not downloaded yet is recorded by `record` once it is.
      if (layer === null || this.db.getLayer(layer.diffId)) record();
      return { layer, created: found.created };
    }
    return undefined;
  }

  private execute(
    v: Vertex,
    inputs: readonly SolvedVertex[],
    key: string,
    run: SharedRun,
    o: SolveState & { explain: () => void; fresh: boolean },
  ): Promise<RunResult> {
    // Every solve waiting on this run sees its progress under its own vertex number.
    const emit = (make: (id: number) => ProgressEvent) => {
      for (const l of run.listeners) l.progress(make(l.id));
    };
    const signal = run.controller.signal;
    return this.limit(async () => {
      signal.throwIfAborted();
      const start = Date.now();
      const first = [...run.listeners][0];
      if (first) first.progress({ type: 'vertex.start', id: first.id, name: v.meta.name, kind: v.op.kind, time: start });
      o.explain();
      const tail: string[] = [];
      let partial = '';
      const log = (stream: 1 | 2, data: string) => {
        emit((id) => ({ type: 'vertex.log', id, stream, data, time: Date.now() }));
        const lines = (partial + data).split('\n');
        partial = lines.pop() ?? '';
        tail.push(...lines);
        if (tail.length > 20) tail.splice(0, tail.length - 20);
      };
      let claimed = false;
      try {
        // Another kiln process on the store may be running this very step: wait for its result
        // rather than run it twice (a step asked to run afresh runs regardless).
        if (!o.fresh) {
          const tell = (data: string) => emit((id) => ({ type: 'vertex.log', id, stream: 2, data, time: Date.now() }));
          const other = await this.claimOrWait(key, signal, tell);
          if (other.result) {
            emit((id) => ({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - start }));
            return other.result;
          }
          claimed = other.claimed;
        }
        const layer = await this.worker.run(v, inputs, {
          id: first?.id ?? 0,
          signal,
          log,
          session: o.session,
          sourceDateEpoch: o.sourceDateEpoch,
          layerBlob: o.imageLayers.has(v.digest),
        });
        const created = new Date().toISOString();
        this.db.putCache({ key, diffId: layer?.diffId ?? null, created, description: v.meta.name });
        emit((id) => ({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - start }));
        return { layer, created };
      } catch (err) {
        if (partial) tail.push(partial);
        if (signal.aborted) {
          // Every waiter has gone (each reported its own cancellation): the reason is theirs.
          throw cancelled(signal);
        }
        const cause = err instanceof KilnError ? err : internal(err);
        emit((id) => ({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - start, message: cause.message }));
        throw new VertexError(v.meta.name, cause, { location: v.meta.location, tail });
      } finally {
        // After the cache record: a waiting process that finds the key free finds the result too.
        if (claimed) this.db.releaseRun(key, selfIdentity());
      }
    });
  }

  /**
   * Claims the run of `key` for this process (a row naming it, as leases do), or, while another
   * live process holds it, polls until that process has committed the result and returns it. A
   * dead owner's claim is taken over. `claimed: false` without a result: the wait ran out, and this
   * process runs the step without a claim.
   */
  private async claimOrWait(key: string, signal: AbortSignal, tell: (data: string) => void): Promise<{ result?: RunResult; claimed: boolean }> {
    const me = selfIdentity();
    const deadline = Date.now() + SHARED_WAIT_MS;
    // A run that finished between this solve's cache miss and its claim is a result too.
    const claimedNow = (): { result?: RunResult; claimed: boolean } => {
      const hit = this.lookup(key, []);
      if (!hit) return { claimed: true };
      this.db.releaseRun(key, me);
      return { result: hit, claimed: false };
    };
    let told = false;
    for (;;) {
      signal.throwIfAborted();
      if (this.db.claimRun(key, me)) return claimedNow();
      const owner = this.db.getRunning(key);
      const hit = this.lookup(key, []);
      if (hit) return { result: hit, claimed: false };
      if (!owner) continue;
      if (!isAlive({ pid: owner.pid, start: owner.pidStart })) {
        if (this.db.claimRun(key, me, owner)) return claimedNow();
        continue;
      }
      if (Date.now() >= deadline) return { claimed: false };
      if (!told) {
        tell(`waiting for kiln process ${owner.pid}, which is running this step\n`);
        told = true;
      }
      await sleep(SHARED_POLL_MS, undefined, { signal });
    }
  }
}

interface RunResult {
  layer: LayerRow | null;
  created: string;
}

interface Listener {
  id: number;
  progress: ProgressSink;
}

/** One execution of a cache key, shared by every solve that needs it while it runs. */
interface SharedRun {
  promise: Promise<RunResult>;
  controller: AbortController;
  waiters: number;
  listeners: Set<Listener>;
}

/** Fails before any work when a step needs an entitlement the build was not granted. */
function checkEntitlements(roots: readonly Vertex[], session: Session): void {
  for (const v of topoSort(roots)) {
    if (v.op.kind === 'exec' && v.op.security === 'insecure' && !session.allow.has('security.insecure')) {
      throw new KilnError('ENTITLEMENT_MISSING', `Step ${v.meta.name} needs the "security.insecure" entitlement`, {
        location: v.meta.location,
        hint: 'Grant it with "kiln build --allow security.insecure"',
      });
    }
  }
}

function cancelled(signal: AbortSignal): KilnError {
  const reason: unknown = signal.reason;
  if (reason instanceof KilnError) return reason;
  return new KilnError('CANCELLED', 'The build was cancelled', { exitCode: 130 });
}

function internal(err: unknown): KilnError {
  const message = err instanceof Error ? err.message : String(err);
  return new KilnError('INTERNAL', message, { cause: err });
}
