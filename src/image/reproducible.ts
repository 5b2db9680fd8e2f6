import { KilnError } from '../../cache/errors.js';
import type { ImageConfig } from '../../solver/graph.js';

/** `SOURCE_DATE_EPOCH` from the build args, else the environment; seconds since the epoch. */
export function sourceDateEpoch(buildArgs: Readonly<Record<string, string>>, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const value = buildArgs.SOURCE_DATE_EPOCH ?? env.SOURCE_DATE_EPOCH;
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new KilnError('INVALID_SOURCE_DATE_EPOCH', `Invalid SOURCE_DATE_EPOCH "${value}": expected whole seconds since 1970`, { exitCode: 2 });
  return Number(value);
}

function clampTime(iso: string | undefined, epoch: number): string {
  const limit = new Date(epoch * 1000).toISOString();
  if (iso === undefined) return limit;
  const t = Date.parse(iso);
  return Number.isNaN(t) || t > epoch * 1000 ? limit : iso;
}

/**
 * Makes a build's image config reproducible as BuildKit does with SOURCE_DATE_EPOCH: times in
 * the config and history no later than the epoch. The layers need no rewriting: each step
 * wrote its own with file times clamped to the epoch (the solver passes it down, and keys the
 * steps by it), and base layers stay as pulled.
 */
export function clampConfig(config: ImageConfig, epoch: number): ImageConfig {
  return {
    ...config,
    created: clampTime(config.created, epoch),
    history: config.history?.map((h) => ({ ...h, created: clampTime(h.created, epoch) })),
  };
}
