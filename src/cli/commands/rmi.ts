import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { removeImage } from '../../image/remove.js';
import { familiarName } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import type { Command, CommandIO } from '../main.js';
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
    const force = options.force === true;
    if (io.host) {
      const { remoteRemover } = await import('../../daemon/remote-image-commands.js');
      return removeEach(positionals, remoteRemover(io.host, force, io.signal), io);
    }
    const engine = await Engine.open();
    try {
      return await removeEach(
        positionals,
        async (ref) => {
          const r = await removeImage(engine.store, ref, { force });
          return [...r.untagged.map((t) => `Untagged: ${familiarName(t)}`), ...(r.deleted ? [`Deleted: ${r.deleted}`] : [])];
        },
        io,
      );
    } finally {
      engine.close();
    }
  },
};

/**
 * Removes each image in turn, printing docker's Untagged/Deleted lines. As docker does, every image
 * given is tried; the command fails if one could not go (a single image's error is its own).
 */
async function removeEach(refs: readonly string[], remove: (ref: string) => Promise<string[]>, io: CommandIO): Promise<number> {
  let failure: unknown;
  for (const ref of refs) {
    try {
      for (const line of await remove(ref)) io.stdout(`${line}\n`);
    } catch (err) {
      if (!(err instanceof KilnError) || refs.length === 1) throw err;
      io.stderr(`error: ${err.message}\n`);
      failure = err;
    }
  }
  if (failure) throw new KilnError('RMI_FAILED', 'Some images were not removed', { hint: (failure as KilnError).hint });
  return 0;
}
