import { vertex, type CopyAction, type FileAction, type UserSpec, type Vertex } from '../../../solver/graph.js';
import { locatedError, suggest } from '../errors.js';
import { expand } from '../expand.js';
import { parseFlags } from '../flags.js';
import { addHistory, stepName, type InstructionContext, type StageState } from '../state.js';

export function parseChown(value: string): UserSpec {
  const [user = '', group] = value.split(':', 2);
  return group === undefined || group === '' ? { user } : { user, group };
}

/** COPY: files from the context, a stage or an image into the stage's filesystem. */
export async function compileCopy(state: StageState, ictx: InstructionContext, stageNames: readonly string[]): Promise<StageState> {
  const { node, where } = ictx;
  const flags = parseFlags(node, { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'list' }, where);
  for (const f of ['parents', 'exclude'] as const) {
    if (flags.has(f)) throw locatedError('UNSUPPORTED', `COPY --${f} is not supported yet`, where);
  }
  if (node.heredocs.length > 0) throw locatedError('UNSUPPORTED', 'Heredocs in COPY are not supported yet', where);
  const words = node.args.map((a) => (node.json ? a : expand(a, state, ictx)));
  if (words.length < 2) throw locatedError('COPY_ARGS', 'COPY needs at least one source and a destination', where);
  const dest = words[words.length - 1]!;
  const src = words.slice(0, -1);

  let source: Vertex;
  const from = flags.get('from') as string | undefined;
  if (from !== undefined) {
    const name = expand(from, state, ictx);
    const stage = await ictx.stage(name);
    if (stage) {
      if (stage.index === state.index) throw locatedError('COPY_FROM_SELF', `COPY --from="${name}" refers to its own stage`, where);
      source = stage.root ?? emptyRoot();
    } else {
      let img;
      try {
        img = await ictx.resolveImage(name);
      } catch (err) {
        const near = suggest(name, stageNames);
        throw locatedError('STAGE_UNKNOWN', `Cannot find stage or image "${name}" referenced by COPY --from`, where, {
          hint: near ? `Did you mean the stage "${near}"?` : (err as Error).message,
          cause: err,
        });
      }
      source = img.vertex ?? emptyRoot();
    }
  } else {
    source = ictx.context();
  }

  const chown = flags.get('chown') as string | undefined;
  const chmod = flags.get('chmod') as string | undefined;
  const copy: CopyAction = {
    action: 'copy',
    from: state.root ? 1 : 0,
    src,
    dest,
    cwd: state.image.config.WorkingDir || '/',
    ...(chown !== undefined ? { chown: parseChown(expand(chown, state, ictx)) } : {}),
    ...(chmod !== undefined ? { chmod } : {}),
  };
  if (chmod !== undefined && !/^[0-7]{3,4}$/.test(chmod)) {
    throw locatedError('INVALID_CHMOD', `Invalid --chmod "${chmod}": expected an octal mode such as 755 or 0644`, where);
  }
  const next = { ...state, step: state.step + 1 };
  const actions: FileAction[] = [copy];
  const inputs = state.root ? [state.root, source] : [source];
  const v = vertex({ kind: 'file', base: state.root ? 0 : -1, actions }, inputs, {
    name: stepName(next, node.original),
    location: { file: where.file, line: where.line, column: 1, text: where.lines[where.line - 1] },
    stage: state.name,
  });
  const fromPart = from !== undefined ? `--from=${from} ` : '';
  return addHistory({ ...next, root: v }, { created_by: `COPY ${fromPart}${src.join(' ')} ${dest} # buildkit`, vertex: v.digest });
}

/** A source with no files (a stage FROM scratch with no steps). */
function emptyRoot(): Vertex {
  return vertex({ kind: 'file', base: -1, actions: [] }, [], { name: '[internal] empty filesystem' });
}
