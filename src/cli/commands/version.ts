import { readFileSync } from 'node:fs';
import { run } from '../../../cache/exec.js';
import { defaultStoreRoot } from '../../../cache/store.js';
import type { Command } from '../main.js';

export const versionCommand: Command = {
  spec: { name: 'version', usage: 'kiln version', description: 'Show version information.', minPositionals: 0, maxPositionals: 0, options: [] },
  async run(_args, io) {
    const pkg = JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string };
    const runtime = process.env.KILN_RUNTIME ?? 'runc';
    const rv = await run(runtime, ['--version'], { allowFail: true }).catch(() => ({ stdout: 'not found', code: 1 }));
    io.stdout(`Kiln:     ${pkg.version}\nNode:     ${process.version}\nRuntime:  ${rv.stdout.split('\n')[0] || 'not found'}\nStore:    ${defaultStoreRoot()}\n`);
    return 0;
  },
};
