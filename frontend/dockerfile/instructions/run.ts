import { vertex, type ExecMount, type ExecOp, type Vertex } from '../../../solver/graph.js';
import { PROXY_ARGS } from '../args.js';
import { locatedError } from '../errors.js';
import { parseFlags } from '../flags.js';
import { fileVertex, runHeredoc, SCRIPT_DIR } from '../heredoc.js';
import { addHistory, stepLocation, stepName, type InstructionContext, type StageState } from '../state.js';
import { parseMount } from './mounts.js';

export const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** Exec form as is; shell form through the stage's SHELL. */
export function commandArgs(state: StageState, ictx: Pick<InstructionContext, 'node'>): string[] {
  const { node } = ictx;
  if (node.json) return [...node.args];
  return [...(state.image.config.Shell ?? DEFAULT_SHELL), node.args.join(' ')];
}

/**
 * Build args visible to RUN: those declared in the stage with a value, and proxy settings given
 * with --build-arg even undeclared. They reach the process, never the image config.
 */
function argEnv(state: StageState, buildArgs: Readonly<Record<string, string>>): string[] {
  const out = new Map<string, string>();
  for (const [k, v] of state.args) if (v !== undefined) out.set(k, v);
  for (const k of PROXY_ARGS) if (Object.hasOwn(buildArgs, k) && !out.has(k)) out.set(k, buildArgs[k]!);
  return [...out].map(([k, v]) => `${k}=${v}`);
}

export async function compileRun(state: StageState, ictx: InstructionContext): Promise<StageState> {
  const { node, where } = ictx;
  const flags = parseFlags(node, { network: 'string', mount: 'list', security: 'string' }, where);
  const defaults = ictx.values.runDefaults ?? {};
  const asked = flags.get('network') as string | undefined;
  // As in BuildKit, `default` is the build's network: none when the build says so.
  const network = asked === undefined || asked === 'default' ? (defaults.network ?? 'default') : asked;
  if (network !== 'default' && network !== 'none' && network !== 'host') {
    throw locatedError('INVALID_FLAG', `Invalid --network "${network}": expected default, none or host`, where);
  }
  const security = (flags.get('security') as string | undefined) ?? 'sandbox';
  if (security !== 'sandbox' && security !== 'insecure') {
    throw locatedError('INVALID_FLAG', `Invalid --security "${security}": expected sandbox or insecure`, where);
  }

  const inputs: Vertex[] = state.root ? [state.root] : [];
  const inputIndex = (v: Vertex): number => {
    const at = inputs.findIndex((i) => i.digest === v.digest);
    if (at >= 0) return at;
    inputs.push(v);
    return inputs.length - 1;
  };
  const mounts: ExecMount[] = [];
  for (const value of (flags.get('mount') as string[] | undefined) ?? []) {
    const parsed = await parseMount(value, state, ictx);
    const m = parsed.mount;
    if (parsed.source && (m.type === 'bind' || m.type === 'cache')) mounts.push({ ...m, input: inputIndex(parsed.source) });
    else mounts.push(m);
  }

  let args: string[];
  let shown: string;
  if (node.heredocs.length > 0) {
    const shell = state.image.config.Shell ?? DEFAULT_SHELL;
    const h = runHeredoc(node);
    if (h.kind === 'file') {
      const script = fileVertex(h.name, h.data, 0o755, { name: `[internal] heredoc ${h.name}`, location: stepLocation(where) });
      mounts.push({ type: 'bind', target: SCRIPT_DIR, input: inputIndex(script), source: '/', readwrite: false });
      args = [`${SCRIPT_DIR}/${h.name}`];
    } else {
      args = [...shell, h.script];
    }
    shown = args.join(' ');
  } else {
    args = commandArgs(state, ictx);
    shown = args.join(' ');
  }
  if (args.length === 0) throw locatedError('EMPTY_COMMAND', 'RUN needs a command', where);
  const next = { ...state, step: state.step + 1 };
  const buildArgs = argEnv(state, ictx.values.buildArgs);
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
    ...(mounts.length > 0 ? { mounts } : {}),
    ...(security === 'insecure' ? { security } : {}),
    // Set only when given, so that the definitions (and cache keys) of builds without them stay as they were.
    ...(defaults.extraHosts?.length ? { extraHosts: defaults.extraHosts } : {}),
    ...(defaults.ulimits?.length ? { ulimits: defaults.ulimits } : {}),
    ...(defaults.shmSize !== undefined ? { shmSize: defaults.shmSize } : {}),
  };
  const v = vertex(op, inputs, { name: stepName(next, node.original), location: stepLocation(where), stage: state.name });
  const recorded = buildArgs.filter((a) => !PROXY_ARGS.has(a.split('=', 1)[0]!));
  const argsPrefix = recorded.length > 0 ? `|${recorded.length} ${recorded.join(' ')} ` : '';
  return addHistory({ ...next, root: v }, { created_by: `RUN ${argsPrefix}${shown} # buildkit`, vertex: v.digest });
}
