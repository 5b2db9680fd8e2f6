import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { prepareExport, parseCompression, type ConvertOptions } from '../../image/convert.js';
import { getImage } from '../../image/local.js';
import { familiarName, familiarRepository, parseReference } from '../../image/reference.js';
import { pushImage } from '../../registry/push.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'push',
  usage: 'kiln push [OPTIONS] NAME[:TAG]',
  description: 'Push an image of the store to its registry: only blobs the repository lacks are sent.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the digest' },
    { name: 'compression', type: 'string', placeholder: 'gzip|zstd|uncompressed', description: 'Layer compression to push (default: as stored)' },
    { name: 'force-compression', type: 'bool', description: 'Recompress layers that already have that compression' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
  ],
};

export const pushCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const name = positionals[0]!;
    const ref = parseReference(name);
    const convert: ConvertOptions = {};
    try {
      if (options.compression !== undefined) convert.compression = parseCompression(options.compression as string);
    } catch (err) {
      throw usageError((err as Error).message, spec);
    }
    if (options['force-compression'] === true) convert.force = true;
    const quiet = options.quiet === true;
    const say = (s: string) => {
      if (!quiet) io.stdout(`${s}\n`);
    };
    const engine = await Engine.open();
    try {
      const image = await getImage(engine.store, name).catch((err: unknown) => {
        if (err instanceof KilnError && err.code === 'IMAGE_UNKNOWN') {
          throw new KilnError('IMAGE_UNKNOWN', `No such image "${name}" in the store`, { hint: `Name an image first with "kiln tag IMAGE ${name}"` });
        }
        throw err;
      });
      say(`The push refers to repository [${familiarRepository(ref)}]`);
      const prepared = await prepareExport(engine.store, image, { ...convert, persist: true, signal: io.signal });
      const result = await pushImage(engine.store, prepared.manifestDigest, [name], {
        signal: io.signal,
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
        onEvent: (e) => {
          if (e.type !== 'blob' || e.digest === prepared.configDigest) return;
          const id = e.digest.slice(7, 19);
          if (e.status === 'exists') say(`${id}: Layer already exists`);
          else if (e.status === 'mounted') say(`${id}: Mounted from another repository`);
          else if (e.status === 'pushed') say(`${id}: Pushed`);
        },
      });
      if (quiet) io.stdout(`${result.digest}\n`);
      else say(`${ref.digest ? familiarName(name) : ref.tag}: digest: ${result.digest} size: ${prepared.manifestBytes.byteLength}`);
      return 0;
    } finally {
      engine.close();
    }
  },
};
