/**
 * Cache-miss explanations. A step's key is a hash, and a hash cannot say what changed; so for
 * each step *identity* (where the step sits in a build, not what it computes) the solver keeps
 * the ingredients of the last key it saw, and on a miss compares them with the new ones.
 */
import { canonicalJson, type Digest, digestOf } from '../cache/digest.js';
import type { Op, Vertex } from './graph.js';
import { topoSort } from './graph.js';
import type { ProgressEvent } from './progress.js';

/** What went into one input's part of a key. */
export interface InputIngredient {
  key: string;
  kind: Op['kind'];
  /** For an image input: the manifest digest it resolved to. */
  manifest?: string;
}

/** Everything a cache key was computed from, in a form that can be compared field by field. */
export interface Ingredients {
  op: Op;
  inputs: InputIngredient[];
  /** The content part of the key (opaque), and per-file checksums behind it, when known. */
  content: unknown;
  files?: Record<string, string>;
  /** `SOURCE_DATE_EPOCH` when the build set it (it is in the keys of steps that make layers). */
  sourceDateEpoch?: number;
}

/** Content checksums a worker computed for a vertex: the key part and the files behind it. */
export interface ContentKey {
  key: unknown;
  /**
   * Relative path → checksum of each selected file, for explanations only (not in the key);
   * worked out when asked, which a cached step never does.
   */
  files?: () => Record<string, string>;
}

/**
 * Stable identities for the steps of one solve: build scope, stage, the instruction as written
 * (without its `[stage i/n]` counter, which shifts when steps are added), and an occurrence
 * number for the same instruction repeated in one stage.
 */
export function stepIdentities(roots: readonly Vertex[], scope: string): Map<Digest, string> {
  const out = new Map<Digest, string>();
  const seen = new Map<string, number>();
  for (const v of topoSort(roots)) {
    if (v.op.kind === 'image' || v.op.kind === 'context') continue;
    const text = v.meta.name.replace(/^\[[^\]]*\]\s*/, '');
    const base = canonicalJson([scope, v.meta.stage ?? '', text]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.set(v.digest, digestOf(`${base}#${n}`));
  }
  return out;
}

export interface ExplainContext {
  /** The progress number of an input vertex, for `input step #M changed`. */
  stepNumber(v: Vertex): number;
  /** Names passed as build args: their env entries are reported as build args. */
  buildArgs: ReadonlySet<string>;
}

/** Why `now` misses where `before` had a record: one short reason per difference, most telling first. */
export function explainMiss(before: Ingredients, now: Ingredients, v: Vertex, ctx: ExplainContext): string[] {
  const reasons: string[] = [];
  const inputs = v.inputs;
  for (let i = 0; i < Math.max(before.inputs.length, now.inputs.length); i++) {
    const a = before.inputs[i];
    const b = now.inputs[i];
    if (a?.key === b?.key) continue;
    if (b?.kind === 'image' || a?.kind === 'image') {
      reasons.push(`base image changed (${a?.manifest ?? a?.kind ?? 'none'} → ${b?.manifest ?? b?.kind ?? 'none'})`);
    } else if (b?.kind === 'context' || a?.kind === 'context') {
      continue;
    } else if (b && inputs[i]) {
      reasons.push(`input step #${ctx.stepNumber(inputs[i]!)} changed`);
    } else {
      reasons.push('inputs changed');
    }
  }
  reasons.push(...opReasons(before.op, now.op, ctx));
  if (canonicalJson(before.content ?? null) !== canonicalJson(now.content ?? null)) {
    const files = fileReasons(before.files, now.files);
    reasons.push(...(files.length > 0 ? files : ['copied content changed']));
  }
  if (before.sourceDateEpoch !== now.sourceDateEpoch) {
    const shown = (e: number | undefined) => (e === undefined ? 'unset' : String(e));
    reasons.push(`SOURCE_DATE_EPOCH changed (${shown(before.sourceDateEpoch)} → ${shown(now.sourceDateEpoch)})`);
  }
  if (reasons.length === 0) reasons.push('cache key changed');
  return reasons;
}

/** One line for plain progress: the first reasons and how many more there are. */
export function summarizeReasons(reasons: readonly string[]): string {
  const shown = reasons.slice(0, 3).join(', ');
  return reasons.length > 3 ? `${shown} and ${reasons.length - 3} more` : shown;
}

