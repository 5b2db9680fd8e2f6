import { KilnError, vertex, type BuildDefinition, type ImageConfig, type Vertex } from '../../solver/graph.js';
import type { FrontendRequest } from '../frontend.js';
import { parseDockerfile, type InstructionNode } from '../parser/index.js';
import { locatedError, suggest, type Where } from './errors.js';
import { expandWith } from './expand.js';
import { compileCopy } from './instructions/copy.js';
import {
  compileArg, compileCmd, compileEntrypoint, compileEnv, compileExpose, compileLabel, compileMaintainer,
  compileShell, compileStopSignal, compileUser, compileVolume,
} from './instructions/meta.js';
import { compileRun } from './instructions/run.js';
import { compileWorkdir } from './instructions/workdir.js';
import { withEnv, type InstructionContext, type StageState } from './state.js';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const INSTRUCTIONS = [
  'ADD', 'ARG', 'CMD', 'COPY', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'FROM', 'HEALTHCHECK', 'LABEL', 'MAINTAINER',
  'ONBUILD', 'RUN', 'SHELL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR',
];

/** Instructions that add a step (and so count in `[stage i/n]`). */
const STEP_INSTRUCTIONS = new Set(['run', 'copy', 'add', 'workdir']);

interface StageSource {
  index: number;
  name?: string;
  from: InstructionNode;
  body: InstructionNode[];
}

