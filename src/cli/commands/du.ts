import { diskUsage, type Usage } from '../../../cache/gc.js';
import { Engine } from '../../engine.js';
import type { CommandSpec } from '../args.js';
import { humanSize, table, timeAgo } from '../format.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'du',
  usage: 'kiln du [OPTIONS]',
  description: 'Show what the build cache holds: records and cache mounts with their size, last use, and what pruning would free.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [{ name: 'verbose', short: 'v', type: 'bool', description: 'Full record IDs' }],
};

export const duCommand: Command = {
  spec,
  async run({ options }, io) {
    let usage: Usage;
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      usage = await new KilnClient(io.host).json<Usage>('GET', '/du', undefined, io.signal);
    } else {
      const engine = await Engine.open();
      try {
        usage = await diskUsage(engine.store);
      } finally {
        engine.close();
      }
    }
    const rows = [['ID', 'TYPE', 'SIZE', 'LAST USED', 'SHARED', 'RECLAIMABLE', 'DESCRIPTION']];
    for (const r of [...usage.records].sort((a, b) => b.lastUsed - a.lastUsed)) {
      const id = options.verbose ? r.id : r.id.replace(/^sha256:/, '').slice(0, 12);
      rows.push([id, r.type, humanSize(r.size), timeAgo(r.lastUsed), r.shared ? 'true' : 'false', r.reclaimable ? 'true' : 'false', `${r.description}${r.inUse ? ' (in use)' : ''}`]);
    }
    if (usage.records.length > 0) io.stdout(table(rows));
    io.stdout(table([
      ['Records:', String(usage.records.length)],
      ['Images:', humanSize(usage.images)],
      ['Reclaimable:', humanSize(usage.reclaimable)],
      ['Total:', humanSize(usage.total)],
    ]));
    return 0;
  },
};
