import { Engine } from '../../engine.js';
import { getImage } from '../../image/local.js';
import type { CommandSpec } from '../args.js';
import { humanSize, table, timeAgo } from '../format.js';
import type { Command } from '../main.js';
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
    if (io.host) return (await import('../../daemon/remote-image-commands.js')).remoteHistory(io.host, { options, positionals }, io);
    const engine = await Engine.open();
    try {
      const image = await getImage(engine.store, ref);
      const noTrunc = options['no-trunc'] === true;
      const id = noTrunc ? image.configDigest : image.configDigest.slice(7, 19);
      if (options.quiet) {
        io.stdout(`${id}\n`);
        return 0;
      }
      const history = image.config.history ?? [];
      // Entries that made a layer take the image's layers in order; the rest made none.
      let layer = 0;
      const rows = history.map((h) => {
        const size = h.empty_layer ? 0 : (image.layers[layer++]?.blobSize ?? 0);
        return { h, size };
      });
      const out = [['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT']];
      rows.reverse().forEach(({ h, size }, i) => {
        const by = (h.created_by ?? '').replace(/\s*\n\s*/g, ' ');
        out.push([
          i === 0 ? id : '<missing>',
          h.created ? timeAgo(Date.parse(h.created)) : 'N/A',
          noTrunc || by.length <= CREATED_BY_WIDTH ? by : `${by.slice(0, CREATED_BY_WIDTH - 1)}…`,
          humanSize(size),
          h.comment ?? '',
        ]);
      });
      io.stdout(table(out));
      return 0;
    } finally {
      engine.close();
    }
  },
};