function opReasons(a: Op, b: Op, ctx: ExplainContext): string[] {
  if (a.kind !== b.kind) return [`instruction changed (${a.kind} → ${b.kind})`];
  if (a.kind === 'exec' && b.kind === 'exec') {
    const out: string[] = [];
    if (canonicalJson(a.args) !== canonicalJson(b.args)) out.push('command changed');
    out.push(...envReasons(a.env, b.env, ctx));
    if (a.cwd !== b.cwd) out.push(`working directory changed ("${a.cwd}" → "${b.cwd}")`);
    if (a.user !== b.user) out.push(`user changed ("${a.user}" → "${b.user}")`);
    if (a.network !== b.network) out.push(`network changed ("${a.network}" → "${b.network}")`);
    if ((a.security ?? 'sandbox') !== (b.security ?? 'sandbox')) out.push('security mode changed');
    if (canonicalJson(a.mounts ?? []) !== canonicalJson(b.mounts ?? [])) out.push('mounts changed');
    if ((a.hostname ?? '') !== (b.hostname ?? '')) out.push('hostname changed');
    return out;
  }
  return canonicalJson(a) === canonicalJson(b) ? [] : ['instruction changed'];
}

function envReasons(a: readonly string[], b: readonly string[], ctx: ExplainContext): string[] {
  const parse = (env: readonly string[]) => new Map(env.map((e) => [e.split('=', 1)[0]!, e.slice(e.indexOf('=') + 1)]));
  const ma = parse(a);
  const mb = parse(b);
  const out: string[] = [];
  for (const name of new Set([...ma.keys(), ...mb.keys()])) {
    if (ma.get(name) === mb.get(name)) continue;
    const what = ctx.buildArgs.has(name) ? 'build arg' : 'environment variable';
    const how = !ma.has(name) ? 'added' : !mb.has(name) ? 'removed' : 'changed';
    out.push(`${what} "${name}" ${how}`);
  }
  return out;
}

function fileReasons(a: Record<string, string> | undefined, b: Record<string, string> | undefined): string[] {
  if (!a || !b) return [];
  const out: string[] = [];
  for (const path of Object.keys(b).sort()) {
    if (!(path in a)) out.push(`file "${path}" added`);
    else if (a[path] !== b[path]) out.push(`file "${path}" changed`);
  }
  for (const path of Object.keys(a).sort()) if (!(path in b)) out.push(`file "${path}" removed`);
  // Changed files first: they are what a user most likely means to see.
  return out.sort((x, y) => rank(x) - rank(y));
}

function rank(reason: string): number {
  return reason.endsWith('changed') ? 0 : reason.endsWith('added') ? 1 : 2;
}

/** One entry of the `--explain` report. */
export interface ExplainEntry {
  id: number;
  name: string;
  outcome: 'cached' | 'ran' | 'failed';
  /** Why it ran: reasons against the last record, or none when the step is new or --no-cache. */
  reasons: string[];
  note?: string;
}

/** The whole `--explain` report as text lines. */
export function formatExplainReport(entries: readonly ExplainEntry[]): string {
  const lines = ['Cache report:'];
  for (const e of [...entries].sort((x, y) => x.id - y.id)) {
    if (e.outcome === 'cached') {
      lines.push(`#${e.id} ${e.name}: cached`);
      continue;
    }
    lines.push(`#${e.id} ${e.name}: ${e.outcome === 'failed' ? 'failed' : 'ran'}${e.note ? ` (${e.note})` : ''}`);
    for (const r of e.reasons) lines.push(`    - ${r}`);
  }
  const ran = entries.filter((e) => e.outcome !== 'cached').length;
  lines.push(`${entries.length - ran} cached, ${ran} ran`);
  return `${lines.join('\n')}\n`;
}

/** Builds the `--explain` report from the progress stream, as any consumer of events could. */
export class ExplainCollector {
  private readonly entries = new Map<number, ExplainEntry>();

  handle(e: ProgressEvent): void {
    switch (e.type) {
      case 'vertex.start':
        if (e.kind !== 'exec' && e.kind !== 'file') return;
        if (!this.entries.has(e.id)) this.entries.set(e.id, { id: e.id, name: e.name, outcome: 'ran', reasons: [], note: 'no earlier record' });
        return;
      case 'vertex.cached': {
        const entry = this.entries.get(e.id);
        if (entry) entry.outcome = 'cached';
        return;
      }
      case 'vertex.miss': {
        const entry = this.entries.get(e.id);
        if (entry) {
          entry.reasons = e.reasons ?? [e.reason];
          entry.note = undefined;
        }
        return;
      }
      case 'vertex.error': {
        const entry = this.entries.get(e.id);
        if (entry) entry.outcome = 'failed';
        return;
      }
      default:
        return;
    }
  }

  format(): string {
    return formatExplainReport([...this.entries.values()]);
  }
}
