import type { ContainerConfig } from '../../../solver/graph.js';
import { locatedError } from '../errors.js';
import { expand } from '../expand.js';
import { looksSecret } from '../lint.js';
import { commandArgs } from './run.js';
import { addHistory, withEnv, type InstructionContext, type StageState } from '../state.js';

/** Instructions that change only the image config: each adds an empty-layer history entry. */

function setConfig(state: StageState, patch: Partial<ContainerConfig>, createdBy: string): StageState {
  const next = { ...state, image: { ...state.image, config: { ...state.image.config, ...patch } } };
  return addHistory(next, { created_by: createdBy });
}

/** Key/value pairs of ENV and LABEL as the parser gives them: triples `key value sep`. */
function pairs(state: StageState, ictx: InstructionContext): [string, string][] {
  const { node, where } = ictx;
  const args = node.args;
  if (args.length === 0 || args.length % 3 !== 0) {
    throw locatedError('MISSING_VALUE', `${node.name.toUpperCase()} needs at least one key=value pair`, where);
  }
  const out: [string, string][] = [];
  for (let i = 0; i < args.length; i += 3) {
    const key = expand(args[i]!, state, ictx);
    if (key === '') throw locatedError('MISSING_KEY', `${node.name.toUpperCase()} names an empty key`, where);
    out.push([key, expand(args[i + 1]!, state, ictx)]);
    if (args[i + 2] === '') {
      const kw = node.name.toUpperCase();
      ictx.warn(`"${kw} ${key}=value" should be used instead of the legacy "${kw} ${key} value" form`, 'LegacyKeyValueFormat');
    }
  }
  return out;
}

export function compileEnv(state: StageState, ictx: InstructionContext): StageState {
  let cur = state;
  const parts: string[] = [];
  // Each pair sees the ones before it on the same line, as in Docker.
  for (let i = 0; i < ictx.node.args.length; i += 3) {
    const [[key, value]] = pairs(cur, { ...ictx, node: { ...ictx.node, args: ictx.node.args.slice(i, i + 3) } });
    cur = { ...cur, image: { ...cur.image, config: { ...cur.image.config, Env: withEnv(cur.image.config.Env, key, value) } } };
    parts.push(`${key}=${value}`);
    if (looksSecret(key)) ictx.warn(`Do not pass sensitive data in ENV (ENV "${key}")`, 'SecretsUsedInArgOrEnv');
  }
  if (parts.length === 0) pairs(state, ictx);
  return addHistory(cur, { created_by: `ENV ${parts.join(' ')}` });
}

export function compileLabel(state: StageState, ictx: InstructionContext): StageState {
  const labels = { ...(state.image.config.Labels ?? {}) };
  const kv = pairs(state, ictx);
  for (const [k, v] of kv) labels[k] = v;
  return setConfig(state, { Labels: labels }, `LABEL ${kv.map(([k, v]) => `${k}=${v}`).join(' ')}`);
}

export function compileUser(state: StageState, ictx: InstructionContext): StageState {
  const user = expand(ictx.node.args[0] ?? '', state, ictx);
  if (user === '') throw locatedError('USER_EMPTY', 'USER needs a user name or id', ictx.where);
  return setConfig(state, { User: user }, `USER ${user}`);
}

function goQuoteList(args: readonly string[]): string {
  return `[${args.map((a) => JSON.stringify(a)).join(' ')}]`;
}

function recommendJson(ictx: InstructionContext): void {
  if (ictx.node.json) return;
  const kw = ictx.node.name.toUpperCase();
  ictx.warn(`JSON arguments recommended for ${kw} to prevent unintended behavior related to OS signals`, 'JSONArgsRecommended');
}

export function compileCmd(state: StageState, ictx: InstructionContext): StageState {
  recommendJson(ictx);
  const args = commandArgs(state, ictx);
  const next = setConfig(state, { Cmd: args }, `CMD ${goQuoteList(args)}`);
  return { ...next, cmdSet: true };
}

export function compileEntrypoint(state: StageState, ictx: InstructionContext): StageState {
  recommendJson(ictx);
  const args = commandArgs(state, ictx);
  // A new ENTRYPOINT drops a CMD inherited from the base image, as Docker does.
  const patch: Partial<ContainerConfig> = { Entrypoint: args };
  if (!state.cmdSet) patch.Cmd = null;
  return setConfig(state, patch, `ENTRYPOINT ${goQuoteList(args)}`);
}

