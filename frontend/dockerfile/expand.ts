import { KilnError } from '../../solver/graph.js';
import { expandWordWithInfo, type ExpandOptions } from '../shell/index.js';
import { locatedError, suggest } from './errors.js';
import { lookupVar, type InstructionContext, type StageState } from './state.js';

type ExpandContext = Pick<InstructionContext, 'where' | 'escape'> & Partial<Pick<InstructionContext, 'warn'>>;

/**
 * Expands one word of an instruction with the stage's ENV and ARGs; errors get the location.
 * A variable neither ENV nor ARG defines is reported (UndefinedVar) when the caller can warn.
 */
export function expand(word: string, state: StageState, ictx: ExpandContext, options: Omit<ExpandOptions, 'escape'> = {}): string {
  const result = expandInfo(word, (name) => lookupVar(state, name), ictx, options);
  if (ictx.warn) {
    for (const name of result.unset) {
      if (state.args.has(name)) continue;
      const known = [...(state.image.config.Env ?? []).map((e) => e.split('=', 1)[0]!), ...state.args.keys()];
      const near = suggest(name, known);
      ictx.warn(`Usage of undefined variable "$${name}"${near ? ` (did you mean "$${near}"?)` : ''}`, 'UndefinedVar');
    }
  }
  return result.value;
}

export function expandWith(word: string, lookup: (name: string) => string | undefined, ictx: Pick<InstructionContext, 'where' | 'escape'>): string {
  return expandInfo(word, lookup, ictx).value;
}

export function expandInfo(word: string, lookup: (name: string) => string | undefined, ictx: Pick<InstructionContext, 'where' | 'escape'>, options: Omit<ExpandOptions, 'escape'> = {}) {
  try {
    return expandWordWithInfo(word, lookup, { ...options, escape: ictx.escape });
  } catch (err) {
    if (err instanceof KilnError) throw locatedError(err.code, err.message, ictx.where, { cause: err });
    throw err;
  }
}
