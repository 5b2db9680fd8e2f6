import { posix } from 'node:path';
import { vertex } from '../../../solver/graph.js';
import { locatedError } from '../errors.js';
import { expand } from '../expand.js';
import { parseChown } from './copy.js';
import { addHistory, stepLocation, stepName, type InstructionContext, type StageState } from '../state.js';

/** WORKDIR: relative to the previous one; the directory is created, owned by the current USER. */
export function compileWorkdir(state: StageState, ictx: InstructionContext): StageState {
  const { node, where } = ictx;
  const raw = expand(node.args[0] ?? '', state, ictx);
  if (raw === '') throw locatedError('WORKDIR_EMPTY', 'WORKDIR needs a path', where);
  if (!raw.startsWith('/') && !state.workdirSet) {
    ictx.warn(`Relative WORKDIR "${raw}" depends on the base image's working directory, which may change`, 'WorkdirRelativePath');
  }
  const dir = posix.resolve(state.image.config.WorkingDir || '/', raw);
  const next = { ...state, workdirSet: true, step: state.step + 1, image: { ...state.image, config: { ...state.image.config, WorkingDir: dir } } };
  const user = state.image.config.User;
  const v = vertex(
    {
      kind: 'file',
      base: state.root ? 0 : -1,
      actions: [{ action: 'mkdir', path: dir, mode: 0o755, ...(user && user !== 'root' && user !== '0' ? { chown: parseChown(user) } : {}) }],
    },
    state.root ? [state.root] : [],
    { name: stepName(next, node.original), location: stepLocation(where), stage: state.name },
  );
  return addHistory({ ...next, root: v }, { created_by: `WORKDIR ${dir}`, vertex: v.digest });
}
