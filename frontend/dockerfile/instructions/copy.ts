import { posix } from 'node:path';
import { vertex, type CopyAction, type FileAction, type GitOp, type HttpOp, type UserSpec, type Vertex } from '../../../solver/graph.js';
import { createIgnoreMatcher, type IgnoreMatcher } from '../../ignore/index.js';
import { locatedError, suggest } from '../errors.js';
import { expand } from '../expand.js';
import { parseFlags, type FlagKind } from '../flags.js';
import { fileVertex, heredocForSource } from '../heredoc.js';
import { addHistory, stepLocation, stepName, type InstructionContext, type StageState } from '../state.js';
import { emptyFs } from './mounts.js';

export function parseChown(value: string): UserSpec {
  const [user = '', group] = value.split(':', 2);
  return group === undefined || group === '' ? { user } : { user, group };
}

const OCTAL = /^[0-7]{3,4}$/;
const SYMBOLIC = /^[ugoa]*[-+=][rwxXst]*(,[ugoa]*[-+=][rwxXst]*)*$/;

const COPY_FLAGS: Record<string, FlagKind> = { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'list' };
const ADD_FLAGS: Record<string, FlagKind> = { chown: 'string', chmod: 'string', link: 'bool', exclude: 'list', checksum: 'string', 'keep-git-dir': 'bool' };

/** One source of a COPY or ADD: where its files come from and which of them. */
interface Source {
  vertex: Vertex;
  src: string[];
  fromContext: boolean;
  /** How the source shows in history. */
  shown: string;
}

/** COPY: files from the context, a stage, an image or a heredoc into the stage's filesystem. */
export function compileCopy(state: StageState, ictx: InstructionContext): Promise<StageState> {
  return compileFileCopy(state, ictx, 'COPY');
}

/** ADD: as COPY, plus URLs, git repositories and local tar archives that unpack. */
export function compileAdd(state: StageState, ictx: InstructionContext): Promise<StageState> {
  return compileFileCopy(state, ictx, 'ADD');
}

async function compileFileCopy(state: StageState, ictx: InstructionContext, kind: 'COPY' | 'ADD'): Promise<StageState> {
  const { node, where } = ictx;
  const flags = parseFlags(node, kind === 'COPY' ? COPY_FLAGS : ADD_FLAGS, where);
  const str = (name: string): string | undefined => {
    const v = flags.get(name) as string | undefined;
    return v === undefined ? undefined : expand(v, state, ictx);
  };
  if (node.args.length < 2) throw locatedError('COPY_ARGS', `${kind} needs at least one source and a destination`, where);
  const rawDest = node.args[node.args.length - 1]!;
  const dest = node.json ? rawDest : expand(rawDest, state, ictx);
  if (dest === '') throw locatedError('COPY_ARGS', `${kind} has an empty destination`, where);
  const chmod = str('chmod');
  if (chmod !== undefined && !OCTAL.test(chmod) && !SYMBOLIC.test(chmod)) {
    throw locatedError('INVALID_CHMOD', `Invalid --chmod "${chmod}": expected an octal mode such as 755 or a symbolic one such as u+x,go-w`, where);
  }
  const chown = str('chown');
  const checksum = str('checksum');
  const from = str('from');
  const exclude = ((flags.get('exclude') as string[] | undefined) ?? []).map((e) => expand(e, state, ictx));
  const keepGitDir = flags.get('keep-git-dir') === true;

  const contextSource = from !== undefined ? await fromSource(from, state, ictx) : ictx.context();
  const sources: Source[] = [];
  const local: string[] = [];
  for (const raw of node.args.slice(0, -1)) {
    const heredoc = node.json ? undefined : heredocForSource(raw, node);
    if (heredoc) {
      const data = heredoc.expand ? expand(heredoc.content, state, ictx, { literalQuotes: true }) : heredoc.content;
      sources.push({ vertex: fileVertex(heredoc.name, data, 0o644, { name: `[internal] heredoc ${heredoc.name}`, location: stepLocation(where) }), src: [heredoc.name], fromContext: false, shown: `<<${heredoc.name}` });
      continue;
    }
    const word = node.json ? raw : expand(raw, state, ictx);
    const remote = kind === 'ADD' ? remoteSource(word, { checksum, keepGitDir }, ictx) : undefined;
    if (remote) sources.push(remote);
    else local.push(word);
  }
  if (checksum !== undefined && (local.length > 0 || sources.length === 0)) {
    throw locatedError('INVALID_FLAG', 'ADD --checksum is only for http(s) and git sources', where);
  }
  if (local.length > 0) {
    sources.unshift({ vertex: contextSource, src: local, fromContext: from === undefined, shown: local.join(' ') });
    if (from === undefined) checkIgnored(local, ictx);
  }
  const count = sources.reduce((n, s) => n + s.src.length, 0);
  if (count > 1 && !dest.endsWith('/')) {
    throw locatedError('COPY_DEST_NOT_DIR', `When ${kind} has more than one source, the destination "${dest}" must be a directory and end with "/"`, where, { hint: `Write "${dest}/"` });
  }

  const inputs: Vertex[] = state.root ? [state.root] : [];
  const actions: FileAction[] = sources.map((s) => {
    let at = inputs.findIndex((i) => i.digest === s.vertex.digest);
    if (at < 0) at = inputs.push(s.vertex) - 1;
    const action: CopyAction = {
      action: 'copy',
      from: at,
      src: s.src,
      dest,
      cwd: state.image.config.WorkingDir || '/',
      ...(chown !== undefined ? { chown: parseChown(chown) } : {}),
      ...(chmod !== undefined ? { chmod } : {}),
      ...(flags.get('parents') === true ? { parents: true } : {}),
      ...(exclude.length > 0 ? { exclude } : {}),
      ...(flags.get('link') === true ? { link: true } : {}),
      ...(kind === 'ADD' && s.fromContext ? { extract: true } : {}),
    };
    return action;
  });
  const next = { ...state, step: state.step + 1 };
  const v = vertex({ kind: 'file', base: state.root ? 0 : -1, actions }, inputs, { name: stepName(next, node.original), location: stepLocation(where), stage: state.name });
  const fromPart = from !== undefined ? `--from=${from} ` : '';
  return addHistory({ ...next, root: v }, { created_by: `${kind} ${fromPart}${sources.map((s) => s.shown).join(' ')} ${dest} # buildkit`, vertex: v.digest });
}

