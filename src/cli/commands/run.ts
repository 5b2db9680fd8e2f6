import { KilnError } from '../../../cache/errors.js';
import { unmount } from '../../../cache/overlay.js';
import { Engine } from '../../engine.js';
import { resolveUser } from '../../executor/user.js';
import { secureJoin } from '../../fsutil/securejoin.js';
import { getImage } from '../../image/local.js';
import { mountLayers } from '../../worker/mount.js';
import { mkdir, stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { isErrno } from '../../../cache/fsutil.js';
import type { RunOptions, SpecMount } from '../../executor/executor.js';
import type { ExtraHost, Ulimit } from '../../../solver/graph.js';
import type { RemoteHost } from '../../daemon/client.js';
import { Readable } from 'node:stream';
import { parseAddHosts, parseShmSize, parseUlimits } from '../build-flags.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'run',
  usage: 'kiln run [OPTIONS] IMAGE [COMMAND [ARG...]]',
  description: 'Run a command in a new container from an image. The container\'s exit code passes through; Kiln\'s own failures exit 125.',
  minPositionals: 1,
  maxPositionals: Infinity,
  stopAtPositional: true,
  options: [
    { name: 'rm', type: 'bool', description: 'Remove the container when it exits (containers are never kept yet)' },
    { name: 'env', short: 'e', type: 'list', placeholder: 'K=V', description: 'Set an environment variable' },
    { name: 'workdir', short: 'w', type: 'string', placeholder: 'DIR', description: 'Working directory inside the container' },
    { name: 'user', short: 'u', type: 'string', placeholder: 'USER[:GROUP]', description: 'User to run as' },
    { name: 'network', type: 'string', placeholder: 'MODE', description: 'default (a network of its own, with outbound access), host or none' },
    { name: 'entrypoint', type: 'string', placeholder: 'CMD', description: 'Override the image\'s entrypoint' },
    { name: 'volume', short: 'v', type: 'list', placeholder: 'HOST:CTR[:ro]', description: 'Bind-mount a host file or directory into the container (repeatable)' },
    { name: 'add-host', type: 'list', placeholder: 'HOST:IP', description: 'Add a line to the container\'s /etc/hosts (repeatable)' },
    { name: 'ulimit', type: 'list', placeholder: 'NAME=SOFT[:HARD]', description: 'Resource limit, such as nofile=1024:2048 (repeatable)' },
    { name: 'shm-size', type: 'string', placeholder: 'SIZE', description: 'Size of /dev/shm (default 64m)' },
  ],
  examples: [
    'kiln run --rm app:1                               Run the image\'s command',
    'kiln run -v "$PWD/data:/data:ro" app:1 ls /data    A host directory, read-only',
    'kiln run --add-host db:10.0.0.5 --ulimit nofile=1024 app:1',
  ],
};

export const runCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    try {
      const request = await runRequest(options, positionals, io.host !== undefined);
      if (io.host) return await remoteRun(io.host, request, io.signal);
      const engine = await Engine.open();
      try {
        return await runImage(engine, request, { signal: io.signal, stdin: !process.stdin.isTTY });
      } finally {
        await engine.close();
      }
    } catch (err) {
      // A container the OOM killer ended exits as docker's does (137), with the reason said.
      if (err instanceof KilnError && err.exitCode !== 130 && err.code !== 'MEMORY_LIMIT') {
        throw new KilnError(err.code, err.message, { hint: err.hint, cause: err, exitCode: 125 });
      }
      throw err;
    }
  },
};

/**
 * What `kiln run` asks for, checked and resolved on the machine that typed it (`-e NAME` takes
 * this environment's value), so that a build service runs exactly what a local run would.
 */
export interface RunRequest {
  ref: string;
  cmd: string[];
  entrypoint?: string;
  /** `K=V` entries laid over the image's environment. */
  env: string[];
  workdir?: string;
  user?: string;
  network: 'default' | 'host' | 'none';
  extraHosts: ExtraHost[];
  ulimits: Ulimit[];
  shmSize?: number;
  /** Host paths to bind: never taken from a remote client. */
  mounts?: SpecMount[];
}

async function runRequest(options: Record<string, unknown>, positionals: string[], remote: boolean): Promise<RunRequest> {
  const [ref, ...cmd] = positionals as [string, ...string[]];
  const network = (options.network as string | undefined) ?? 'default';
  if (network !== 'host' && network !== 'none' && network !== 'default') throw usageError(`Invalid --network "${network}": expected default, host or none`, spec);
  const volumes = (options.volume as string[] | undefined) ?? [];
  if (remote && volumes.length > 0) {
    throw new KilnError('UNSUPPORTED', '"--volume" does not work against a build service (--host): the container runs on the server, which cannot see this machine\'s files', {
      hint: 'Put the files into the image with a build (COPY), or run "kiln run -v" on the server',
    });
  }
  const env: string[] = [];
  for (const e of (options.env as string[] | undefined) ?? []) {
    const k = e.split('=', 1)[0]!;
    const value = e.includes('=') ? e : process.env[k] !== undefined ? `${k}=${process.env[k]}` : undefined;
    if (value !== undefined) env.push(value);
  }
  return {
    ref,
    cmd,
    entrypoint: options.entrypoint as string | undefined,
    env,
    workdir: options.workdir as string | undefined,
    user: options.user as string | undefined,
    network,
    extraHosts: parseAddHosts((options['add-host'] as string[] | undefined) ?? [], spec),
    ulimits: parseUlimits((options.ulimit as string[] | undefined) ?? [], spec),
    shmSize: parseShmSize(options['shm-size'] as string | undefined, spec),
    mounts: remote ? undefined : await parseVolumes(volumes),
  };
}