export function compileShell(state: StageState, ictx: InstructionContext): StageState {
  if (!ictx.node.json || ictx.node.args.length === 0) {
    throw locatedError('SHELL_FORM', 'SHELL needs a JSON array, such as ["/bin/bash", "-c"]', ictx.where);
  }
  return setConfig(state, { Shell: [...ictx.node.args] }, `SHELL [${ictx.node.args.join(' ')}]`);
}

export function compileExpose(state: StageState, ictx: InstructionContext): StageState {
  const ports = { ...(state.image.config.ExposedPorts ?? {}) };
  const added: string[] = [];
  for (const raw of ictx.node.args) {
    const word = expand(raw, state, ictx);
    const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(word);
    if (!m) throw locatedError('INVALID_PORT', `Invalid port "${word}" in EXPOSE: expected PORT[/tcp|udp] or a range`, ictx.where);
    const proto = (m[3] ?? 'tcp').toLowerCase();
    const first = Number(m[1]);
    const last = m[2] === undefined ? first : Number(m[2]);
    if (first > 65535 || last > 65535 || last < first) throw locatedError('INVALID_PORT', `Invalid port range "${word}" in EXPOSE`, ictx.where);
    for (let p = first; p <= last; p++) {
      ports[`${p}/${proto}`] = {};
      added.push(`${p}/${proto}`);
    }
  }
  return setConfig(state, { ExposedPorts: ports }, `EXPOSE map[${added.map((p) => `${p}:{}`).join(' ')}]`);
}

export function compileVolume(state: StageState, ictx: InstructionContext): StageState {
  const volumes = { ...(state.image.config.Volumes ?? {}) };
  const added = ictx.node.args.map((a) => (ictx.node.json ? a : expand(a, state, ictx))).filter((v) => v !== '');
  if (added.length === 0) throw locatedError('VOLUME_EMPTY', 'VOLUME needs at least one path', ictx.where);
  for (const v of added) volumes[v] = {};
  return setConfig(state, { Volumes: volumes }, `VOLUME [${added.join(' ')}]`);
}

export function compileStopSignal(state: StageState, ictx: InstructionContext): StageState {
  const sig = expand(ictx.node.args[0] ?? '', state, ictx);
  if (!/^(SIG)?[A-Z0-9+-]+$|^\d+$/.test(sig)) throw locatedError('INVALID_SIGNAL', `Invalid signal "${sig}" in STOPSIGNAL`, ictx.where);
  return setConfig(state, { StopSignal: sig }, `STOPSIGNAL ${sig}`);
}

export function compileMaintainer(state: StageState, ictx: InstructionContext): StageState {
  ictx.warn('The MAINTAINER instruction is deprecated, use a label instead to define an image author', 'MaintainerDeprecated');
  const author = ictx.node.args[0] ?? '';
  const next = { ...state, image: { ...state.image, author } };
  return addHistory(next, { created_by: `MAINTAINER ${author}` });
}

/** ARG inside a stage: declares names visible to later instructions and to RUN's environment. */
export function compileArg(state: StageState, ictx: InstructionContext): StageState {
  const { buildArgs, globals, automatic, consumed } = ictx.values;
  const args = new Map(state.args);
  const parts: string[] = [];
  if (ictx.node.args.length === 0) throw locatedError('INVALID_ARG', 'ARG needs a name, as in ARG VERSION=1', ictx.where);
  for (const raw of ictx.node.args) {
    const eq = raw.indexOf('=');
    const name = eq < 0 ? raw : raw.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw locatedError('INVALID_ARG', `Invalid ARG name "${name}"`, ictx.where);
    if (looksSecret(name)) ictx.warn(`Do not pass sensitive data in ARG (ARG "${name}")`, 'SecretsUsedInArgOrEnv');
    let def: string | undefined;
    if (eq >= 0) def = expand(raw.slice(eq + 1), { ...state, args }, ictx);
    else if (globals.has(name)) def = globals.get(name);
    else def = automatic.get(name);
    const given = Object.hasOwn(buildArgs, name);
    if (given) consumed.add(name);
    const value = given && !automatic.has(name) ? buildArgs[name] : def;
    args.set(name, value);
    parts.push(value === undefined ? name : `${name}=${value}`);
  }
  return addHistory({ ...state, args }, { created_by: `ARG ${parts.join(' ')}` });
}
