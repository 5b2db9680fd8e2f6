import { KilnError, vertex, type BuildDefinition, type ImageConfig, type Platform, type Vertex } from '../../solver/graph.js';
import type { FrontendRequest, ResolvedImage } from '../frontend.js';
import { parseDockerfile, type InstructionNode } from '../parser/index.js';
import { automaticArgs, ENGINE_ARGS, formatPlatform, parsePlatform, PROXY_ARGS } from './args.js';
import { locate, locatedError, suggest, type Where } from './errors.js';
import { expandInfo, expandWith } from './expand.js';
import { compileAdd, compileCopy } from './instructions/copy.js';
import { compileHealthcheck } from './instructions/healthcheck.js';
import {
  compileArg, compileCmd, compileEntrypoint, compileEnv, compileExpose, compileLabel, compileMaintainer,
  compileShell, compileStopSignal, compileUser, compileVolume,
} from './instructions/meta.js';
import { compileOnbuild } from './instructions/onbuild.js';
import { compileRun } from './instructions/run.js';
import { compileWorkdir } from './instructions/workdir.js';
import { createLinter, looksSecret, parseCheckDirective, type RuleName } from './lint.js';
import { lintFile, lintStageCounts } from './lint-file.js';
import { parseFlags } from './flags.js';
import { withEnv, type BuildValues, type InstructionContext, type StageState } from './state.js';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const INSTRUCTIONS = [
  'ADD', 'ARG', 'CMD', 'COPY', 'ENTRYPOINT', 'ENV', 'EXPOSE', 'FROM', 'HEALTHCHECK', 'LABEL', 'MAINTAINER',
  'ONBUILD', 'RUN', 'SHELL', 'STOPSIGNAL', 'USER', 'VOLUME', 'WORKDIR',
];

/** Instructions that add a step (and so count in `[stage i/n]`). */
const STEP_INSTRUCTIONS = new Set(['run', 'copy', 'add', 'workdir']);

/** Words a stage may not be named: they mean something else after FROM and --from. */
const RESERVED_STAGE_NAMES = ['scratch', 'context'];

interface StageSource {
  index: number;
  name?: string;
  from: InstructionNode;
  body: InstructionNode[];
}

/**
 * Compiles a Dockerfile into the graph of its target stage and that stage's image config.
 * With `check`, every stage is compiled (for its warnings) and the target is the last one.
 */
