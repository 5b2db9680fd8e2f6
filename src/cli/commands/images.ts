import { Engine } from '../../engine.js';
import { familiarRepository, parseReference } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import { humanSize, table, timeAgo } from '../format.js';
import type { Command } from '../main.js';
import { listImages, type ImageSummary } from '../../daemon/images.js';

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
    let images: ImageSummary[];
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      images = await new KilnClient(io.host).images(io.signal);
    } else {
      const engine = await Engine.open();
      try {
        images = listImages(engine.store);
      } finally {
        engine.close();
      }
    }
    const id = (config: string) => (options['no-trunc'] ? config : config.slice(7, 19));
    const tagged: string[][] = [];
    for (const img of images) {
      for (const name of img.names) {
        const ref = parseReference(name);
        tagged.push([name, familiarRepository(ref), ref.tag ?? '<none>', id(img.id), timeAgo(img.created), humanSize(img.size)]);
      }
    }
    // Names in order, then the untagged images.
    tagged.sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0));
    const rows = tagged.map((t) => t.slice(1));
    for (const img of images) if (img.names.length === 0) rows.push(['<none>', '<none>', id(img.id), timeAgo(img.created), humanSize(img.size)]);
    if (options.quiet) io.stdout([...new Set(rows.map((r) => r[2]))].map((r) => `${r}\n`).join(''));
    else io.stdout(table([['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], ...rows]));
    return 0;
  },
};
