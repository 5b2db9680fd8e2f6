import { canonicalJson, digestOf } from '../cache/digest.js';
import type { ContextOp, Op } from './graph.js';

/**
 * The cache-key rule (DESIGN.md), in one place: the solver keys steps with it, and whatever
 * predicts the solver's hits (`kiln debug graph --format dot`) asks it too.
 */

/** A context's key: what it excludes; its files count in the keys of the steps that read them. */
export function contextKey(op: Pick<ContextOp, 'exclude'>): string {
  return digestOf(canonicalJson({ op: { kind: 'context', exclude: op.exclude } }));
}

/** A step's key: its op, its inputs' keys, its content checksums (null for none) and the build's SOURCE_DATE_EPOCH. */
export function stepKey(parts: { op: Op; inputs: readonly string[]; content: unknown; sourceDateEpoch?: number }): string {
  return digestOf(canonicalJson({ op: parts.op, inputs: parts.inputs, content: parts.content, sourceDateEpoch: parts.sourceDateEpoch }));
}
