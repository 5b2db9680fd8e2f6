/**
 * `kiln tag`, `rmi`, `inspect`, `history`, `push`, `pull` and `version` against a build service
 * (`--host`, `KILN_HOST`): the same checks before anything is sent, the same lines out and the
 * same exit codes as the local commands, with the server's store in place of a local one.
 */
import { KilnError } from '../../cache/errors.js';
import type { ParsedArgs } from '../cli/args.js';
import { humanSize, table, timeAgo } from '../cli/format.js';
import type { CommandIO } from '../cli/main.js';
import { openProgressView, resolveProgressMode } from '../cli/progress.js';
import { checkImageArg } from '../cli/refs.js';
import { printInspected } from '../cli/commands/inspect.js';
import { familiarName, familiarRepository, parseReference } from '../image/reference.js';
import { KilnClient, readLines, type RemoteHost } from './client.js';
import { fromWireError, type WireError } from './wire.js';

interface RemoteImage {
  id: string;
  view: Record<string, unknown>;
  history: { created: number; createdBy: string; size: number; comment: string }[];
}

const imagePath = (ref: string) => `/images/${encodeURIComponent(ref)}`;

export async function remoteTag(host: RemoteHost, { positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const [source, target] = positionals as [string, string];
  parseReference(target);
  await new KilnClient(host).json('POST', '/tag', { source, target }, io.signal);
  return 0;
}

export async function remoteRmi(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  for (const p of positionals) checkImageArg(p);
  const client = new KilnClient(host);
  let failure: unknown;
  for (const ref of positionals) {
    try {
      const events = await client.json<({ untagged: string } | { deleted: string })[]>('DELETE', `${imagePath(ref)}${options.force === true ? '?force=true' : ''}`, undefined, io.signal);
      for (const e of events) io.stdout('untagged' in e ? `Untagged: ${e.untagged}\n` : `Deleted: ${e.deleted}\n`);
    } catch (err) {
      // As the local command does: every image given is tried; one that could not go fails it.
      if (!(err instanceof KilnError) || positionals.length === 1) throw err;
      io.stderr(`error: ${err.message}\n`);
      failure = err;
    }
  }
  if (failure) throw new KilnError('RMI_FAILED', 'Some images were not removed', { hint: (failure as KilnError).hint });
  return 0;
}

export async function remoteInspect(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const client = new KilnClient(host);
  const view = async (ref: string) => (await client.json<RemoteImage>('GET', imagePath(ref), undefined, io.signal)).view;
  return printInspected(positionals, view, options.format as string | undefined, io);
}

/** Commands are cut to this many characters in the table, as the local history does. */
const CREATED_BY_WIDTH = 45;

export async function remoteHistory(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const ref = positionals[0]!;
  checkImageArg(ref);
  const image = await new KilnClient(host).json<RemoteImage>('GET', imagePath(ref), undefined, io.signal);
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
}

/** The server's half of `kiln version`: its runtime and store. */
export async function remoteEngineVersion(host: RemoteHost, signal?: AbortSignal): Promise<{ runtime: string; runtimeVersion: string; store: string }> {
  const v = await new KilnClient(host).json<{ runtime: string; runtimeVersion: string; store: string }>('GET', '/version', undefined, signal);
  return { runtime: v.runtime, runtimeVersion: v.runtimeVersion, store: v.store };
}

type TransferEvent =
  | { type: 'prepared'; config: string }
  | { type: 'push'; event: { type: string; status?: string; digest: string } }
  | { type: 'pull'; event: { type: string; status?: string; digest: string } }
  | { type: 'transfer'; transfer: { name: string; current: number; total: number; done?: boolean } }
  | { type: 'result'; digest: string; size: number; config: string; names: string[]; name: string; downloaded: number }
  | { type: 'error'; error: WireError };

export async function remotePush(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const name = positionals[0]!;
  const ref = parseReference(name);
  const quiet = options.quiet === true;
  const mode = quiet ? 'quiet' : resolveProgressMode(options.progress as string | undefined, process.env.KILN_PROGRESS, process.stderr.isTTY === true);
  const say = (s: string) => {
    if (!quiet) io.stdout(`${s}\n`);
  };
  // The live view draws each layer itself; per-layer lines would only interleave with it.
  const sayLayer = mode === 'tty' ? () => {} : say;
  const res = await new KilnClient(host)
    .request('POST', '/push', {
      json: {
        name,
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
        compression: options.compression as string | undefined,
        forceCompression: options['force-compression'] === true,
      },
      signal: io.signal,
    })
    .catch((err: unknown) => {
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
    for await (const e of readLines<TransferEvent>(res)) {
      if (e.type === 'prepared') config = e.config;
      else if (e.type === 'push') {
        if (e.event.type !== 'blob' || e.event.digest === config) continue;
        const short = e.event.digest.slice(7, 19);
        if (e.event.status === 'exists') sayLayer(`${short}: Layer already exists`);
        else if (e.event.status === 'mounted') sayLayer(`${short}: Mounted from another repository`);
        else if (e.event.status === 'pushed') sayLayer(`${short}: Pushed`);
      } else if (e.type === 'transfer') {
        if (e.transfer.name !== config) view.handle({ type: 'transfer', id, ...e.transfer, time: Date.now() });
      } else if (e.type === 'error') throw fromWireError(e.error);
      else if (e.type === 'result') {
        view.handle({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - started });
        await view.succeed({ imageId: e.config, tags: e.names, summary: `Pushed ${e.names.join(', ')}` });
        if (quiet) io.stdout(`${e.digest}\n`);
        else say(`${ref.digest ? familiarName(name) : ref.tag}: digest: ${e.digest} size: ${e.size}`);
        return 0;
      }
    }
    throw new KilnError('SERVER_ERROR', `The build service at "${host.url}" ended the push stream without a result`);
  } catch (err) {
    view.handle({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - started, message: err instanceof Error ? err.message : String(err) });
    await view.fail(err);
    return err instanceof KilnError ? err.exitCode : 1;
  }
}

export async function remotePull(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const input = positionals[0]!;
  const ref = parseReference(input);
  const quiet = options.quiet === true;
  const mode = quiet ? 'quiet' : resolveProgressMode(options.progress as string | undefined, process.env.KILN_PROGRESS, process.stderr.isTTY === true);
  const say = (s: string) => {
    if (!quiet) io.stdout(`${s}\n`);
  };
  const sayLayer = mode === 'tty' ? () => {} : say;
  const short = (d: string) => d.slice(7, 19);
  say(`${ref.digest ?? ref.tag}: Pulling from ${familiarName(`${ref.domain}/${ref.path}`)}`);
  const res = await new KilnClient(host).request('POST', '/pull', {
    json: { name: input, platform: options.platform as string | undefined, insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [] },
    signal: io.signal,
  });
  const view = await openProgressView(mode, process.stderr, { activity: { running: 'Pulling', done: 'Pulled' } });
  const id = 1;
  view.handle({ type: 'vertex.start', id, name: `pulling ${input}`, time: Date.now() });
  const started = Date.now();
  try {
    for await (const e of readLines<TransferEvent>(res)) {
      if (e.type === 'pull') {
        if (e.event.type !== 'layer') continue;
        if (e.event.status === 'exists') sayLayer(`${short(e.event.digest)}: Already exists`);
        else if (e.event.status === 'done') sayLayer(`${short(e.event.digest)}: Pull complete`);
      } else if (e.type === 'transfer') view.handle({ type: 'transfer', id, ...e.transfer, time: Date.now() });
      else if (e.type === 'error') throw fromWireError(e.error);
      else if (e.type === 'result') {
        view.handle({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - started });
        await view.succeed({ imageId: e.config, tags: [e.name], summary: `Pulled ${e.name}` });
        say(`Digest: ${e.digest}`);
        say(`Status: ${e.downloaded > 0 ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(e.name)}`);
        io.stdout(`${e.name}\n`);
        return 0;
      }
    }
    throw new KilnError('SERVER_ERROR', `The build service at "${host.url}" ended the pull stream without a result`);
  } catch (err) {
    view.handle({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - started, message: err instanceof Error ? err.message : String(err) });
    await view.fail(err);
    return err instanceof KilnError ? err.exitCode : 1;
  }
}
