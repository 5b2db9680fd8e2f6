import { KilnError } from '../../../cache/errors.js';
import { unmount } from '../../../cache/overlay.js';
import { Engine } from '../../engine.js';
import { resolveUser } from '../../executor/user.js';
import { secureJoin } from '../../fsutil/securejoin.js';
import { getImage } from '../../image/local.js';
import { mountLayers } from '../../worker/mount.js';
import { mkdir } from 'node:fs/promises';
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
          { args, env, cwd, user, network: network === 'none' ? 'none' : 'host' },
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
