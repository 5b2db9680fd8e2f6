/**
 * `kiln build -`: standard input holds either a context archive (a tar, plain or gzip-compressed,
 * its Dockerfile inside) or a Dockerfile and no context at all, told apart by the first bytes as
 * docker tells them. Locally an archive is unpacked as a build service unpacks an upload
 * (daemon/context.ts): into a leased directory under the store, refusing names that climb out,
 * links that lead outside and devices; with --host it is sent to the service as it is.
 */
import { join } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import { contextEntryPath, emptyContext, receiveContext } from '../daemon/context.js';

/**
 * What standard input held: a Dockerfile, or an archive to read on with the path of its
 * Dockerfile inside (`-f NAME`, else `Dockerfile`).
 */
export type StdinInput = { dockerfileText: string; archive?: undefined } | { dockerfileText?: undefined; archive: AsyncIterable<Buffer>; dockerfile: string };

export interface StdinContext {
  dir: string;
  /** The Dockerfile inside an archive: `-f NAME` is a path in it, as docker takes it. */
  dockerfile?: string;
  /** The Dockerfile, when standard input held one instead of an archive (the context is empty). */
  dockerfileText?: string;
  dispose(): Promise<void>;
}

/** Enough for a tar header's magic (offset 257) and every compression's. */
const SNIFF_BYTES = 262;

type Kind = 'tar' | 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'text';

function sniff(head: Buffer): Kind {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  if (head.length >= SNIFF_BYTES && head.subarray(257, 262).toString('latin1') === 'ustar') return 'tar';
  return 'text';
}

/** The path `-f` names inside a context archive (`Dockerfile` without it). */
function archiveDockerfile(file: string | undefined): string {
  try {
    return contextEntryPath(file ?? 'Dockerfile') || 'Dockerfile';
  } catch {
    throw new KilnError('DOCKERFILE_MISSING', `"-f ${file}" must name a file inside the context archive on standard input`, {
      hint: "Give its path from the archive's top, such as -f docker/Dockerfile",
    });
  }
}

/**
 * Reads standard input far enough to tell a Dockerfile (read whole) from an archive (left to
 * stream). `file`, the -f name, is a path inside an archive: with a Dockerfile it is refused.
 */
export async function readStdinInput(signal: AbortSignal, file: string | undefined, input: AsyncIterable<Buffer> = process.stdin): Promise<StdinInput> {
  const dockerfile = archiveDockerfile(file);
  // A build stopped while standard input is still being read stops reading it.
  const stop = () => (input as { destroy?: (err?: Error) => void }).destroy?.(signal.reason as Error);
  signal.addEventListener('abort', stop, { once: true });
  try {
    const chunks = input[Symbol.asyncIterator]();
    const head: Buffer[] = [];
    let size = 0;
    let ended = false;
    while (size < SNIFF_BYTES && !ended) {
      const next = await chunks.next();
      if (next.done) ended = true;
      else {
        head.push(next.value);
        size += next.value.length;
      }
    }
    const first = Buffer.concat(head);
    const kind = sniff(first);
    if (kind === 'bzip2' || kind === 'xz' || kind === 'zstd') {
      throw new KilnError('CONTEXT_UNSUPPORTED', `The build context on standard input is compressed with ${kind}`, {
        hint: 'Send a tar, plain or compressed with gzip',
      });
    }
    if (kind === 'text' && file !== undefined) {
      throw new KilnError('USAGE', `"-f ${file}" names a Dockerfile inside a context archive, but standard input held a Dockerfile`, {
        exitCode: 2,
        hint: 'Leave -f out: the Dockerfile is standard input itself',
      });
    }
    const whole = (async function* () {
      yield first;
      if (ended) return;
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
    })();
    if (kind !== 'text') return { archive: whole, dockerfile };
    const all: Buffer[] = [];
    for await (const chunk of whole) all.push(chunk);
    return { dockerfileText: Buffer.concat(all).toString('utf8') };
  } finally {
    signal.removeEventListener('abort', stop);
  }
}

/** Standard input as a local build's context. `file`: the -f name, a path inside an archive. */
export async function stdinContext(store: Store, signal: AbortSignal, file: string | undefined): Promise<StdinContext> {
  const input = await readStdinInput(signal, file);
  if (input.dockerfileText !== undefined) {
    const empty = emptyContext(store);
    return { dir: empty.dir, dockerfileText: input.dockerfileText, dispose: empty.dispose };
  }
  const archive = await receiveContext(store, input.archive, { maxBytes: Number.POSITIVE_INFINITY, signal });
  return { dir: archive.dir, dockerfile: join(archive.dir, input.dockerfile), dispose: archive.dispose };
}
