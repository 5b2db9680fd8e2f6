/**
 * The client side of Kiln's API, for `kiln --host URL` (or `KILN_HOST`): it uploads a context,
 * reads the build's events and rebuilds the server's errors, so that a remote command prints
 * what a local one prints and exits the same way. It never opens a local store.
 */
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import { lstat, readdir, readlink, rename, rm } from 'node:fs/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { KilnError } from '../../cache/errors.js';
import { fsyncPath, randomId } from '../../cache/fsutil.js';
import type { ProgressSink } from '../../solver/progress.js';
import { extraCaOptions } from '../registry/ca.js';
import { formatAddress, parseAddress, type Address } from './address.js';
import { listContext } from './context-list.js';
import type { ImageSummary } from './images.js';
import { fromWireError, type BuildStreamEvent, type WireBuildOptions, type WireError } from './wire.js';

export interface RemoteHost {
  url: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tokenFile?: string;
}

export class KilnClient {
  private readonly address: Address;
  private readonly token: string | undefined;
  private readonly tls: { ca?: Buffer | string[]; cert?: Buffer; key?: Buffer } | undefined;

  constructor(readonly host: RemoteHost) {
    this.address = parseAddress(host.url);
    this.token = host.tokenFile ? readFileSync(host.tokenFile, 'utf8').split('\n').map((l) => l.trim()).find((l) => l !== '' && !l.startsWith('#')) : undefined;
    const useTls = this.address.kind === 'tcp' && (this.address.tls || host.tlsCa !== undefined || host.tlsCert !== undefined);
    this.tls = useTls
      ? { ca: host.tlsCa ? readFileSync(host.tlsCa) : extraCaOptions().ca, cert: host.tlsCert ? readFileSync(host.tlsCert) : undefined, key: host.tlsKey ? readFileSync(host.tlsKey) : undefined }
      : undefined;
  }

