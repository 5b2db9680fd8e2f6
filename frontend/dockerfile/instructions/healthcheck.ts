import type { HealthConfig } from '../../../solver/graph.js';
import { locatedError } from '../errors.js';
import { parseFlags } from '../flags.js';
import { addHistory, type InstructionContext, type StageState } from '../state.js';

const UNITS: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** A Go duration (`30s`, `1m30s`, `1.5h`, `250ms`) in nanoseconds; undefined when invalid. */
export function parseGoDuration(text: string): number | undefined {
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  return pos === text.length && pos > 0 ? Math.round(total) : undefined;
}

/** Nanoseconds as Go prints a time.Duration (`1m30s`, `500ms`, `0s`). */
export function formatGoDuration(ns: number): string {
  if (ns === 0) return '0s';
  if (ns < 1e3) return `${ns}ns`;
  if (ns < 1e6) return `${trim(ns / 1e3)}µs`;
  if (ns < 1e9) return `${trim(ns / 1e6)}ms`;
  const h = Math.floor(ns / 3600e9);
  const m = Math.floor((ns % 3600e9) / 60e9);
  const s = (ns % 60e9) / 1e9;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${trim(s)}s`;
}

function trim(n: number): string {
  return String(Number(n.toFixed(9)));
}

const DURATIONS = [
  ['interval', 'Interval'],
  ['timeout', 'Timeout'],
  ['start-period', 'StartPeriod'],
  ['start-interval', 'StartInterval'],
] as const;

/** HEALTHCHECK NONE | HEALTHCHECK [--interval … --retries N] CMD command. */
export function compileHealthcheck(state: StageState, ictx: InstructionContext): StageState {
  const { node, where } = ictx;
  const flags = parseFlags(node, { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' }, where);
  const type = (node.args[0] ?? '').toUpperCase();
  const rest = node.args.slice(1);
  let health: HealthConfig;
  if (type === 'NONE') {
    if (rest.length > 0 || flags.size > 0) throw locatedError('HEALTHCHECK_ARGS', 'HEALTHCHECK NONE takes no flags or arguments', where);
    health = { Test: ['NONE'] };
  } else if (type === 'CMD') {
    if (rest.length === 0 || (!node.json && rest.join(' ').trim() === '')) throw locatedError('HEALTHCHECK_ARGS', 'HEALTHCHECK CMD needs a command', where);
    health = { Test: node.json ? ['CMD', ...rest] : ['CMD-SHELL', rest.join(' ')] };
    for (const [flag, field] of DURATIONS) {
      const raw = flags.get(flag) as string | undefined;
      if (raw === undefined) continue;
      const ns = parseGoDuration(raw);
      if (ns === undefined) throw locatedError('INVALID_FLAG', `Invalid --${flag} "${raw}": expected a duration such as 30s or 1m30s`, where);
      if (ns !== 0 && ns < 1e6) throw locatedError('INVALID_FLAG', `HEALTHCHECK --${flag} "${raw}" cannot be less than 1ms`, where);
      if (ns !== 0) health[field] = ns;
    }
    const retries = flags.get('retries') as string | undefined;
    if (retries !== undefined) {
      if (!/^\d+$/.test(retries)) throw locatedError('INVALID_FLAG', `Invalid --retries "${retries}": expected a whole number`, where);
      if (Number(retries) > 0) health.Retries = Number(retries);
    }
  } else {
    throw locatedError('HEALTHCHECK_ARGS', `HEALTHCHECK needs CMD or NONE${type ? `, not "${node.args[0]}"` : ''}`, where, { hint: 'Write HEALTHCHECK CMD command, or HEALTHCHECK NONE' });
  }
  const shown = `&{[${health.Test!.join(' ')}] ${formatGoDuration(health.Interval ?? 0)} ${formatGoDuration(health.Timeout ?? 0)} ${formatGoDuration(health.StartPeriod ?? 0)} ${formatGoDuration(health.StartInterval ?? 0)} ${health.Retries ?? 0}}`;
  const next = { ...state, image: { ...state.image, config: { ...state.image.config, Healthcheck: health } } };
  return addHistory(next, { created_by: `HEALTHCHECK ${shown}` });
}
