import { locatedError, suggest } from '../errors.js';
import { addHistory, type InstructionContext, type StageState } from '../state.js';

/** Instructions an ONBUILD may not hold: they would make no sense in the image that uses it. */
const FORBIDDEN = new Set(['onbuild', 'from', 'maintainer']);

/** ONBUILD: records the instruction in the config; an image built FROM this one runs it first. */
export function compileOnbuild(state: StageState, ictx: InstructionContext, known: readonly string[]): StageState {
  const { node, where } = ictx;
  const inner = node.next;
  if (!inner) throw locatedError('ONBUILD_EMPTY', 'ONBUILD needs an instruction, as in ONBUILD RUN make', where);
  const word = inner.original.trim().split(/\s/, 1)[0] ?? '';
  if (FORBIDDEN.has(inner.name)) throw locatedError('ONBUILD_INVALID', `ONBUILD cannot hold ${word.toUpperCase()}`, where);
  if (!known.includes(inner.name.toUpperCase())) {
    const near = suggest(word.toUpperCase(), known);
    throw locatedError('UNKNOWN_INSTRUCTION', `Unknown instruction "${word}" in ONBUILD`, where, { hint: near ? `Did you mean "${near}"?` : undefined });
  }
  const trigger = node.original.trim().replace(/^\S+\s+/, '');
  const onBuild = [...(state.image.config.OnBuild ?? []), trigger];
  const next = { ...state, image: { ...state.image, config: { ...state.image.config, OnBuild: onBuild } } };
  return addHistory(next, { created_by: `ONBUILD ${trigger}` });
}