/** Runs one container from a stored image to its end and returns its exit code (`kiln run`, and the server's `/v1/run`). */
export async function runImage(engine: Engine, r: RunRequest, io: Pick<RunOptions, 'signal' | 'stdin' | 'onStdout' | 'onStderr'>): Promise<number> {
  const image = await getImage(engine.store, r.ref);
  const c = image.config.config;
  const entrypoint = r.entrypoint !== undefined ? (r.entrypoint === '' ? [] : [r.entrypoint]) : (c.Entrypoint ?? []);
  const args = [...entrypoint, ...(r.cmd.length > 0 ? r.cmd : r.entrypoint !== undefined ? [] : (c.Cmd ?? []))];
  if (args.length === 0) throw new KilnError('NO_COMMAND', `No command specified: image "${r.ref}" has no CMD or ENTRYPOINT`, { hint: 'Give one after the image name' });
  const env = [...(c.Env ?? [])];
  for (const value of r.env) {
    const k = value.split('=', 1)[0]!;
    const i = env.findIndex((x) => x.split('=', 1)[0] === k);
    if (i >= 0) env[i] = value;
    else env.push(value);
  }
  const cwd = r.workdir ?? (c.WorkingDir || '/');
  const ws = await engine.store.createWorkspace();
  try {
    await mountLayers(engine.store, image.layers, ws.mnt, ws, io.signal);
    try {
      await mkdir(await secureJoin(ws.mnt, cwd), { recursive: true });
      const user = await resolveUser(ws.mnt, r.user ?? c.User ?? '');
      return await engine.executor.run(
        { args, env, cwd, user, network: r.network, mounts: r.mounts ?? [], extraHosts: r.extraHosts, ulimits: r.ulimits, shmSize: r.shmSize },
        { rootfs: ws.mnt, ...io },
      );
    } finally {
      await unmount(ws.mnt);
    }
  } finally {
    await engine.store.disposeWorkspace(ws);
  }
}

/**
 * The container runs on the build service; its output comes back as it is written and this
 * process's standard input (unless a terminal, as locally) goes up to it.
 */
async function remoteRun(host: RemoteHost, request: RunRequest, signal: AbortSignal): Promise<number> {
  const { KilnClient, readLines } = await import('../../daemon/client.js');
  const { fromWireError } = await import('../../daemon/wire.js');
  const stdin = !process.stdin.isTTY;
  const body = Readable.from(
    (async function* () {
      yield Buffer.from(`${JSON.stringify({ ...request, stdin })}\n`);
      if (stdin) yield* process.stdin;
    })(),
  );
  try {
    const res = await new KilnClient(host).request('POST', '/run', { body, signal });
    for await (const e of readLines<RunStreamEvent>(res)) {
      if (e.type === 'stdout') await writeOut(process.stdout, Buffer.from(e.data, 'base64'));
      else if (e.type === 'stderr') await writeOut(process.stderr, Buffer.from(e.data, 'base64'));
      else if (e.type === 'exit') return e.code;
      else if (e.type === 'error') throw fromWireError(e.error);
    }
    throw new KilnError('SERVER_ERROR', `The build service at "${host.url}" ended the run without an exit code`);
  } finally {
    // Input the container did not read stays unread, as it would locally.
    body.destroy();
    if (stdin) process.stdin.destroy();
  }
}

export type RunStreamEvent =
  | { type: 'stdout' | 'stderr'; data: string }
  | { type: 'exit'; code: number }
  | { type: 'error'; error: import('../../daemon/wire.js').WireError };

function writeOut(stream: NodeJS.WriteStream, chunk: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (stream.write(chunk)) resolve();
    else stream.once('drain', resolve);
  });
}

/** `-v HOST:CTR[:ro|rw]`: a bind mount of an existing host path at an absolute container path. */
async function parseVolumes(values: readonly string[]): Promise<SpecMount[]> {
  const mounts: SpecMount[] = [];
  for (const v of values) {
    const parts = v.split(':');
    const mode = parts.length === 3 ? parts[2] : 'rw';
    if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1] || (mode !== 'ro' && mode !== 'rw')) {
      throw usageError(`Invalid --volume "${v}": expected HOST:CONTAINER[:ro|rw]`, spec);
    }
    if (!isAbsolute(parts[1])) throw usageError(`Invalid --volume "${v}": the container path "${parts[1]}" is not absolute`, spec);
    const source = resolve(parts[0]);
    try {
      await stat(source);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      throw new KilnError('VOLUME_SOURCE_MISSING', `Cannot bind-mount "${source}": no such file or directory`, { hint: 'Create it first: Kiln does not make host directories' });
    }
    mounts.push({ destination: parts[1], type: 'bind', source, options: ['rbind', mode] });
  }
  return mounts;
}
