import { Engine } from '../../engine.js';
import { familiarRepository, parseReference } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import { humanSize, table, timeAgo } from '../format.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'images',
  usage: 'kiln images [OPTIONS]',
  description: 'List the images in the store: tagged ones, then untagged (<none>) ones.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only image IDs' },
    { name: 'no-trunc', type: 'bool', description: 'Print full image IDs' },
  ],
};

export const imagesCommand: Command = {
  spec,
  async run({ options }, io) {
    if (io.host) return (await import('../../daemon/remote-commands.js')).remoteImages(io.host, { options, positionals: [] }, io);
    const engine = await Engine.open();
    try {
      const manifests = new Map(engine.store.db.allManifests().map((m) => [m.digest, m]));
      const tagged = new Set<string>();
      const rows: string[][] = [];
      const id = (config: string) => (options['no-trunc'] ? config : config.slice(7, 19));
      for (const t of engine.store.db.allTags()) {
        const m = manifests.get(t.manifest);
        if (!m) continue;
        tagged.add(m.digest);
        const ref = parseReference(t.name);
        rows.push([familiarRepository(ref), ref.tag ?? '<none>', id(m.config), timeAgo(m.created), humanSize(m.size)]);
      }
      for (const m of manifests.values()) {
        if (!tagged.has(m.digest)) rows.push(['<none>', '<none>', id(m.config), timeAgo(m.created), humanSize(m.size)]);
      }
      if (options.quiet) {
        io.stdout([...new Set(rows.map((r) => r[2]))].map((r) => `${r}\n`).join(''));
      } else {
        io.stdout(table([['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], ...rows]));
      }
      return 0;
    } finally {
      engine.close();
    }
  },
};
