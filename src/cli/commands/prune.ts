import { createInterface } from 'node:readline/promises';
import { parseDuration, parseSize, prune, type PruneResult } from '../../../cache/gc.js';
import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { usageError, type CommandSpec } from '../args.js';
import { humanSize } from '../format.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'prune',
  usage: 'kiln prune [OPTIONS]',
  description: 'Remove build cache. Nothing a stored image needs is ever removed.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [
    { name: 'all', short: 'a', type: 'bool', description: 'Remove every cache record and unused cache mount, not only what no image shares' },
    { name: 'force', short: 'f', type: 'bool', description: 'Do not ask for confirmation' },
    { name: 'filter', type: 'list', placeholder: 'FILTER', description: 'until=DURATION: only what was last used longer ago (e.g. 24h)' },
    { name: 'keep-storage', type: 'string', placeholder: 'SIZE', description: 'Keep this much build cache (e.g. 5GB), removing least recently used first' },
  ],
};

export const pruneCommand: Command = {
  spec,
  async run({ options }, io) {
    let olderThanMs: number | undefined;
    for (const f of (options.filter as string[] | undefined) ?? []) {
      const m = /^until=(.+)$/.exec(f);
      if (!m) throw usageError(`Invalid --filter "${f}": expected until=DURATION`, spec);
      olderThanMs = parseDuration(m[1]!);
      if (Number.isNaN(olderThanMs)) throw usageError(`Invalid duration "${m[1]}" in --filter: expected e.g. 30m, 24h or 7d`, spec);
    }
    let keepBytes: number | undefined;
    if (options['keep-storage'] !== undefined) {
      keepBytes = parseSize(options['keep-storage'] as string);
      if (Number.isNaN(keepBytes)) throw usageError(`Invalid --keep-storage "${options['keep-storage']}": expected a size such as 512MB or 10GB`, spec);
    }
    const all = options.all === true;
    if (options.force !== true) {
      if (!process.stdin.isTTY) {
        throw new KilnError('CONFIRMATION_NEEDED', 'Refusing to prune without confirmation', { hint: 'Pass -f to prune without being asked', exitCode: 1 });
      }
      const what = all ? 'all build cache' : 'build cache no image uses';
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      const answer = await rl.question(`WARNING! This will remove ${what}.\nAre you sure you want to continue? [y/N] `);
      rl.close();
      if (!/^y(es)?$/i.test(answer.trim())) return 0;
    }
    let r: PruneResult;
    if (io.host) {
      // Asked above, on this terminal; the server only does what was confirmed.
      const { KilnClient } = await import('../../daemon/client.js');
      r = await new KilnClient(io.host).json<PruneResult>('POST', '/prune', { all, olderThanMs, keepBytes }, io.signal);
    } else {
      const engine = await Engine.open();
      try {
        r = await prune(engine.store, { all, olderThanMs, keepBytes });
      } finally {
        engine.close();
      }
    }
    if (r.removed.length > 0) io.stdout(`Deleted build cache objects:\n${r.removed.map((l) => `${l}\n`).join('')}\n`);
    io.stdout(`Total reclaimed space: ${humanSize(r.freed)}\n`);
    return 0;
  },
};
