import { Engine } from '../../engine.js';
import { getImage } from '../../image/local.js';
import type { CommandSpec } from '../args.js';
import { humanSize, table, timeAgo } from '../format.js';
import type { Command } from '../main.js';
import { imageHistory } from '../../daemon/images.js';
import { checkImageArg } from '../refs.js';

const spec: CommandSpec = {
  name: 'history',
  usage: 'kiln history [OPTIONS] IMAGE',
  description: 'Show how an image was made, newest step first: each history entry, its age, the command and the size of its layer (compressed).',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'no-trunc', type: 'bool', description: 'Do not cut IDs and commands short' },
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the image ID' },
  ],
  examples: ['kiln history app:1', 'kiln history --no-trunc app:1'],
};

/** Commands are cut to this many characters in the table, as docker does. */
const CREATED_BY_WIDTH = 45;

export const historyCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const ref = positionals[0]!;
    checkImageArg(ref);
    let image: { id: string; history: ReturnType<typeof imageHistory> };
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      image = await new KilnClient(io.host).json<typeof image>('GET', `/images/${encodeURIComponent(ref)}`, undefined, io.signal);
    } else {
      const engine = await Engine.open();
      try {
        const local = await getImage(engine.store, ref);
        image = { id: local.configDigest, history: imageHistory(local) };
      } finally {
        engine.close();
      }
    }
    const noTrunc = options['no-trunc'] === true;
    const id = noTrunc ? image.id : image.id.slice(7, 19);
    if (options.quiet) {
      io.stdout(`${id}\n`);
      return 0;
    }
    const out = [['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT']];
    image.history.forEach((h, i) => {
      const by = h.createdBy.replace(/\s*\n\s*/g, ' ');
      out.push([
        i === 0 ? id : '<missing>',
        h.created ? timeAgo(h.created) : 'N/A',
        noTrunc || by.length <= CREATED_BY_WIDTH ? by : `${by.slice(0, CREATED_BY_WIDTH - 1)}…`,
        humanSize(h.size),
        h.comment,
      ]);
    });
    io.stdout(table(out));
    return 0;
  },
};
