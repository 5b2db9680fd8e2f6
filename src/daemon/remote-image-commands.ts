/**
 * `kiln tag`, `rmi`, `inspect` and `version` against a build service
 * (`--host`, `KILN_HOST`): the same checks before anything is sent, the same lines out and the
 * same exit codes as the local commands, with the server's store in place of a local one. The
 * transport of push and pull is here too; src/cli/commands/push.ts and pull.ts present them as
 * they present a local push or pull.
 */
import { KilnError } from '../../cache/errors.js';
import type { ParsedArgs } from '../cli/args.js';
import type { CommandIO } from '../cli/main.js';
import { printInspected } from '../cli/commands/inspect.js';
import type { PushSource } from '../cli/commands/push.js';
import type { PullSource } from '../cli/commands/pull.js';
import { parseReference } from '../image/reference.js';
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

/** `kiln rmi` against the server: removes one image there and returns docker's lines for it. */
export function remoteRemover(host: RemoteHost, force: boolean, signal: AbortSignal): (ref: string) => Promise<string[]> {
  const client = new KilnClient(host);
  return async (ref) => {
    const events = await client.json<({ untagged: string } | { deleted: string })[]>('DELETE', `${imagePath(ref)}${force ? '?force=true' : ''}`, undefined, signal);
    return events.map((e) => ('untagged' in e ? `Untagged: ${e.untagged}` : `Deleted: ${e.deleted}`));
  };
}

export async function remoteInspect(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO): Promise<number> {
  const client = new KilnClient(host);
  const view = async (ref: string) => (await client.json<RemoteImage>('GET', imagePath(ref), undefined, io.signal)).view;
  return printInspected(positionals, view, options.format as string | undefined, io);
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

/** A push that the build service runs; its events come back over the connection. */
export function remotePushSource(
  host: RemoteHost,
  request: { name: string; insecureRegistries: string[]; compression?: string; forceCompression: boolean },
  signal: AbortSignal,
): PushSource {
  return {
    async open() {
      // The server finds the image before its answer starts: an unknown one is an error status here.
      const res = await new KilnClient(host).request('POST', '/push', { json: request, signal });
      return {
        async push(h) {
          for await (const e of readLines<TransferEvent>(res)) {
            if (e.type === 'prepared') h.onPrepared(e.config);
            else if (e.type === 'push') h.onBlob(e.event);
            else if (e.type === 'transfer') h.onTransfer(e.transfer);
            else if (e.type === 'error') throw fromWireError(e.error);
            else if (e.type === 'result') return { digest: e.digest, size: e.size, config: e.config, names: e.names };
          }
          throw new KilnError('SERVER_ERROR', `The build service at "${host.url}" ended the push stream without a result`);
        },
      };
    },
  };
}

/** A pull that the build service runs into its store; its events come back over the connection. */
export function remotePullSource(host: RemoteHost, request: { name: string; platform?: string; insecureRegistries: string[] }, signal: AbortSignal): PullSource {
  return async (h) => {
    const res = await new KilnClient(host).request('POST', '/pull', { json: request, signal });
    for await (const e of readLines<TransferEvent>(res)) {
      if (e.type === 'pull') h.onEvent(e.event);
      else if (e.type === 'transfer') h.onTransfer(e.transfer);
      else if (e.type === 'error') throw fromWireError(e.error);
      else if (e.type === 'result') return { name: e.name, digest: e.digest, downloaded: e.downloaded, config: e.config };
    }
    throw new KilnError('SERVER_ERROR', `The build service at "${host.url}" ended the pull stream without a result`);
  };
}
