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
import type { SpecMount } from '../../executor/executor.js';
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
    { name: 'network', type: 'string', placeholder: 'MODE', description: 'host (default) or none' },
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
      return await runContainer(options, positionals, io.signal);
    } catch (err) {
      if (err instanceof KilnError && err.exitCode !== 130) {
        throw new KilnError(err.code, err.message, { hint: err.hint, cause: err, exitCode: 125 });
      }
      throw err;
    }
  },
};

async function runContainer(options: Record<string, unknown>, positionals: string[], signal: AbortSignal): Promise<number> {
  const [ref, ...cmd] = positionals as [string, ...string[]];
  const network = (options.network as string | undefined) ?? 'host';
  if (network !== 'host' && network !== 'none' && network !== 'default') throw usageError(`Invalid --network "${network}": expected host or none`, spec);
  const volumes = await parseVolumes((options.volume as string[] | undefined) ?? []);
  const extraHosts = parseAddHosts((options['add-host'] as string[] | undefined) ?? [], spec);
  const ulimits = parseUlimits((options.ulimit as string[] | undefined) ?? [], spec);
  const shmSize = parseShmSize(options['shm-size'] as string | undefined, spec);
  const engine = await Engine.open();
  try {
    const image = await getImage(engine.store, ref);
    const c = image.config.config;
    const entrypoint = options.entrypoint !== undefined ? ((options.entrypoint as string) === '' ? [] : [options.entrypoint as string]) : (c.Entrypoint ?? []);
    const args = [...entrypoint, ...(cmd.length > 0 ? cmd : options.entrypoint !== undefined ? [] : (c.Cmd ?? []))];
    if (args.length === 0) throw new KilnError('NO_COMMAND', `No command specified: image "${ref}" has no CMD or ENTRYPOINT`, { hint: 'Give one after the image name' });
    const env = [...(c.Env ?? [])];
    for (const e of (options.env as string[] | undefined) ?? []) {
      const k = e.split('=', 1)[0]!;
      const value = e.includes('=') ? e : process.env[k] !== undefined ? `${k}=${process.env[k]}` : undefined;
      if (value === undefined) continue;
      const i = env.findIndex((x) => x.split('=', 1)[0] === k);
      if (i >= 0) env[i] = value;
      else env.push(value);
    }
    const cwd = (options.workdir as string | undefined) ?? (c.WorkingDir || '/');
    const ws = await engine.store.createWorkspace();
    try {
      await mountLayers(engine.store, image.layers, ws.mnt, ws, signal);
      try {
        await mkdir(await secureJoin(ws.mnt, cwd), { recursive: true });
        const user = await resolveUser(ws.mnt, (options.user as string | undefined) ?? c.User ?? '');
        return await engine.executor.run(
          { args, env, cwd, user, network: network === 'none' ? 'none' : 'host', mounts: volumes, extraHosts, ulimits, shmSize },
          { rootfs: ws.mnt, signal, stdin: !process.stdin.isTTY },
        );
      } finally {
        await unmount(ws.mnt);
      }
    } finally {
      await engine.store.disposeWorkspace(ws);
    }
  } finally {
    engine.close();
  }
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
