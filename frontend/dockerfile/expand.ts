import { KilnError } from '../../solver/graph.js';
import { expandWord } from '../shell/index.js';
import { locatedError } from './errors.js';
import { lookupVar, type InstructionContext, type StageState } from './state.js';

/** Expands one word of an instruction with the stage's ENV and ARGs; errors get the location. */
export function expand(word: string, state: StageState, ictx: Pick<InstructionContext, 'where' | 'escape'>): string {
  return expandWith(word, (name) => lookupVar(state, name), ictx);
}

export function expandWith(word: string, lookup: (name: string) => string | undefined, ictx: Pick<InstructionContext, 'where' | 'escape'>): string {
  try {
    return expandWord(word, lookup, { escape: ictx.escape });
  } catch (err) {
    if (err instanceof KilnError) throw locatedError(err.code, err.message, ictx.where, { cause: err });
    throw err;
  }
}