  /** Sends a request; an error status becomes the server's KilnError. */
  async request(method: string, path: string, options: { body?: Readable | Buffer; json?: unknown; signal?: AbortSignal } = {}): Promise<IncomingMessage> {
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let body = options.body;
    if (options.json !== undefined) {
      body = Buffer.from(JSON.stringify(options.json));
      headers['Content-Type'] = 'application/json';
    }
    // Without TLS no server name is needed: given one, Node's agent skips working it out, which
    // tests the host with net.isIP and compiles its IPv6 pattern (~5 ms of a client's start).
    const unnamed = this.tls ? {} : { servername: '' };
    const target = this.address.kind === 'unix' ? { socketPath: this.address.path, ...unnamed } : { host: this.address.host, port: this.address.port, ...unnamed };
    const res = await new Promise<IncomingMessage>((resolvePromise, reject) => {
      const req = (this.tls ? https : http).request({ ...target, ...this.tls, method, path: `/v1${path}`, headers, signal: options.signal }, resolvePromise);
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.connectionError(err, options.signal)));
      if (body instanceof Readable) {
        pipeline(body, req).catch((err: unknown) => {
          req.destroy(err as Error);
        });
      } else {
        req.end(body);
      }
    });
    if ((res.statusCode ?? 500) >= 400) {
      const text = await readAll(res);
      let wire: WireError | undefined;
      try {
        wire = (JSON.parse(text) as { error?: WireError }).error;
      } catch {
        // Not our API's answer (a proxy's page, say): reported by status below.
      }
      throw wire ? fromWireError(wire) : new KilnError('SERVER_ERROR', `The build service at "${this.host.url}" answered ${res.statusCode} ${res.statusMessage ?? ''}`.trim());
    }
    return res;
  }

  private connectionError(err: NodeJS.ErrnoException, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted) return signal.reason;
    if (err instanceof KilnError) return err;
    return new KilnError('SERVER_UNREACHABLE', `Cannot reach the build service at "${formatAddress(this.address)}": ${err.code ?? err.message}`, {
      hint: 'Is "kiln serve" running there? Check --host or KILN_HOST',
    });
  }

  async json<T>(method: string, path: string, json?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.request(method, path, { json, signal });
    return JSON.parse(await readAll(res)) as T;
  }

  /** Streams `body` up (an archive, say) and reads the JSON answer. */
  async sendStream<T>(path: string, body: Readable, signal?: AbortSignal): Promise<T> {
    const res = await this.request('POST', path, { body, signal });
    return JSON.parse(await readAll(res)) as T;
  }

  async images(signal?: AbortSignal): Promise<ImageSummary[]> {
    return this.json<ImageSummary[]>('GET', '/images', undefined, signal);
  }

  /**
   * Uploads the context and options, feeds the build's events to `progress`, and returns the
   * image ID; a failed build throws the server's error as it would have been thrown locally.
   */
  async build(contextDir: string, options: WireBuildOptions & { scope?: string }, handlers: BuildHandlers & { incremental?: boolean }): Promise<BuildOutcome> {
    if (handlers.incremental === false) return this.upload(options, handlers, (pack) => packDirectory(pack, resolve(contextDir), handlers.signal));
    const list = await listContext(resolve(contextDir), { dockerfile: options.dockerfile, signal: handlers.signal });
    for (let attempt = 0; ; attempt++) {
      let missing: string[];
      try {
        ({ missing } = await this.json<{ missing: string[] }>('POST', '/context/missing', { checksums: [...list.sources.keys()] }, handlers.signal));
      } catch (err) {
        // A server from before incremental uploads: it still takes the whole context.
        if (err instanceof KilnError && err.code === 'NOT_FOUND') return this.build(contextDir, options, { ...handlers, incremental: false });
        throw err;
      }
      const head = `${JSON.stringify({ ...options, context: 'list' })}\n${JSON.stringify({ entries: list.entries })}\n`;
      try {
        return await this.upload(options, handlers, (pack) => packContents(pack, missing, list.sources, handlers.signal), head);
      } catch (err) {
        // The server swept a content between its answer and the upload: ask once more.
        if (attempt === 0 && err instanceof KilnError && err.code === 'CONTEXT_CONTENT_MISSING') continue;
        throw err;
      }
    }
  }

  /**
   * Builds from a context archive as it is (a tar, plain or gzip): the server unpacks it as it
   * unpacks any whole upload. `kiln build -` sends standard input this way.
   */
  async buildArchive(archive: AsyncIterable<Buffer>, options: WireBuildOptions & { scope?: string }, handlers: BuildHandlers): Promise<BuildOutcome> {
    return this.send(`${JSON.stringify(options)}\n`, archive, handlers);
  }

  /** A tar made here: `fill` writes the entries into it while it is sent. */
  private async upload(options: WireBuildOptions & { scope?: string }, handlers: BuildHandlers, fill: (pack: tar.Pack) => Promise<void>, headText = `${JSON.stringify(options)}\n`): Promise<BuildOutcome> {
    const pack = tar.pack();
    const packing = fill(pack).catch((err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    });
    try {
      return await this.send(headText, pack as AsyncIterable<Buffer>, handlers, packing);
    } catch (err) {
      // The server refused the upload (too large, say): stop reading the context.
      pack.destroy();
      await packing.catch(() => undefined);
      throw err;
    }
  }

  /** Sends the options line and the context, then feeds the build's events to the handlers. */
  private async send(headText: string, context: AsyncIterable<Buffer>, handlers: BuildHandlers, producing: Promise<void> = Promise.resolve()): Promise<BuildOutcome> {
    const body = Readable.from(
      (async function* () {
        yield Buffer.from(headText);
        yield* context;
      })(),
    );
    const res = await this.request('POST', '/build', { body, signal: handlers.signal });
    await producing;
    let outcome: BuildOutcome | undefined;
    for await (const e of readLines<BuildStreamEvent>(res)) {
      if (e.type === 'queued') handlers.onQueued?.(e.position);
      else if (e.type === 'result') outcome = { id: e.image, manifest: e.manifest, mediaType: e.mediaType, manifestSize: e.manifestSize };
      else if (e.type === 'error') throw fromWireError(e.error);
      else handlers.progress?.(e);
    }
    if (!outcome) throw new KilnError('SERVER_ERROR', `The build service at "${this.host.url}" ended the build stream without a result`);
    return outcome;
  }
}

export interface BuildOutcome {
  id: string;
  manifest: string;
  mediaType?: string;
  manifestSize?: number;
}

interface BuildHandlers {
  progress?: ProgressSink;
  onQueued?: (position: number) => void;
  signal?: AbortSignal;
}

