import type { LayerRow } from '../cache/db.js';
import type { Digest } from '../cache/digest.js';
import type { ContentKey } from './explain.js';
import type { ImageOp, Vertex } from './graph.js';

export type { ContentKey } from './explain.js';

/** A filesystem state: a chain of layers, bottom first. */
export interface Snapshot {
  layers: LayerRow[];
}

export interface SolvedVertex {
  vertex: Vertex;
  key: string;
  /** The filesystem this vertex produced (absent for a context, which is read in place). */
  snapshot: Snapshot;
  /** The layer this vertex added, or null when it changed nothing (or is a source). */
  layer: LayerRow | null;
  /** When the result was first made: a cached result keeps its original time. */
  created: string;
  cached: boolean;
}

/**
 * What one build brings besides its graph: secrets, agent sockets and entitlements. Never part
 * of a key; secret values are read only when a step mounts them.
 */
export interface Session {
  /** A secret's value, or undefined when the build was given no secret of that id. */
  secret(id: string): Promise<Buffer | undefined>;
  /** The agent socket forwarded for an ssh id, if any. */
  ssh(id: string): string | undefined;
  /** Entitlements granted with `--allow` (e.g. `security.insecure`). */
  allow: ReadonlySet<string>;
}

export const EMPTY_SESSION: Session = {
  secret: async () => undefined,
  ssh: () => undefined,
  allow: new Set(),
};

export interface StepContext {
  id: number;
  signal: AbortSignal;
  log(stream: 1 | 2, data: string): void;
  session?: Session;
  /** `SOURCE_DATE_EPOCH`: the layer the step makes has no modification time later than it. */
  sourceDateEpoch?: number;
  /**
   * False when no image of the build holds the layer the step makes (a stage other stages only
   * copy from): the layer is then kept without its compressed blob until something needs one.
   */
  layerBlob?: boolean;
}

/**
 * What the solver needs from the machine: sources, a way to run exec and file ops, and the
 * content part of cache keys. The solver itself knows nothing of containers or Dockerfiles.
 */
export interface Worker {
  /** A base image's layers and creation time. */
  resolveImage(op: ImageOp, signal: AbortSignal): Promise<{ snapshot: Snapshot; created: string }>;
  /** The content checksums a vertex's key depends on (context selections), or undefined. */
  contentKey(vertex: Vertex, signal: AbortSignal): Promise<ContentKey | undefined>;
  /** Runs an exec or file vertex over its solved inputs; returns the new layer, if any. */
  run(vertex: Vertex, inputs: readonly SolvedVertex[], ctx: StepContext): Promise<LayerRow | null>;
}

/**
 * Results another store exported (`--cache-from`), consulted when the local cache has no record
 * for a key. A hit costs a download instead of a run, so the solver asks only after a local miss.
 */
export interface CacheImport {
  lookup(key: string): { diffId: Digest | null; created: string } | undefined;
  /**
   * An imported layer's record. Its blob is downloaded only when a step needs its files or an
   * image its blob (through `ensureLayerBlob` in cache/layers.ts); `stored` runs once the layer
   * is in the store, so that no local record ever points at a layer the store lacks.
   */
  fetchLayer(diffId: Digest, signal: AbortSignal, stored: () => void): Promise<LayerRow>;
}
