import type { LayerRow } from '../cache/db.js';
import type { ImageOp, Vertex } from './graph.js';

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

export interface StepContext {
  id: number;
  signal: AbortSignal;
  log(stream: 1 | 2, data: string): void;
}

/**
 * What the solver needs from the machine: sources, a way to run exec and file ops, and the
 * content part of cache keys. The solver itself knows nothing of containers or Dockerfiles.
 */
export interface Worker {
  /** A base image's layers and creation time. */
  resolveImage(op: ImageOp, signal: AbortSignal): Promise<{ snapshot: Snapshot; created: string }>;
  /** The content checksums a vertex's key depends on (context selections), or undefined. */
  contentKey(vertex: Vertex, signal: AbortSignal): Promise<unknown>;
  /** Runs an exec or file vertex over its solved inputs; returns the new layer, if any. */
  run(vertex: Vertex, inputs: readonly SolvedVertex[], ctx: StepContext): Promise<LayerRow | null>;
}