/**
 * Writes a streamed answer to `dest` (`-`: standard output). A file appears whole or not at all:
 * a stream the server cut short (it failed midway, or went away) leaves nothing behind.
 */
export async function receiveFile(res: IncomingMessage, dest: string, signal?: AbortSignal): Promise<void> {
  const cut = (err: unknown) => {
    if (signal?.aborted) return signal.reason;
    if (err instanceof KilnError) return err;
    return new KilnError('SERVER_ERROR', `The build service ended the archive early: ${(err as Error).message}`, { hint: 'The server log has the details' });
  };
  const complete = new Transform({
    transform: (chunk, _enc, done) => done(null, chunk),
    flush: (done) => done(res.complete ? null : new Error('the connection closed before its end')),
  });
  if (dest === '-') {
    await pipeline(res, complete, process.stdout, { signal }).catch((err: unknown) => {
      throw cut(err);
    });
    return;
  }
  const tmp = join(dirname(dest), `.${basename(dest)}.${randomId(4)}.tmp`);
  try {
    await pipeline(res, complete, createWriteStream(tmp), { signal });
    await fsyncPath(tmp);
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw cut(err);
  }
}

export async function readAll(res: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

/** One JSON value per line, as they arrive. */
export async function* readLines<T>(res: AsyncIterable<Buffer>): AsyncGenerator<T> {
  let rest = '';
  for await (const chunk of res) {
    rest += chunk.toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line.trim() !== '') yield JSON.parse(line) as T;
    }
  }
  if (rest.trim() !== '') yield JSON.parse(rest) as T;
}

/**
 * A whole directory (a build context, an exported root filesystem) as a tar, files in name
 * order: owners, modes and times as they are, symbolic links as links. For a context, the server
 * applies `.dockerignore` as a local build would.
 */
export async function packDirectory(pack: tar.Pack, root: string, signal?: AbortSignal): Promise<void> {
  const walk = async (dir: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      signal?.throwIfAborted();
      const abs = join(dir, name);
      const rel = relative(root, abs).split(sep).join('/');
      const st = await lstat(abs);
      const header = { name: rel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime };
      if (st.isDirectory()) {
        await new Promise<void>((ok, fail) => pack.entry({ ...header, type: 'directory' }, (err) => (err ? fail(err) : ok())));
        await walk(abs);
      } else if (st.isSymbolicLink()) {
        const linkname = await readlink(abs);
        await new Promise<void>((ok, fail) => pack.entry({ ...header, type: 'symlink', linkname }, (err) => (err ? fail(err) : ok())));
      } else if (st.isFile()) {
        const entry = pack.entry({ ...header, type: 'file', size: st.size });
        await pipeline(createReadStream(abs), entry);
      }
    }
  };
  // The root first, as the list sends it (see listContext).
  const top = await lstat(root);
  await new Promise<void>((ok, fail) => pack.entry({ name: '.', type: 'directory', mode: top.mode & 0o7777, uid: top.uid, gid: top.gid, mtime: top.mtime }, (err) => (err ? fail(err) : ok())));
  await walk(root);
  pack.finalize();
}

/** The contents the server lacks, each named by its checksum's hex, as the list described them. */
async function packContents(pack: tar.Pack, missing: readonly string[], sources: ReadonlyMap<string, string>, signal?: AbortSignal): Promise<void> {
  for (const sum of missing) {
    signal?.throwIfAborted();
    const abs = sources.get(sum);
    if (abs === undefined) throw new KilnError('SERVER_ERROR', `The build service asked for "${sum}", which the context does not hold`);
    const st = await lstat(abs);
    const entry = pack.entry({ name: sum.slice(7), mode: 0o644, size: st.size, type: 'file' });
    await pipeline(createReadStream(abs), entry);
  }
  pack.finalize();
}

/** `--host` flags and `KILN_HOST`: the flag wins. */
export function hostFromEnv(env: NodeJS.ProcessEnv = process.env): RemoteHost | undefined {
  if (!env.KILN_HOST) return undefined;
  return { url: env.KILN_HOST, tlsCa: env.KILN_TLS_CA, tlsCert: env.KILN_TLS_CERT, tlsKey: env.KILN_TLS_KEY, tokenFile: env.KILN_TOKEN_FILE };
}

export function contextHasDockerfile(contextDir: string): boolean {
  return existsSync(join(resolve(contextDir), 'Dockerfile'));
}
