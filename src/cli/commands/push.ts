import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { prepareExport, parseCompression, type ConvertOptions } from '../../image/convert.js';
import { getImage } from '../../image/local.js';
import { familiarName, familiarRepository, parseReference } from '../../image/reference.js';
import { pushImage } from '../../registry/push.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command, CommandIO } from '../main.js';
import { openProgressView, PROGRESS_MODES, transferOutput } from '../progress.js';

const spec: CommandSpec = {
  name: 'push',
  usage: 'kiln push [OPTIONS] NAME[:TAG]',
  description: 'Push an image of the store to its registry: only blobs the repository lacks are sent.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the digest' },
    { name: 'progress', type: 'string', placeholder: 'MODE', choices: PROGRESS_MODES, description: 'Bytes of each layer on stderr: auto (tty on a terminal, else plain), tty, plain, rawjson or quiet' },
    { name: 'compression', type: 'string', placeholder: 'gzip|zstd|uncompressed', description: 'Layer compression to push (default: as stored)' },
    { name: 'force-compression', type: 'bool', description: 'Recompress layers that already have that compression' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
  ],
};

/** What a push reports as it goes, from this process or from a build service. */
export interface PushHandlers {
  /** The config digest, known once the image is prepared: its blob is not shown as a layer. */
  onPrepared(config: string): void;
  onBlob(e: { type: string; status?: string; digest: string }): void;
  onTransfer(t: { name: string; current: number; total: number; done?: boolean }): void;
}

export interface PushOutcome {
  digest: string;
  /** Bytes of the manifest pushed. */
  size: number;
  config: string;
  names: string[];
}

/**
 * Where a push runs. `open` finds the image, so that an unknown one fails before anything is
 * printed; `push` then does the work and reports it.
 */
export interface PushSource {
  open(): Promise<{ push(h: PushHandlers): Promise<PushOutcome> }>;
}

export const pushCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const name = positionals[0]!;
    parseReference(name);
    const convert: ConvertOptions = {};
    try {
      if (options.compression !== undefined) convert.compression = parseCompression(options.compression as string);
    } catch (err) {
      throw usageError((err as Error).message, spec);
    }
    if (options['force-compression'] === true) convert.force = true;
    const insecureRegistries = (options['insecure-registry'] as string[] | undefined) ?? [];
    if (io.host) {
      const { remotePushSource } = await import('../../daemon/remote-image-commands.js');
      const source = remotePushSource(io.host, { name, insecureRegistries, compression: options.compression as string | undefined, forceCompression: convert.force === true }, io.signal);
      return presentPush(name, options, io, source);
    }
    const engine = await Engine.open();
    try {
      return await presentPush(name, options, io, {
        async open() {
          const image = await getImage(engine.store, name);
          return {
            async push(h) {
              const prepared = await prepareExport(engine.store, image, { ...convert, persist: true, signal: io.signal });
              h.onPrepared(prepared.configDigest);
              const result = await pushImage(engine.store, prepared.manifestDigest, [name], { signal: io.signal, insecureRegistries, onEvent: h.onBlob, onTransfer: h.onTransfer });
              return { digest: result.digest, size: prepared.manifestBytes.byteLength, config: prepared.configDigest, names: result.names };
            },
          };
        },
      });
    } finally {
      engine.close();
    }
  },
};

/** docker push's lines on stdout and the transfer view on stderr, whichever process pushes. */
async function presentPush(name: string, options: Record<string, unknown>, io: CommandIO, source: PushSource): Promise<number> {
  const ref = parseReference(name);
  const { quiet, mode, say, sayLayer } = transferOutput(options, io.stdout);
  const opened = await source.open().catch((err: unknown) => {
    if (err instanceof KilnError && err.code === 'IMAGE_UNKNOWN') {
      throw new KilnError('IMAGE_UNKNOWN', `No such image "${name}" in the store`, { hint: `Name an image first with "kiln tag IMAGE ${name}"` });
    }
    throw err;
  });
  say(`The push refers to repository [${familiarRepository(ref)}]`);
  const view = await openProgressView(mode, process.stderr, { activity: { running: 'Pushing', done: 'Pushed' } });
  const id = 1;
  const started = Date.now();
  view.handle({ type: 'vertex.start', id, name: `pushing ${name}`, time: started });
  let config = '';
  try {
    const result = await opened.push({
      onPrepared: (c) => (config = c),
      onBlob: (e) => {
        if (e.type !== 'blob' || e.digest === config) return;
        const short = e.digest.slice(7, 19);
        if (e.status === 'exists') sayLayer(`${short}: Layer already exists`);
        else if (e.status === 'mounted') sayLayer(`${short}: Mounted from another repository`);
        else if (e.status === 'pushed') sayLayer(`${short}: Pushed`);
      },
      onTransfer: (t) => {
        if (t.name !== config) view.handle({ type: 'transfer', id, ...t, time: Date.now() });
      },
    });
    view.handle({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - started });
    await view.succeed({ imageId: result.config, tags: result.names, summary: `Pushed ${result.names.join(', ')}` });
    if (quiet) io.stdout(`${result.digest}\n`);
    else say(`${ref.digest ? familiarName(name) : ref.tag}: digest: ${result.digest} size: ${result.size}`);
    return 0;
  } catch (err) {
    view.handle({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - started, message: err instanceof Error ? err.message : String(err) });
    // The view reports the failure in its own form (a paragraph, or a JSON event in rawjson).
    await view.fail(err);
    return err instanceof KilnError ? err.exitCode : 1;
  }
}
