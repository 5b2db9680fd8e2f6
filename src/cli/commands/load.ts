import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { KilnError } from '../../../cache/errors.js';
import { isErrno } from '../../../cache/fsutil.js';
import { Engine } from '../../engine.js';
import { loadArchive } from '../../image/archive.js';
import { DEFAULT_PLATFORM } from '../../image/platform.js';
import { familiarName } from '../../image/reference.js';
import type { CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'load',
  usage: 'kiln load [-i FILE]',
  description: 'Load images from a docker archive or an OCI layout archive (plain or gzip).',
  minPositionals: 0,
  maxPositionals: 0,
  options: [
    { name: 'input', short: 'i', type: 'string', placeholder: 'FILE', description: 'Read from FILE instead of standard input' },
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print nothing' },
  ],
};

async function openInput(path: string): Promise<Readable> {
  if (path === '-') return process.stdin;
  const stream = createReadStream(path);
  await new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve());
    stream.once('error', (err) => reject(new KilnError('FILE_MISSING', `Cannot read "${path}": ${isErrno(err, 'ENOENT') ? 'no such file' : err.message}`)));
  });
  return stream;
}

export const loadCommand: Command = {
  spec,
  async run({ options }, io) {
    const input = await openInput((options.input as string | undefined) ?? '-');
    let loaded: { id: string; names: string[] }[];
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      loaded = await new KilnClient(io.host).sendStream<{ id: string; names: string[] }[]>('/load', input, io.signal);
    } else {
      const engine = await Engine.open();
      try {
        loaded = (await loadArchive(engine.store, input, { platform: DEFAULT_PLATFORM, signal: io.signal })).map((l) => ({ id: l.image.configDigest, names: l.names }));
      } finally {
        engine.close();
      }
    }
    if (options.quiet !== true) {
      for (const l of loaded) {
        if (l.names.length === 0) io.stdout(`Loaded image ID: ${l.id}\n`);
        for (const n of l.names) io.stdout(`Loaded image: ${familiarName(n)}\n`);
      }
    }
    return 0;
  },
};