async function fromSource(name: string, state: StageState, ictx: InstructionContext): Promise<Vertex> {
  const stage = await ictx.stage(name);
  if (stage) {
    if (stage.index === state.index) throw locatedError('COPY_FROM_SELF', `COPY --from="${name}" refers to its own stage`, ictx.where);
    return stage.root ?? emptyFs();
  }
  try {
    return (await ictx.resolveImage(name)).vertex ?? emptyFs();
  } catch (err) {
    const near = suggest(name, ictx.values.stageNames);
    throw locatedError('STAGE_UNKNOWN', `Cannot find stage or image "${name}" referenced by COPY --from`, ictx.where, {
      hint: near ? `Did you mean the stage "${near}"?` : (err as Error).message,
      cause: err,
    });
  }
}

const GIT_URL = /^(git@[^:]+:|git:\/\/|ssh:\/\/|file:\/\/)|^https?:\/\/[^#]+\.git(#.*)?$/;

/** An http(s) or git source of ADD, or undefined for a local path. */
function remoteSource(word: string, o: { checksum?: string; keepGitDir: boolean }, ictx: InstructionContext): Source | undefined {
  if (GIT_URL.test(word)) {
    if (word.startsWith('file://') && !ictx.values.hostSources) {
      throw locatedError('SOURCE_REFUSED', `ADD of "${word}" would read a git repository on the build service's own disk`, ictx.where, {
        hint: 'Against a build service, ADD takes git repositories over https://, ssh:// or git://; for local files use COPY from the context',
      });
    }
    const hash = word.indexOf('#');
    const url = hash < 0 ? word : word.slice(0, hash);
    const [ref = '', subdir = ''] = (hash < 0 ? '' : word.slice(hash + 1)).split(':', 2);
    if (o.checksum !== undefined && !/^[0-9a-f]{7,64}$/.test(o.checksum)) {
      throw locatedError('INVALID_FLAG', `Invalid --checksum "${o.checksum}" for a git source: expected a commit hash`, ictx.where);
    }
    const op: GitOp = {
      kind: 'git',
      url,
      ...(ref ? { ref } : {}),
      ...(subdir ? { subdir } : {}),
      keepGitDir: o.keepGitDir,
      ...(o.checksum !== undefined ? { checksum: o.checksum } : {}),
    };
    return { vertex: vertex(op, [], { name: `[internal] git ${word}`, location: stepLocation(ictx.where) }), src: ['.'], fromContext: false, shown: word };
  }
  if (!/^https?:\/\//i.test(word)) return undefined;
  let url: URL;
  try {
    url = new URL(word);
  } catch {
    throw locatedError('INVALID_URL', `Invalid URL "${word}" in ADD`, ictx.where);
  }
  const filename = decodeURIComponent(posix.basename(url.pathname)) || 'index.html';
  if (o.checksum !== undefined && !/^sha(256|384|512):[0-9a-f]+$/.test(o.checksum)) {
    throw locatedError('INVALID_FLAG', `Invalid --checksum "${o.checksum}": expected sha256:HEX`, ictx.where);
  }
  const op: HttpOp = { kind: 'http', url: word, filename, ...(o.checksum !== undefined ? { checksum: o.checksum } : {}) };
  return { vertex: vertex(op, [], { name: `[internal] http ${word}`, location: stepLocation(ictx.where) }), src: [filename], fromContext: false, shown: word };
}

const matchers = new WeakMap<readonly string[], IgnoreMatcher>();

/** CopyIgnoredFile: a plain context path that .dockerignore leaves out. */
function checkIgnored(paths: readonly string[], ictx: InstructionContext): void {
  if (ictx.values.contextExclude.length === 0) return;
  // One matcher per build, not per COPY: a large .dockerignore would be compiled again each time.
  let matcher = matchers.get(ictx.values.contextExclude);
  if (!matcher) {
    matcher = createIgnoreMatcher([...ictx.values.contextExclude]);
    matchers.set(ictx.values.contextExclude, matcher);
  }
  for (const p of paths) {
    if (/[*?[]/.test(p)) continue;
    const rel = posix.normalize(`/${p}`).slice(1);
    if (rel !== '' && matcher.matches(rel)) ictx.warn(`Attempting to copy "${p}", which .dockerignore excludes`, 'CopyIgnoredFile');
  }
}
