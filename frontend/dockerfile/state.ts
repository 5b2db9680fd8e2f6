import type { ImageConfig, PendingHistory, Platform, SourceLocation, Vertex } from '../../solver/graph.js';
import type { RunDefaults } from '../frontend.js';
import type { InstructionNode } from '../parser/index.js';
import type { Where } from './errors.js';
import type { RuleName } from './lint.js';

/** One stage while it compiles. Instructions return a new state; none is changed in place. */
export interface StageState {
  /** Name for display (`build`, `stage-1`, or '' for a lone unnamed stage). */
  display: string;
  /** The name given with AS, lowercased, if any. */
  name?: string;
  index: number;
  /** The current filesystem; undefined while it is empty (FROM scratch). */
  root: Vertex | undefined;
  image: ImageConfig;
  history: PendingHistory[];
  /** ARGs declared in this stage, with their values (undefined when declared without one). */
  args: ReadonlyMap<string, string | undefined>;
  /** Steps so far and in all, for `[stage i/n]`. */
  step: number;
  steps: number;
  /** CMD was set in this stage (ENTRYPOINT then keeps it). */
  cmdSet: boolean;
  /** An absolute WORKDIR was set in this stage (a relative one after it is predictable). */
  workdirSet?: boolean;
  platform: Platform;
}

/** Values every instruction of a build may read; shared, never changed by an instruction. */
export interface BuildValues {
  buildArgs: Readonly<Record<string, string>>;
  /** Global ARGs (before the first FROM) with their values. */
  globals: ReadonlyMap<string, string | undefined>;
  /** TARGETPLATFORM and friends, filled in when a stage declares them. */
  automatic: ReadonlyMap<string, string>;
  stageNames: readonly string[];
  /** .dockerignore patterns of the context, for the CopyIgnoredFile check. */
  contextExclude: readonly string[];
  /** Build args some ARG consumed; the rest are reported as unused. */
  consumed: Set<string>;
  /** The request's settings for every RUN step. */
  runDefaults?: RunDefaults;
  /** Whether ADD may read a git repository of the building machine (FrontendRequest.hostSources). */
  hostSources: boolean;
}

/** What every instruction handler gets besides the state. */
export interface InstructionContext {
  node: InstructionNode;
  where: Where;
  escape: '\\' | '`';
  values: BuildValues;
  /** The shared build context vertex. */
  context(): Vertex;
  /** A stage's final state by name or index, compiling it if needed; or undefined. */
  stage(ref: string): Promise<StageState | undefined>;
  resolveImage(ref: string): Promise<{ vertex: Vertex | undefined; config: ImageConfig; ref: string }>;
  warn(message: string, rule?: RuleName): void;
}

/** The value a variable has for expansion in this stage: ENV wins over ARG. */
export function lookupVar(state: StageState, name: string): string | undefined {
  const env = state.image.config.Env ?? [];
  for (let i = env.length - 1; i >= 0; i--) {
    const e = env[i]!;
    const eq = e.indexOf('=');
    if ((eq < 0 ? e : e.slice(0, eq)) === name) return eq < 0 ? '' : e.slice(eq + 1);
  }
  return state.args.get(name);
}

/** `[build 3/5] RUN make` */
export function stepName(state: StageState, original: string): string {
  const prefix = state.display === '' ? '' : `${state.display} `;
  return `[${prefix}${state.step}/${state.steps}] ${original}`;
}

/** The location of an instruction, for vertex metadata. */
export function stepLocation(where: Where): SourceLocation {
  return { file: where.file, line: where.line, column: 1, text: where.lines[where.line - 1] };
}

export function withEnv(env: readonly string[] | undefined, key: string, value: string): string[] {
  const out = (env ?? []).filter((e) => e.split('=', 1)[0] !== key);
  out.push(`${key}=${value}`);
  return out;
}

/** A copy of the state with one more history entry. */
export function addHistory(state: StageState, entry: PendingHistory): StageState {
  return { ...state, history: [...state.history, entry] };
}
