import { Engine } from '../../engine.js';
import { getImage, tagImage } from '../../image/local.js';
import { parseReference } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'tag',
  usage: 'kiln tag SOURCE TARGET',
  description: 'Give an image of the store another name.',
  minPositionals: 2,
  maxPositionals: 2,
  options: [],
};

export const tagCommand: Command = {
  spec,
  async run({ positionals }, io) {
    const [source, target] = positionals as [string, string];
    parseReference(target);
    if (io.host) return (await import('../../daemon/remote-image-commands.js')).remoteTag(io.host, { options: {}, positionals }, io);
    const engine = await Engine.open();
    try {
      tagImage(engine.store, await getImage(engine.store, source), [target]);
      return 0;
    } finally {
      engine.close();
    }
  },
};
