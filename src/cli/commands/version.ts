import { readFileSync } from 'node:fs';
import { arch } from 'node:os';
import { run } from '../../../cache/exec.js';
import { defaultStoreRoot } from '../../../cache/store.js';
import { configuredRuntime } from '../../config.js';
import { API_VERSION } from '../../daemon/wire.js';
import type { CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'version',
  usage: 'kiln version [OPTIONS]',
  description: 'Show the versions of Kiln, its build service API, Node and the OCI runtime, and where the store is.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [{ name: 'format', short: 'f', type: 'string', placeholder: 'FORMAT', choices: ['text', 'json'], description: 'text (default) or json' }],
  examples: ['kiln version', 'kiln version --format json'],
};

/** The runtime's first line of `--version` (`runc version 1.1.5`), or why there is none. */
export async function runtimeVersion(runtime: string): Promise<string> {
  try {
    const r = await run(runtime, ['--version'], { allowFail: true });
    return r.code === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : `${runtime}: not working (exit code ${r.code})`;
  } catch (err) {
    // A runtime that cannot start is what this line reports.
    return `${runtime}: not found (${(err as Error).message})`;
  }
}

export const versionCommand: Command = {
  spec,
  async run({ options }, io) {
    const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string };
    const runtime = configuredRuntime();
    const info = {
      client: { version: pkg.version, apiVersion: API_VERSION, node: process.version, os: process.platform, arch: arch() === 'x64' ? 'amd64' : arch() },
      engine: io.host
        ? await (await import('../../daemon/remote-image-commands.js')).remoteEngineVersion(io.host, io.signal)
        : { runtime, runtimeVersion: await runtimeVersion(runtime), store: defaultStoreRoot() },
    };
    if (options.format === 'json') {
      io.stdout(`${JSON.stringify(info)}\n`);
      return 0;
    }
    io.stdout(
      [
        'Client:',
        ` Version:      ${info.client.version}`,
        ` API version:  ${info.client.apiVersion}`,
        ` Node:         ${info.client.node}`,
        ` OS/Arch:      ${info.client.os}/${info.client.arch}`,
        '',
        'Engine:',
        ` Runtime:      ${info.engine.runtimeVersion}`,
        ` Store:        ${info.engine.store}`,
        '',
      ].join('\n'),
    );
    return 0;
  },
};
