import { Engine } from '../../engine.js';
import { DEFAULT_PLATFORM, parsePlatform } from '../../image/platform.js';
import { familiarName, parseReference } from '../../image/reference.js';
import { pullImage } from '../../registry/pull.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'pull',
  usage: 'kiln pull [OPTIONS] NAME[:TAG|@DIGEST]',
  description: 'Pull an image from a registry into the store. Layers are unpacked only when a build or run needs them.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'platform', type: 'string', placeholder: 'OS/ARCH[/VARIANT]', description: 'Platform to choose from a multi-platform image (default linux/amd64)' },
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the image name' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
  ],
};

const short = (d: string) => d.slice(7, 19);

export const pullCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const input = positionals[0]!;
    const ref = parseReference(input);
    let platform = DEFAULT_PLATFORM;
    if (options.platform !== undefined) {
      try {
        platform = parsePlatform(options.platform as string);
      } catch (err) {
        throw usageError((err as Error).message, spec);
      }
    }
    const quiet = options.quiet === true;
    const say = (s: string) => {
      if (!quiet) io.stdout(`${s}\n`);
    };
    say(`${ref.digest ?? ref.tag}: Pulling from ${familiarName(`${ref.domain}/${ref.path}`)}`);
    const engine = await Engine.open();
    try {
      const result = await pullImage(engine.store, input, {
        platform,
        signal: io.signal,
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
        onEvent: (e) => {
          if (e.type !== 'layer') return;
          if (e.status === 'exists') say(`${short(e.digest)}: Already exists`);
          else if (e.status === 'done') say(`${short(e.digest)}: Pull complete`);
        },
      });
      say(`Digest: ${result.digest}`);
      say(`Status: ${result.downloaded > 0 ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(result.name)}`);
      io.stdout(`${result.name}\n`);
      return 0;
    } finally {
      engine.close();
    }
  },
};
