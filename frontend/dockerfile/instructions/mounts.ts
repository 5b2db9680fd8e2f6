import { vertex, type ExecMount, type Vertex } from '../../../solver/graph.js';
import { locatedError, suggest } from '../errors.js';
import { expand } from '../expand.js';
import type { InstructionContext, StageState } from '../state.js';

const TYPES = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'] as const;
type MountType = (typeof TYPES)[number];

const KEYS: Record<MountType, readonly string[]> = {
  bind: ['type', 'target', 'source', 'from', 'readonly', 'readwrite'],
  cache: ['type', 'target', 'source', 'from', 'readonly', 'readwrite', 'id', 'sharing', 'mode', 'uid', 'gid'],
  tmpfs: ['type', 'target', 'size'],
  secret: ['type', 'target', 'id', 'env', 'required', 'mode', 'uid', 'gid'],
  ssh: ['type', 'target', 'id', 'required', 'mode', 'uid', 'gid'],
};

const ALIASES: Record<string, string> = { dst: 'target', destination: 'target', src: 'source', ro: 'readonly', rw: 'readwrite' };

/** A parsed `--mount`: the mount with `input` still to be numbered, and where its files come from. */
export interface ParsedMount {
  mount: ExecMount;
  source?: Vertex;
}

/** Splits `a=1,"b=x,y",c` like a CSV record: quotes protect commas. */
function csvFields(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"') {
      if (quoted && text[i + 1] === '"') {
        cur += '"';
        i++;
      } else {
        quoted = !quoted;
      }
    } else if (ch === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out.map((f) => f.trim()).filter((f) => f !== '');
}

/** Parses one `RUN --mount=…` value into a graph mount (execution is the worker's). */
export async function parseMount(value: string, state: StageState, ictx: InstructionContext): Promise<ParsedMount> {
  const { where } = ictx;
  const fields = new Map<string, string>();
  for (const field of csvFields(value)) {
    const eq = field.indexOf('=');
    const rawKey = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    const key = ALIASES[rawKey] ?? rawKey;
    fields.set(key, eq < 0 ? 'true' : expand(field.slice(eq + 1), state, ictx));
  }
  const type = (fields.get('type') ?? 'bind') as MountType;
  if (!TYPES.includes(type)) {
    const near = suggest(type, TYPES);
    throw locatedError('INVALID_MOUNT', `Unknown mount type "${type}" in RUN --mount`, where, { hint: near ? `Did you mean "${near}"?` : `Mount types: ${TYPES.join(', ')}` });
  }
  for (const key of fields.keys()) {
    if (!KEYS[type].includes(key)) {
      const near = suggest(key, KEYS[type]);
      throw locatedError('INVALID_MOUNT', `Unknown option "${key}" for a ${type} mount in RUN --mount`, where, { hint: near ? `Did you mean "${near}"?` : `A ${type} mount accepts ${KEYS[type].join(', ')}` });
    }
  }
  const bool = (key: string, def: boolean): boolean => {
    const v = fields.get(key);
    if (v === undefined) return def;
    if (v !== 'true' && v !== 'false') throw locatedError('INVALID_MOUNT', `Mount option "${key}" takes true or false, not "${v}"`, where);
    return v === 'true';
  };
  const int = (key: string, def: number, radix = 10): number => {
    const v = fields.get(key);
    if (v === undefined) return def;
    const n = radix === 8 ? (/^[0-7]+$/.test(v) ? parseInt(v, 8) : NaN) : /^\d+$/.test(v) ? Number(v) : NaN;
    if (Number.isNaN(n)) throw locatedError('INVALID_MOUNT', `Mount option "${key}" must be ${radix === 8 ? 'an octal mode' : 'a number'}, not "${v}"`, where);
    return n;
  };
  const target = fields.get('target');
  const needTarget = (): string => {
    if (target === undefined || target === '') throw locatedError('INVALID_MOUNT', `A ${type} mount needs a target, as in --mount=type=${type},target=/path`, where);
    return target.startsWith('/') ? target : `${state.image.config.WorkingDir || '/'}/${target}`.replace(/\/+/g, '/');
  };
  const readwrite = bool('readwrite', false) || (fields.has('readonly') && !bool('readonly', true));

  if (type === 'tmpfs') {
    const size = fields.get('size');
    return { mount: { type, target: needTarget(), ...(size !== undefined ? { size: parseSize(size, where) } : {}) } };
  }
  if (type === 'secret' || type === 'ssh') {
    const id = fields.get('id') ?? (type === 'ssh' ? 'default' : target?.split('/').pop());
    if (!id) throw locatedError('INVALID_MOUNT', 'A secret mount needs an id or a target', where);
    const common = { id, required: bool('required', false), mode: int('mode', type === 'ssh' ? 0o600 : 0o400, 8), uid: int('uid', 0), gid: int('gid', 0) };
    if (type === 'ssh') return { mount: { type, ...common, target: target ?? '/run/buildkit/ssh_agent.0' } };
    const env = fields.get('env');
    const secretTarget = target ?? (env === undefined ? `/run/secrets/${id}` : undefined);
    return { mount: { type, ...common, ...(secretTarget !== undefined ? { target: secretTarget } : {}), ...(env !== undefined ? { env } : {}) } };
  }

  const from = fields.get('from');
  let source: Vertex | undefined;
  if (from !== undefined) source = await mountSource(from, state, ictx);
  const sourcePath = fields.get('source') ?? '/';
  if (type === 'bind') {
    return { mount: { type, target: needTarget(), input: -1, source: sourcePath, readwrite }, source: source ?? ictx.context() };
  }
  const sharing = fields.get('sharing') ?? 'shared';
  if (sharing !== 'shared' && sharing !== 'private' && sharing !== 'locked') {
    throw locatedError('INVALID_MOUNT', `Invalid cache sharing "${sharing}": expected shared, private or locked`, where);
  }
  const t = needTarget();
  const mount: ExecMount = {
    type: 'cache',
    target: t,
    id: fields.get('id') ?? t,
    sharing,
    mode: int('mode', 0o755, 8),
    uid: int('uid', 0),
    gid: int('gid', 0),
    ...(source ? { input: -1, source: sourcePath } : {}),
    ...(bool('readonly', false) ? { readonly: true } : {}),
  };
  return { mount, source };
}

async function mountSource(from: string, state: StageState, ictx: InstructionContext): Promise<Vertex> {
  const stage = await ictx.stage(from);
  if (stage) {
    if (stage.index === state.index) throw locatedError('MOUNT_FROM_SELF', `RUN --mount from="${from}" refers to its own stage`, ictx.where);
    return stage.root ?? emptyFs();
  }
  try {
    return (await ictx.resolveImage(from)).vertex ?? emptyFs();
  } catch (err) {
    const near = suggest(from, ictx.values.stageNames);
    throw locatedError('STAGE_UNKNOWN', `Cannot find stage or image "${from}" referenced by RUN --mount from`, ictx.where, { hint: near ? `Did you mean the stage "${near}"?` : (err as Error).message, cause: err });
  }
}

function parseSize(text: string, where: InstructionContext['where']): number {
  const m = /^(\d+)([kmgt]?)b?$/i.exec(text);
  if (!m) throw locatedError('INVALID_MOUNT', `Invalid tmpfs size "${text}": expected bytes or a number with k, m or g`, where);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * unit;
}

/** A source with no files (a stage FROM scratch with no steps). */
export function emptyFs(): Vertex {
  return vertex({ kind: 'file', base: -1, actions: [] }, [], { name: '[internal] empty filesystem' });
}
