import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { DEFAULT_PLATFORM, parsePlatform } from '../../image/platform.js';
import { familiarName, parseReference } from '../../image/reference.js';
import { pullImage } from '../../registry/pull.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command, CommandIO } from '../main.js';
import { openProgressView, PROGRESS_MODES, transferOutput } from '../progress.js';

const spec: CommandSpec = {
  name: 'pull',
  usage: 'kiln pull [OPTIONS] NAME[:TAG|@DIGEST]',
  description: 'Pull an image from a registry into the store. Layers are unpacked only when a build or run needs them.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'platform', type: 'string', placeholder: 'OS/ARCH[/VARIANT]', description: 'Platform to choose from a multi-platform image (default linux/amd64)' },
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the image name' },
    { name: 'progress', type: 'string', placeholder: 'MODE', choices: PROGRESS_MODES, description: 'Bytes of each layer on stderr: auto (tty on a terminal, else plain), tty, plain, rawjson or quiet' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
  ],
};

const short = (d: string) => d.slice(7, 19);

export const pullCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const input = positionals[0]!;
    parseReference(input);
    let platform = DEFAULT_PLATFORM;
    if (options.platform !== undefined) {
      try {
        platform = parsePlatform(options.platform as string);
      } catch (err) {
        throw usageError((err as Error).message, spec);
      }
    }
    const insecureRegistries = (options['insecure-registry'] as string[] | undefined) ?? [];
    if (io.host) {
      const { remotePullSource } = await import('../../daemon/remote-image-commands.js');
      return presentPull(input, options, io, remotePullSource(io.host, { name: input, platform: options.platform as string | undefined, insecureRegistries }, io.signal));
    }
    let engine: Engine | undefined;
    try {
      return await presentPull(input, options, io, async (h) => {
        engine = await Engine.open();
        const result = await pullImage(engine.store, input, { platform, signal: io.signal, insecureRegistries, onEvent: h.onEvent, onTransfer: h.onTransfer });
        return { name: result.name, digest: result.digest, downloaded: result.downloaded, config: result.image.configDigest };
      });
    } finally {
      engine?.close();
    }
  },
};

/** A pull, run by this process or by a build service, reporting as it goes. */
export type PullSource = (h: {
  onEvent(e: { type: string; status?: string; digest: string }): void;
  onTransfer(t: { name: string; current: number; total: number; done?: boolean }): void;
}) => Promise<{ name: string; digest: string; downloaded: number; config: string }>;

/** docker pull's lines on stdout, the transfer view on stderr and the stored name last, whichever process pulls. */
async function presentPull(input: string, options: Record<string, unknown>, io: CommandIO, source: PullSource): Promise<number> {
  const ref = parseReference(input);
  const { mode, say, sayLayer } = transferOutput(options, io.stdout);
  say(`${ref.digest ?? ref.tag}: Pulling from ${familiarName(`${ref.domain}/${ref.path}`)}`);
  const view = await openProgressView(mode, process.stderr, { activity: { running: 'Pulling', done: 'Pulled' } });
  const id = 1;
  view.handle({ type: 'vertex.start', id, name: `pulling ${input}`, time: Date.now() });
  const started = Date.now();
  try {
    const result = await source({
      onEvent: (e) => {
        if (e.type !== 'layer') return;
        if (e.status === 'exists') sayLayer(`${short(e.digest)}: Already exists`);
        else if (e.status === 'done') sayLayer(`${short(e.digest)}: Pull complete`);
      },
      onTransfer: (t) => view.handle({ type: 'transfer', id, ...t, time: Date.now() }),
    });
    view.handle({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - started });
    await view.succeed({ imageId: result.config, tags: [result.name], summary: `Pulled ${result.name}` });
    say(`Digest: ${result.digest}`);
    say(`Status: ${result.downloaded > 0 ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(result.name)}`);
    io.stdout(`${result.name}\n`);
    return 0;
  } catch (err) {
    view.handle({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - started, message: err instanceof Error ? err.message : String(err) });
    // The view reports the failure in its own form (a paragraph, or a JSON event in rawjson).
    await view.fail(err);
    return err instanceof KilnError ? err.exitCode : 1;
  }
}
