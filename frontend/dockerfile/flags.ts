import type { InstructionNode } from '../parser/index.js';
import { locatedError, suggest, type Where } from './errors.js';

export type FlagKind = 'string' | 'bool' | 'list';

export type ParsedFlags = Map<string, string | boolean | string[]>;

/** Parses an instruction's `--name=value` flags against the ones it accepts. */
export function parseFlags(node: InstructionNode, accepted: Readonly<Record<string, FlagKind>>, where: Where): ParsedFlags {
  const out: ParsedFlags = new Map();
  for (const raw of node.flags) {
    const body = raw.replace(/^--/, '');
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const kind = accepted[name];
    const instr = node.name.toUpperCase();
    if (kind === undefined) {
      const hint = suggest(name, Object.keys(accepted));
      throw locatedError('UNKNOWN_FLAG', `Unknown flag "--${name}" for ${instr}`, where, { hint: hint ? `Did you mean "--${hint}"?` : `${instr} accepts ${Object.keys(accepted).map((k) => `--${k}`).join(', ') || 'no flags'}` });
    }
    if (kind === 'bool') {
      const v = eq < 0 ? 'true' : body.slice(eq + 1);
      if (v !== 'true' && v !== 'false') throw locatedError('INVALID_FLAG', `Flag "--${name}" of ${instr} takes true or false, not "${v}"`, where);
      out.set(name, v === 'true');
      continue;
    }
    if (eq < 0) throw locatedError('INVALID_FLAG', `Flag "--${name}" of ${instr} needs a value`, where);
    const value = body.slice(eq + 1);
    if (kind === 'list') {
      out.set(name, [...((out.get(name) as string[] | undefined) ?? []), value]);
    } else {
      if (out.has(name)) throw locatedError('INVALID_FLAG', `Flag "--${name}" of ${instr} is given twice`, where);
      out.set(name, value);
    }
  }
  return out;
}