export async function compileDockerfile(req: FrontendRequest): Promise<BuildDefinition> {
  const parsed = parseDockerfile(req.dockerfile, { file: req.file });
  const lines = req.dockerfile.replace(/^\uFEFF/, '').split('\n').map((l) => l.replace(/\r$/, ''));
  const where = (node: InstructionNode): Where => ({ file: req.file, line: node.startLine, lines });
  const escape = parsed.directives.escape;
  const checkSettings = parseCheckDirective(parsed.directives.check, { file: req.file });
  const lint = createLinter(checkSettings);
  const at = (line: number) => locate({ file: req.file, line, lines });
  const syntax = parsed.directives.syntax;
  if (syntax !== undefined && !/^(docker\.io\/)?docker\/dockerfile(-upstream)?(:[\w.-]+)?(@sha256:[0-9a-f]{64})?$/.test(syntax)) {
    lint.plain(`The syntax directive names the frontend "${syntax}"; Kiln builds with its own Dockerfile frontend`, at(1));
  }
  for (const w of parsed.warnings) lint.report('NoEmptyContinuation', 'Empty continuation line', at(w.line));
  lintFile(parsed.instructions, (rule, message, line) => lint.report(rule, message, at(line)));

  // Global ARGs (before the first FROM), then stages.
  const globals = new Map<string, string | undefined>();
  const globalDefaults = new Map<string, string | undefined>();
  const consumed = new Set<string>();
  const stages: StageSource[] = [];
  for (const node of parsed.instructions) {
    const upper = node.name.toUpperCase();
    if (!INSTRUCTIONS.includes(upper)) {
      const near = suggest(upper, INSTRUCTIONS);
      throw locatedError('UNKNOWN_INSTRUCTION', `Unknown instruction "${node.original.trim().split(/\s/, 1)[0]}"`, where(node), { hint: near ? `Did you mean "${near}"?` : undefined });
    }
    if (upper === 'FROM') {
      stages.push(stageSource(node, stages, where(node), (rule, message) => lint.report(rule, message, locate(where(node)))));
    } else if (stages.length === 0) {
      if (upper !== 'ARG') throw locatedError('NO_FROM', `${upper} before the first FROM: only ARG may come before FROM`, where(node));
      if (node.args.length === 0) throw locatedError('INVALID_ARG', 'ARG needs a name, as in ARG VERSION=1', where(node));
      for (const raw of node.args) {
        const eq = raw.indexOf('=');
        const key = eq < 0 ? raw : raw.slice(0, eq);
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw locatedError('INVALID_ARG', `Invalid ARG name "${key}"`, where(node));
        if (looksSecret(key)) lint.report('SecretsUsedInArgOrEnv', `Do not pass sensitive data in ARG (ARG "${key}")`, locate(where(node)));
        const def = eq < 0 ? undefined : expandWith(raw.slice(eq + 1), (n) => globals.get(n), { where: where(node), escape });
        globalDefaults.set(key, eq < 0 ? undefined : expandWith(raw.slice(eq + 1), (n) => globalDefaults.get(n), { where: where(node), escape }));
        if (Object.hasOwn(req.buildArgs, key)) consumed.add(key);
        globals.set(key, Object.hasOwn(req.buildArgs, key) ? req.buildArgs[key] : def);
      }
    } else {
      stages[stages.length - 1]!.body.push(node);
    }
  }
  if (stages.length === 0) {
    throw new KilnError('NO_FROM', `The Dockerfile "${req.file}" has no FROM instruction`, { location: { file: req.file, line: 1 } });
  }
  for (const s of stages) lintStageCounts(s.body, (rule, message, line) => lint.report(rule, message, at(line)));

  const stageNames = stages.flatMap((s) => (s.name ? [s.name] : []));
  const findStage = (ref: string): StageSource | undefined => {
    const byName = stages.find((s) => s.name === ref.toLowerCase());
    if (byName) return byName;
    if (/^\d+$/.test(ref)) return stages[Number(ref)];
    return undefined;
  };
  let target: StageSource;
  if (req.target !== undefined && !req.check) {
    const t = findStage(req.target);
    if (!t) {
      const near = suggest(req.target, stageNames);
      throw new KilnError('TARGET_UNKNOWN', `Target stage "${req.target}" not found in ${req.file}`, { hint: near ? `Did you mean "${near}"?` : `Stages: ${stageNames.join(', ') || '(none named)'}`, exitCode: 1 });
    }
    target = t;
  } else {
    target = stages[stages.length - 1]!;
  }
  const automatic = automaticArgs(req.platform, req.platform, req.target !== undefined && !req.check ? req.target : (target.name ?? ''));
  const values: BuildValues = { buildArgs: req.buildArgs, globals, automatic, stageNames, contextExclude: req.context.exclude, consumed, runDefaults: req.runDefaults, hostSources: req.hostSources ?? true };
  const fromLookup = (n: string) => (globals.has(n) ? globals.get(n) : automatic.get(n));

  const contextVertex = vertex({ kind: 'context', ...req.context }, [], { name: '[internal] load build context', hidden: true });
  const resolved = new Map<string, Promise<ResolvedImage>>();
  const resolve = (ref: string, platform: Platform) => {
    const key = `${ref}\0${formatPlatform(platform)}`;
    let p = resolved.get(key);
    if (!p) {
      p = req.resolver.resolve(ref, { platform, signal: req.signal });
      resolved.set(key, p);
    }
    return p;
  };
  const imageVertex = (img: ResolvedImage, platform: Platform, name: string): Vertex =>
    vertex({ kind: 'image', ref: img.ref, manifest: img.manifest, platform }, [], { name });

  const compiled = new Map<number, Promise<StageState>>();
  const compileStage = (src: StageSource): Promise<StageState> => {
    let p = compiled.get(src.index);
    if (!p) {
      p = compileStageBody(src);
      compiled.set(src.index, p);
    }
    return p;
  };

  const makeContext = (node: InstructionNode, src: StageSource, current: () => StageState, fixedWhere?: Where): InstructionContext => ({
    node,
    where: fixedWhere ?? where(node),
    escape,
    values,
    context: () => contextVertex,
    stage: async (ref) => {
      const s = findStage(ref);
      if (!s) return undefined;
      if (s.index > src.index) throw locatedError('STAGE_ORDER', `Stage "${ref}" is defined after the stage that uses it`, fixedWhere ?? where(node));
      return s.index === src.index ? current() : compileStage(s);
    },
    resolveImage: async (ref) => {
      const img = await resolve(ref, req.platform);
      return { ref: img.ref, config: img.config, vertex: imageVertex(img, req.platform, `[internal] load metadata for ${ref}`) };
    },
    warn: (message, rule) => {
      const loc = locate(fixedWhere ?? where(node));
      if (rule) lint.report(rule, message, loc);
      else lint.plain(message, loc);
    },
  });

  const compileStageBody = async (src: StageSource): Promise<StageState> => {
    const fromWhere = where(src.from);
    const fromInfo = expandInfo(src.from.args[0]!, fromLookup, { where: fromWhere, escape });
    for (const name of fromInfo.unset) {
      if (!globals.has(name)) lint.report('UndefinedArgInFrom', `FROM argument "${name}" is not declared`, locate(fromWhere));
    }
    const imageRef = fromInfo.value;
    if (imageRef === '') throw locatedError('FROM_EMPTY', `FROM names an empty image (after expanding "${src.from.args[0]}")`, fromWhere);
    if (fromInfo.used.size + fromInfo.unset.size > 0) {
      const withDefaults = expandWith(src.from.args[0]!, (n) => (globalDefaults.has(n) ? globalDefaults.get(n) : automatic.get(n)), { where: fromWhere, escape });
      if (!/^[a-z0-9][\w.\-/:@]*[\w]$/i.test(withDefaults) || withDefaults.includes('::')) {
        lint.report('InvalidDefaultArgInFrom', `Default value for ARG ${src.from.args[0]} results in an empty or invalid base image name`, locate(fromWhere));
      }
    }
    const platform = fromPlatform(src.from, fromWhere, fromLookup, req.platform, (rule, message) => lint.report(rule, message, locate(fromWhere)));
    const display = stages.length === 1 && src.name === undefined ? '' : (src.name ?? `stage-${src.index}`);
    const steps = src.body.filter((n) => STEP_INSTRUCTIONS.has(n.name)).length;
    let base: { root: Vertex | undefined; image: ImageConfig; step: number; steps: number; history: StageState['history'] };
    const parentStage = findStage(imageRef);
    if (parentStage && parentStage.index < src.index) {
      const parent = await compileStage(parentStage);
      // A stage built on another carries that stage's new history entries along.
      base = { root: parent.root, image: structuredClone(parent.image), step: 1, steps: steps + 1, history: parent.history };
    } else if (imageRef.toLowerCase() === 'scratch') {
      base = { root: undefined, image: scratchConfig(platform), step: 0, steps, history: [] };
    } else {
      let img;
      try {
        img = await resolve(imageRef, platform);
      } catch (err) {
        if (err instanceof KilnError) throw locatedError(err.code, err.message.replace(/ at \S+:\d+$/, ''), fromWhere, { hint: err.hint, cause: err });
        throw err;
      }
      if (img.config.os !== platform.os || img.config.architecture !== platform.architecture) {
        const got = formatPlatform({ os: img.config.os, architecture: img.config.architecture, variant: img.config.variant });
        lint.report('InvalidBaseImagePlatform', `Base image ${imageRef} has platform "${got}", expected "${formatPlatform(platform)}" for this build`, locate(fromWhere));
      }
      const triggerSteps = (img.config.config.OnBuild ?? []).filter((t) => STEP_INSTRUCTIONS.has(t.trim().split(/\s/, 1)[0]!.toLowerCase())).length;
      const name = `[${display === '' ? '' : `${display} `}1/${steps + triggerSteps + 1}] FROM ${imageRef}`;
      base = { root: imageVertex(img, platform, name), image: structuredClone(img.config), step: 1, steps: steps + triggerSteps + 1, history: [] };
    }
    if (!(base.image.config.Env ?? []).some((e) => e.startsWith('PATH='))) {
      base.image.config.Env = withEnv(base.image.config.Env, 'PATH', DEFAULT_PATH);
    }
    const triggers = base.image.config.OnBuild ?? [];
    delete base.image.config.OnBuild;
    let state: StageState = {
      display,
      name: src.name,
      index: src.index,
      root: base.root,
      image: base.image,
      history: base.history,
      args: new Map(),
      step: base.step,
      steps: base.steps,
      cmdSet: false,
      platform,
    };
    for (const trigger of triggers) {
      const node = triggerNode(trigger, req.file, fromWhere);
      state = await compileInstruction(state, makeContext(node, src, () => state, fromWhere));
    }
    for (const node of src.body) state = await compileInstruction(state, makeContext(node, src, () => state));
    return state;
  };

  if (req.check) {
    for (const s of stages) await compileStage(s);
  }
  const final = await compileStage(target);
  if (!req.check) {
    const unused = Object.keys(req.buildArgs).filter((k) => !consumed.has(k) && !PROXY_ARGS.has(k) && !ENGINE_ARGS.has(k) && !automatic.has(k)).sort();
    if (unused.length > 0) lint.plain(`Build argument${unused.length > 1 ? 's' : ''} ${unused.map((u) => `"${u}"`).join(', ')} ${unused.length > 1 ? 'were' : 'was'} not consumed by any ARG`);
  }
  return { root: final.root, image: final.image, history: final.history, warnings: lint.warnings, ...(checkSettings.error ? { checkError: true } : {}) };
}

