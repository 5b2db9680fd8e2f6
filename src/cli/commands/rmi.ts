import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { removeImage } from '../../image/remove.js';
import { familiarName } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import { checkImageArg } from '../refs.js';

const spec: CommandSpec = {
  name: 'rmi',
  usage: 'kiln rmi [OPTIONS] IMAGE [IMAGE...]',
  description:
    'Remove images from the store. A name removes that tag, and the image with its last tag; an ID removes the image. ' +
    'An image that tags still name (given by ID) or that other images were built on is kept unless -f. ' +
    'Its layers stay while an image or the build cache needs them; "kiln prune" frees the rest.',
  minPositionals: 1,
  maxPositionals: Infinity,
  options: [{ name: 'force', short: 'f', type: 'bool', description: 'Remove the image even when tags name it or images are built on it' }],
  examples: ['kiln rmi app:1', 'kiln rmi -f 3f2a9c1b7d4e', 'kiln rmi $(kiln images -q)'],
};

export const rmiCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    for (const p of positionals) checkImageArg(p);
    if (io.host) return (await import('../../daemon/remote-image-commands.js')).remoteRmi(io.host, { options, positionals }, io);
    const engine = await Engine.open();
    try {
      let failure: unknown;
      for (const ref of positionals) {
        try {
          const r = await removeImage(engine.store, ref, { force: options.force === true });
          for (const t of r.untagged) io.stdout(`Untagged: ${familiarName(t)}\n`);
          if (r.deleted) io.stdout(`Deleted: ${r.deleted}\n`);
        } catch (err) {
          // As docker does: every image given is tried; the command fails if one could not go.
          if (!(err instanceof KilnError) || positionals.length === 1) throw err;
          io.stderr(`error: ${err.message}\n`);
          failure = err;
        }
      }
      if (failure) throw new KilnError('RMI_FAILED', 'Some images were not removed', { hint: (failure as KilnError).hint });
      return 0;
    } finally {
      engine.close();
    }
  },
};
