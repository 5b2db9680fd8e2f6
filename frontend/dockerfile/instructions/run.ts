import { vertex, type ExecOp } from '../../../solver/graph.js';
import { locatedError } from '../errors.js';
import { parseFlags } from '../flags.js';
import { addHistory, stepName, type InstructionContext, type StageState } from '../state.js';

export const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** Exec form as is; shell form through the stage's SHELL. */
export function commandArgs(state: StageState, ictx: InstructionContext): string[] {
  const { node } = ictx;
  if (node.json) return [...node.args];
  return [...(state.image.config.Shell ?? DEFAULT_SHELL), node.args.join(' ')];
}

/** Build args visible to RUN: declared in the stage with a value; they stay out of the config. */
function argEnv(state: StageState): string[] {
  const out: string[] = [];
  for (const [k, v] of state.args) if (v !== undefined) out.push(`${k}=${v}`);
  return out;
}

export function compileRun(state: StageState, ictx: InstructionContext): StageState {
  const { node, where } = ictx;
  const flags = parseFlags(node, { network: 'string', mount: 'list', security: 'string' }, where);
  if (flags.has('mount')) throw locatedError('UNSUPPORTED', 'RUN --mount is not supported yet', where);
  if (node.heredocs.length > 0) throw locatedError('UNSUPPORTED', 'Heredocs in RUN are not supported yet', where);
  const network = (flags.get('network') as string | undefined) ?? 'default';
  if (network !== 'default' && network !== 'none' && network !== 'host') {
    throw locatedError('INVALID_FLAG', `Invalid --network "${network}": expected default, none or host`, where);
  }
  const args = commandArgs(state, ictx);
  if (args.length === 0) throw locatedError('EMPTY_COMMAND', 'RUN needs a command', where);
  const next = { ...state, step: state.step + 1 };
  const buildArgs = argEnv(state);
  // Later ENV wins over an ARG of the same name, as in the shell the step runs in.
  const envNames = new Set((state.image.config.Env ?? []).map((e) => e.split('=', 1)[0]));
  const env = [...buildArgs.filter((a) => !envNames.has(a.split('=', 1)[0])), ...(state.image.config.Env ?? [])];
  const op: ExecOp = {
    kind: 'exec',
    root: state.root ? 0 : -1,
    args,
    env,
    cwd: state.image.config.WorkingDir || '/',
    user: state.image.config.User || 'root',
    network,
  };
  const v = vertex(op, state.root ? [state.root] : [], {
    name: stepName(next, node.original),
    location: { file: where.file, line: where.line, column: 1, text: where.lines[where.line - 1] },
    stage: state.name,
  });
  const argsPrefix = buildArgs.length > 0 ? `|${buildArgs.length} ${buildArgs.join(' ')} ` : '';
  return addHistory({ ...next, root: v }, { created_by: `RUN ${argsPrefix}${args.join(' ')} # buildkit`, vertex: v.digest });
}