/** A FROM line's stage: its name and the checks on how it is written. */
function stageSource(node: InstructionNode, stages: readonly StageSource[], w: Where, report: (rule: RuleName, message: string) => void): StageSource {
  const args = node.args;
  let name: string | undefined;
  if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
    const written = args[2]!;
    name = written.toLowerCase();
    const from = node.original.trim().split(/\s/, 1)[0]!;
    const as = args[1]!;
    const fromUpper = from === from.toUpperCase();
    if ((fromUpper && as !== as.toUpperCase()) || (!fromUpper && as !== as.toLowerCase())) {
      report('FromAsCasing', `The "${as}" keyword is not written in the same case as "${from}"`);
    }
    if (written !== name) report('StageNameCasing', `Stage name "${written}" should be lowercase`);
    if (RESERVED_STAGE_NAMES.includes(name)) report('ReservedStageName', `Stage name "${name}" is reserved and should not be used`);
  } else if (args.length !== 1) {
    throw locatedError('FROM_ARGS', 'FROM takes an image and optionally "AS name"', w, { hint: 'Write FROM image [AS name]' });
  }
  if (name !== undefined) {
    if (!/^[a-z][a-z0-9-_.]*$/.test(name)) throw locatedError('STAGE_NAME', `Invalid stage name "${name}": use letters, digits, "-", "_" and "."`, w);
    const prior = stages.find((s) => s.name === name);
    if (prior) throw locatedError('STAGE_DUPLICATE', `Duplicate stage name "${name}", first used at line ${prior.from.startLine}`, w, { hint: 'Stage names must be unique (DuplicateStageName)' });
  }
  return { index: stages.length, name, from: node, body: [] };
}