/** Compiles a Dockerfile into the graph of its target stage and that stage's image config. */
export async function compileDockerfile(req: FrontendRequest): Promise<BuildDefinition> {
  const parsed = parseDockerfile(req.dockerfile, { file: req.file });
  const lines = req.dockerfile.replace(/^\uFEFF/, '').split('\n').map((l) => l.replace(/\r$/, ''));
  const where = (node: InstructionNode): Where => ({ file: req.file, line: node.startLine, lines });
  const escape = parsed.directives.escape;
  const warnings: BuildDefinition['warnings'] = [];

  // Global ARGs (before the first FROM), then stages.
  const globals = new Map<string, string | undefined>();
  const stages: StageSource[] = [];
  for (const node of parsed.instructions) {
    const upper = node.name.toUpperCase();
    if (!INSTRUCTIONS.includes(upper)) {
      const near = suggest(upper, INSTRUCTIONS);
      throw locatedError('UNKNOWN_INSTRUCTION', `Unknown instruction "${node.original.split(/\s/, 1)[0]}"`, where(node), { hint: near ? `Did you mean "${near}"?` : undefined });
    }
    if (upper === 'FROM') {
      const args = node.args;
      let name: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') name = args[2]!.toLowerCase();
      else if (args.length !== 1) throw locatedError('FROM_ARGS', 'FROM takes an image and optionally "AS name"', where(node));
      if (name !== undefined) {
        if (!/^[a-z][a-z0-9-_.]*$/.test(name)) throw locatedError('STAGE_NAME', `Invalid stage name "${name}": use letters, digits, "-", "_" and "."`, where(node));
        if (stages.some((s) => s.name === name)) throw locatedError('STAGE_DUPLICATE', `Duplicate stage name "${name}"`, where(node));
      }
      stages.push({ index: stages.length, name, from: node, body: [] });
    } else if (stages.length === 0) {
      if (upper !== 'ARG') throw locatedError('NO_FROM', `${upper} before the first FROM: only ARG may come before FROM`, where(node));
      for (const raw of node.args) {
        const eq = raw.indexOf('=');
        const key = eq < 0 ? raw : raw.slice(0, eq);
        const def = eq < 0 ? undefined : expandWith(raw.slice(eq + 1), (n) => globals.get(n), { where: where(node), escape });
        globals.set(key, Object.hasOwn(req.buildArgs, key) ? req.buildArgs[key] : def);
      }
    } else {
      stages[stages.length - 1]!.body.push(node);
    }
  }
  if (stages.length === 0) {
    throw new KilnError('NO_FROM', `The Dockerfile "${req.file}" has no FROM instruction`, { location: { file: req.file, line: 1 } });
  }

  const contextVertex = vertex({ kind: 'context', ...req.context }, [], { name: '[internal] load build context', hidden: true });
  const imageVertices = new Map<string, Promise<{ vertex: Vertex | undefined; config: ImageConfig; ref: string }>>();
  const resolveImage = (ref: string, display: string) => {
    let p = imageVertices.get(`${ref}\0${display}`);
    if (!p) {
      p = req.resolver.resolve(ref, { platform: req.platform, signal: req.signal }).then((img) => ({
        ref: img.ref,
        config: img.config,
        vertex: vertex({ kind: 'image', ref: img.ref, manifest: img.manifest, platform: req.platform }, [], { name: display }) as Vertex | undefined,
      }));
      imageVertices.set(`${ref}\0${display}`, p);
    }
    return p;
  };

  const stageNames = stages.flatMap((s) => (s.name ? [s.name] : []));
  const compiled = new Map<number, Promise<StageState>>();
  const findStage = (ref: string): StageSource | undefined => {
    const byName = stages.find((s) => s.name === ref.toLowerCase());
    if (byName) return byName;
    if (/^\d+$/.test(ref)) return stages[Number(ref)];
    return undefined;
  };

  const compileStage = (src: StageSource): Promise<StageState> => {
    let p = compiled.get(src.index);
    if (!p) {
      p = compileStageBody(src);
      compiled.set(src.index, p);
    }
    return p;
  };

  const compileStageBody = async (src: StageSource): Promise<StageState> => {
    const fromWhere = where(src.from);
    const imageRef = expandWith(src.from.args[0]!, (n) => globals.get(n), { where: fromWhere, escape });
    if (imageRef === '') throw locatedError('FROM_EMPTY', `FROM names an empty image (after expanding "${src.from.args[0]}")`, fromWhere);
    const display = stages.length === 1 && src.name === undefined ? '' : (src.name ?? `stage-${src.index}`);
    const steps = src.body.filter((n) => STEP_INSTRUCTIONS.has(n.name)).length;
    let base: { root: Vertex | undefined; image: ImageConfig; step: number; steps: number };
    const parentStage = findStage(imageRef);
    if (parentStage && parentStage.index < src.index) {
      const parent = await compileStage(parentStage);
      base = { root: parent.root, image: structuredClone(parent.image), step: 1, steps: steps + 1 };
    } else if (imageRef.toLowerCase() === 'scratch') {
      base = { root: undefined, image: scratchConfig(req.platform), step: 0, steps };
    } else {
      const name = `[${display === '' ? '' : `${display} `}1/${steps + 1}] FROM ${imageRef}`;
      let img;
      try {
        img = await resolveImage(imageRef, name);
      } catch (err) {
        if (err instanceof KilnError) throw locatedError(err.code, err.message.replace(/ at \S+:\d+$/, ''), fromWhere, { hint: err.hint, cause: err });
        throw err;
      }
      base = { root: img.vertex, image: structuredClone(img.config), step: 1, steps: steps + 1 };
    }
    if (!(base.image.config.Env ?? []).some((e) => e.startsWith('PATH='))) {
      base.image.config.Env = withEnv(base.image.config.Env, 'PATH', DEFAULT_PATH);
    }
    let state: StageState = {
      display,
      name: src.name,
      index: src.index,
      root: base.root,
      image: base.image,
      // A stage built on another carries that stage's new history entries along.
      history: parentStage && parentStage.index < src.index ? (await compileStage(parentStage)).history : [],
      args: new Map(),
      step: base.step,
      steps: base.steps,
      cmdSet: false,
      platform: req.platform,
    };
    for (const node of src.body) {
      const ictx: InstructionContext = {
        node,
        where: where(node),
        escape,
        context: () => contextVertex,
        stage: async (ref) => {
          const s = findStage(ref);
          if (!s) return undefined;
          if (s.index >= src.index && s.index !== src.index) {
            throw locatedError('STAGE_ORDER', `Stage "${ref}" is defined after the stage that uses it`, where(node));
          }
          return s.index === src.index ? state : compileStage(s);
        },
        resolveImage: (ref) => resolveImage(ref, `[internal] load metadata for ${ref}`),
        warn: (message, rule) => warnings.push({ message, rule, location: { file: req.file, line: node.startLine } }),
      };
      state = await compileInstruction(state, ictx, { buildArgs: req.buildArgs, globals, stageNames });
    }
    return state;
  };

  let target: StageSource;
  if (req.target !== undefined) {
    const t = findStage(req.target);
    if (!t) {
      const near = suggest(req.target, stageNames);
      throw new KilnError('TARGET_UNKNOWN', `Target stage "${req.target}" not found in ${req.file}`, { hint: near ? `Did you mean "${near}"?` : `Stages: ${stageNames.join(', ') || '(none named)'}`, exitCode: 1 });
    }
    target = t;
  } else {
    target = stages[stages.length - 1]!;
  }
  const final = await compileStage(target);
  return { root: final.root, image: final.image, history: final.history, warnings };
}

async function compileInstruction(
  state: StageState,
  ictx: InstructionContext,
  values: { buildArgs: Readonly<Record<string, string>>; globals: ReadonlyMap<string, string | undefined>; stageNames: readonly string[] },
): Promise<StageState> {
  switch (ictx.node.name) {
    case 'run': return compileRun(state, ictx);
    case 'copy': return compileCopy(state, ictx, values.stageNames);
    case 'workdir': return compileWorkdir(state, ictx);
    case 'env': return compileEnv(state, ictx);
    case 'label': return compileLabel(state, ictx);
    case 'user': return compileUser(state, ictx);
    case 'cmd': return compileCmd(state, ictx);
    case 'entrypoint': return compileEntrypoint(state, ictx);
    case 'shell': return compileShell(state, ictx);
    case 'expose': return compileExpose(state, ictx);
    case 'volume': return compileVolume(state, ictx);
    case 'stopsignal': return compileStopSignal(state, ictx);
    case 'maintainer': return compileMaintainer(state, ictx);
    case 'arg': return compileArg(state, ictx, values);
    default:
      throw locatedError('UNSUPPORTED', `The ${ictx.node.name.toUpperCase()} instruction is not supported yet`, ictx.where);
  }
}

function scratchConfig(platform: { os: string; architecture: string; variant?: string }): ImageConfig {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {},
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}