/** FROM --platform: expanded with the global and automatic args; a constant value is reported. */
function fromPlatform(node: InstructionNode, w: Where, lookup: (n: string) => string | undefined, fallback: Platform, report: (rule: RuleName, message: string) => void): Platform {
  const flags = parseFlags(node, { platform: 'string' }, w);
  const raw = flags.get('platform') as string | undefined;
  if (raw === undefined) return fallback;
  if (!raw.includes('$')) report('FromPlatformFlagConstDisallowed', `FROM --platform should not use the constant value "${raw}"`);
  const value = expandWith(raw, lookup, { where: w, escape: '\\' });
  const platform = parsePlatform(value);
  if (!platform) throw locatedError('INVALID_PLATFORM', `Invalid platform "${value}" in FROM --platform: expected os/arch[/variant]`, w);
  return platform;
}

/** An ONBUILD trigger of a base image as an instruction, located at the FROM that runs it. */
function triggerNode(trigger: string, file: string, fromWhere: Where): InstructionNode {
  let node: InstructionNode | undefined;
  try {
    node = parseDockerfile(`${trigger}\n`, { file }).instructions[0];
  } catch (err) {
    if (err instanceof KilnError) throw locatedError('ONBUILD_INVALID', `Invalid ONBUILD trigger "${trigger}" in the base image: ${err.message}`, fromWhere, { cause: err });
    throw err;
  }
  if (!node || ['onbuild', 'from', 'maintainer'].includes(node.name) || !INSTRUCTIONS.includes(node.name.toUpperCase())) {
    throw locatedError('ONBUILD_INVALID', `Invalid ONBUILD trigger "${trigger}" in the base image`, fromWhere);
  }
  return node;
}

async function compileInstruction(state: StageState, ictx: InstructionContext): Promise<StageState> {
  switch (ictx.node.name) {
    case 'run': return compileRun(state, ictx);
    case 'copy': return compileCopy(state, ictx);
    case 'add': return compileAdd(state, ictx);
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
    case 'arg': return compileArg(state, ictx);
    case 'healthcheck': return compileHealthcheck(state, ictx);
    case 'onbuild': return compileOnbuild(state, ictx, INSTRUCTIONS);
    default:
      throw locatedError('UNSUPPORTED', `The ${ictx.node.name.toUpperCase()} instruction cannot be used here`, ictx.where);
  }
}

function scratchConfig(platform: Platform): ImageConfig {
  return {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {},
    rootfs: { type: 'layers', diff_ids: [] },
    history: [],
  };
}
