import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { dirname, posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { randomId } from '../../cache/fsutil.js';
import { build, type BuildRequest, type BuildResult } from '../build/build.js';
import type { Engine } from '../engine.js';
import { exporterFor, parseOutputSpec } from '../export/outputs.js';
import { parseReference } from '../image/reference.js';
import { ImageExporter } from '../export/image.js';
import type { ProgressSink } from '../../solver/progress.js';
import { formatAddress, type Address } from './address.js';
import type { TokenAuth } from './auth.js';
import type { UploadedContext } from './context.js';
import { readFileInRoot } from '../fsutil/rootfile.js';
import { parseIgnoreFile } from '../../frontend/ignore/index.js';
import { handleDocker } from './docker-api.js';
import { ContextFileCache } from './file-cache.js';
import { sendJson, statusOf } from './http.js';
import { handleKiln } from './kiln-api.js';
import { BuildSlots } from './queue.js';
import { toWireError, type WireBuildOptions, type WireError } from './wire.js';
import { parseCacheFrom, parseCacheTo } from '../cache-export/spec.js';
import { parseEntitlement } from '../build/session.js';
import { parseExtraBuildFlags } from '../cli/build-flags.js';
import type { CommandSpec } from '../cli/args.js';
import type { Session } from '../../solver/worker.js';

export interface Limits {
  /** Bytes of an uploaded context, as sent. */
  maxContextBytes: number;
  maxDockerfileBytes: number;
  /** Bytes of all request headers together. */
  maxHeaderBytes: number;
  /** Bytes of a JSON request body or of a build's option line. */
  maxJsonBytes: number;
  /** Bytes of an incremental upload's list of entries (about 150 a file). */
  maxListBytes: number;
  /** Time for a request's headers to arrive (slowloris). */
  headersTimeoutMs: number;
  /**
   * Time for the body of a request read whole (JSON) to arrive; an upload (a context, an archive)
   * may take as long as it needs, but must not stall for longer than this.
   */
  requestTimeoutMs: number;
  /** Uploads one client (token, or remote address) may have arriving at once. */
  maxUploadsPerClient: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxContextBytes: 2 * 1024 ** 3,
  maxDockerfileBytes: 1024 ** 2,
  maxHeaderBytes: 64 * 1024,
  maxJsonBytes: 4 * 1024 ** 2,
  maxListBytes: 64 * 1024 ** 2,
  headersTimeoutMs: 30_000,
  requestTimeoutMs: 60_000,
  maxUploadsPerClient: 8,
};

/** What crossed the wire for contexts since the server started, for `GET /v1/info`. */
export interface ContextStats {
  uploads: number;
  /** Bytes of incremental uploads' lists and of checksum questions. */
  listBytes: number;
  /** Bytes of context tars: whole contexts, or the contents the cache lacked. */
  contentBytes: number;
  filesReceived: number;
  filesReused: number;
}

export interface ServeOptions {
  addresses: Address[];
  tls?: { cert: string; key: string; ca?: string };
  /** Allows TCP without TLS. */
  insecure?: boolean;
  auth?: TokenAuth;
  maxConcurrentBuilds: number;
  limits?: Partial<Limits>;
  /** Entitlements clients may ask for with `--allow` (`security.insecure`); none by default. */
  entitlements?: string[];
  log?: (line: string) => void;
}

/** A build's request, less what comes from its context. */
export type BuildSettings = Omit<BuildRequest, 'contextDir' | 'dockerfile' | 'dockerfileText' | 'dockerfileName' | 'ignorePatterns' | 'scope' | 'progress' | 'signal'>;

/** What a request handler gets: the server, the exchange and a signal that fires if the client leaves. */
export interface Exchange {
  server: BuildServer;
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** The path without the API prefix (`/build`, `/images/json`). */
  path: string;
  signal: AbortSignal;
}

export interface ServerBuild {
  context: UploadedContext;
  options: WireBuildOptions;
  /** What `settings(options)` made of the options, checked before the context was received. */
  settings: BuildSettings;
  signal: AbortSignal;
  onQueued?: (position: number) => void;
  progress?: ProgressSink;
  /** The client's name for its context, so that cache explanations compare like with like. */
  scope?: string;
}

/**
 * `kiln serve`: one engine behind HTTP listeners on unix sockets and TCP. Builds share the
 * engine's solver, so equal steps of concurrent builds run once; at most `maxConcurrentBuilds`
 * run at a time and the rest queue.
 */
export class BuildServer {
  readonly slots: BuildSlots;
  readonly limits: Limits;
  readonly contextFiles: ContextFileCache;
  readonly uploads = new ClientCounts();
  readonly contextStats: ContextStats = { uploads: 0, listBytes: 0, contentBytes: 0, filesReceived: 0, filesReused: 0 };
  private readonly listeners: (http.Server | https.Server)[] = [];
  private readonly sockets: string[] = [];
  private readonly builds = new Map<Promise<unknown>, AbortController>();
  private closing = false;
  private readonly log: (line: string) => void;

  private constructor(
    readonly engine: Engine,
    private readonly options: ServeOptions,
  ) {
    this.slots = new BuildSlots(options.maxConcurrentBuilds);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.log = options.log ?? (() => {});
    this.contextFiles = new ContextFileCache(engine.store);
  }

  static async start(engine: Engine, options: ServeOptions): Promise<BuildServer> {
    const server = new BuildServer(engine, options);
    await server.contextFiles.sweep();
    try {
      for (const a of options.addresses) await server.listen(a);
    } catch (err) {
      await server.shutdown(0);
      throw err;
    }
    return server;
  }

  get accepting(): boolean {
    return !this.closing;
  }

  /** Where the listeners are, with the port a `:0` address was given. */
  addresses(): string[] {
    return this.listeners.map((l) => {
      const a = l.address();
      return typeof a === 'string' ? `unix://${a}` : `tcp://${a?.address}:${a?.port}`;
    });
  }

  private async listen(a: Address): Promise<void> {
    if (a.kind === 'tcp' && !this.options.tls && !this.options.insecure) {
      throw new KilnError('INSECURE_ADDRESS', `Refusing to listen on ${formatAddress(a)} without TLS`, {
        exitCode: 2,
        hint: 'Give --tls-cert and --tls-key (and --tls-ca for client certificates), or --insecure to accept plain TCP knowingly',
      });
    }
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    // Node's requestTimeout covers a whole body, which for a build's context has no fair bound:
    // handle() bounds bodies by kind instead. Headers have a deadline, checked every second
    // rather than Node's 30 s so that the deadline is what it says.
    const common = {
      maxHeaderSize: this.limits.maxHeaderBytes,
      requestTimeout: 0,
      headersTimeout: this.limits.headersTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, this.limits.headersTimeoutMs),
    };
    let server: http.Server | https.Server;
    if (a.kind === 'tcp' && this.options.tls) {
      const { cert, key, ca } = this.options.tls;
      server = https.createServer(
        { ...common, cert: readFileSync(cert), key: readFileSync(key), ...(ca ? { ca: readFileSync(ca), requestCert: true, rejectUnauthorized: true } : {}) },
        handler,
      );
    } else {
      server = http.createServer(common, handler);
    }
    if (a.kind === 'unix') await prepareSocketPath(a.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'EADDRINUSE'
            ? new KilnError('ADDRESS_IN_USE', `The address ${formatAddress(a)} is in use`, { hint: 'Is another kiln serve running?' })
            : new KilnError('LISTEN_FAILED', `Cannot listen on ${formatAddress(a)}: ${err.message}`),
        );
      });
      if (a.kind === 'unix') server.listen(a.path, resolve);
      else server.listen(a.port, a.host, resolve);
    });
    if (a.kind === 'unix') {
      // Owner and group only, as dockerd's socket: the group names who may build.
      await chmod(a.path, 0o660);
      this.sockets.push(a.path);
    }
    this.listeners.push(server);
    this.log(`Listening on ${a.kind === 'unix' ? formatAddress(a) : this.addresses().at(-1)}`);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new KilnError('CANCELLED', 'The client went away: the build was cancelled', { exitCode: 130 }));
    });
    const url = new URL(req.url ?? '/', 'http://kiln');
    const kiln = /^\/v1(\/.*)$/.exec(url.pathname);
    const ex: Exchange = { server: this, req, res, url, path: kiln ? kiln[1]! : url.pathname.replace(/^\/v1\.\d+(?=\/)/, ''), signal: controller.signal };
    let release: (() => void) | undefined;
    const socket = req.socket;
    try {
      if (this.options.auth && !this.options.auth.check(req.headers.authorization)) {
        throw new KilnError('UNAUTHORIZED', 'The build service needs a valid bearer token', { hint: 'Pass --token-file, or set KILN_TOKEN_FILE' });
      }
      if (this.closing) throw new KilnError('SHUTTING_DOWN', 'The build service is shutting down');
      const kind = bodyKind(req.method ?? 'GET', ex.path, kiln !== null);
      const client = kind === 'upload' ? this.clientOf(req) : undefined;
      if (client !== undefined) {
        // Counted while the body arrives, not while the build it carries runs or queues.
        release = this.uploads.acquire(client, this.limits.maxUploadsPerClient);
        req.once('end', release);
        req.once('close', release);
      }
      this.boundBody(req, res, kind);
      if (kiln) await handleKiln(ex);
      else await handleDocker(ex);
    } catch (err) {
      // The client went away mid-body (its 'aborted' error is no defect), or a timeout answered.
      const gone = controller.signal.aborted || socket.destroyed;
      if (res.headersSent || gone) {
        if (!gone) this.wireError(err, `${req.method} ${url.pathname}`);
        res.end();
        return;
      }
      const wire = this.wireError(err, `${req.method} ${url.pathname}`);
      // The body may still be arriving. A client that is still writing it when the connection
      // closes sees a broken pipe instead of the answer (the docker client does), so a modest
      // remainder is read first; beyond that the answer goes out and the connection goes.
      await drainRequest(req, DRAIN_MAX_BYTES, DRAIN_MAX_MS);
      if (res.headersSent || res.destroyed) return;
      res.setHeader('Connection', 'close');
      if (kiln) sendJson(res, statusOf(err), { error: wire });
      else sendJson(res, statusOf(err), { message: wire.hint ? `${wire.message} (${wire.hint})` : wire.message });
      req.resume();
    } finally {
      release?.();
    }
  }

  /** Refuses what the operator did not grant (`kiln serve --allow-entitlement NAME`). */
  requireEntitlement(name: string, asked = `--allow ${name}`): void {
    if (this.options.entitlements?.includes(name)) return;
    throw new KilnError('ENTITLEMENT_DENIED', `The build service does not grant "${name}", which ${asked} needs`, {
      hint: `Start "kiln serve" with --allow-entitlement ${name} to let clients ask for it`,
    });
  }

  /**
   * The wire form of an error for a client. A KilnError is the client's to read; anything else
   * is a defect of the server: logged here with its stack under an id, and the client gets the
   * id only, so that an operator can find the line it reports.
   */
  wireError(err: unknown, what: string): WireError {
    if (err instanceof KilnError || (err instanceof Error && err.name === 'AbortError')) return toWireError(err);
    const id = this.logError(what, err);
    return { code: 'INTERNAL', message: `The build service failed unexpectedly (error ${id})`, hint: `The server log has the details under "error ${id}"` };
  }

  /**
   * Who a request counts against for per-client limits: its token, else its address. Clients of
   * a unix socket without tokens are not counted: the socket names no peer to tell them apart
   * by, and they are the socket's group, trusted as docker's group is.
   */
  private clientOf(req: IncomingMessage): string | undefined {
    if (this.options.auth && req.headers.authorization) return `token ${createHash('sha256').update(req.headers.authorization).digest('hex')}`;
    return req.socket.remoteAddress;
  }

  /**
   * A body read whole must arrive within requestTimeoutMs; an upload may take as long as it
   * needs but not stall for longer. Either way the client is told 408 and the connection goes.
   */
  private boundBody(req: IncomingMessage, res: ServerResponse, kind: BodyKind): void {
    if (kind === 'stream' || req.complete) return;
    const ms = this.limits.requestTimeoutMs;
    // Held here: a destroyed request lets go of its socket.
    const socket = req.socket;
    const seconds = `${Math.round(ms / 100) / 10} s`;
    const timeout = () => {
      if (req.complete) return;
      const message = kind === 'upload' ? `The upload stalled: nothing arrived for ${seconds}` : `The request body did not arrive within ${seconds}`;
      if (!res.headersSent) {
        const body = JSON.stringify(/^\/v1\//.test(req.url ?? '') ? { error: { code: 'REQUEST_TIMEOUT', message } } : { message });
        res.writeHead(408, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
        res.end(body);
      }
      // After the answer is out, what is half-received is dropped with the connection. The
      // request is destroyed itself, with the reason: once answered, it is no longer among those
      // a closing socket aborts, and its reader would wait for the rest forever.
      const drop = () => {
        req.destroy(new KilnError('REQUEST_TIMEOUT', message));
        socket.destroy();
      };
      if (res.writableFinished) drop();
      else res.once('finish', drop);
    };
    if (kind === 'whole') {
      const timer = setTimeout(timeout, ms);
      const clear = () => clearTimeout(timer);
      // A body nobody reads (a GET's) never ends: the answer going out clears the timer too.
      for (const e of ['end', 'close'] as const) req.once(e, clear);
      for (const e of ['finish', 'close'] as const) res.once(e, clear);
      return;
    }
    // On the request, not its socket: the server destroys a socket whose timeout the request
    // does not take, before any answer.
    req.setTimeout(ms, timeout);
    const done = () => {
      // The socket, held above: a closed request has let go of it.
      socket.setTimeout(0);
      req.off('timeout', timeout);
    };
    req.once('end', done);
    req.once('close', done);
  }

  /** Logs an unexpected failure with its stack, under an id that is returned. */
  logError(what: string, err: unknown): string {
    const id = randomId(6);
    this.log(`error ${id}: ${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return id;
  }

  /** Runs one build in a slot; the build stays known to `shutdown` until it settles. */
  async build(b: ServerBuild): Promise<BuildResult> {
    return this.task(b.signal, async (signal) => {
      const release = await this.slots.acquire({ signal, onQueued: b.onQueued });
      try {
        const definition = this.readDefinition(b.context.dir, b.options);
        return await build(this.engine, { ...b.settings, ...definition, contextDir: b.context.dir, scope: b.scope, progress: b.progress, signal });
      } finally {
        release();
      }
    });
  }

  /**
   * Runs work on the engine (a build, a container, a prune) so that `shutdown` waits for it and
   * then cancels it before the engine closes; `signal` is the client's.
   */
  async task<T>(signal: AbortSignal, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (this.closing) throw new KilnError('SHUTTING_DOWN', 'The build service is shutting down');
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    const run = work(controller.signal);
    this.builds.set(run, controller);
    try {
      return await run;
    } finally {
      this.builds.delete(run);
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Checks a build's options against what this server allows and makes them what the build
   * takes; a request is refused with it before its context is received.
   */
  settings(o: WireBuildOptions): BuildSettings {
    const insecureRegistries = o.insecureRegistries ?? [];
    const exporters = (o.outputs ?? []).map((value) => {
      const spec = parseOutputSpec(value);
      if (spec.type !== 'image' && spec.type !== 'registry') {
        throw new KilnError('INVALID_OUTPUT', `The output "${value}" would be written on the server`, {
          exitCode: 2,
          hint: 'Against a build service only type=image and type=registry outputs work; pull or save the image afterwards',
        });
      }
      return exporterFor(spec, { insecureRegistries });
    });
    if (o.push) exporters.push(new ImageExporter({ push: true, tag: false, insecureRegistries }));
    for (const t of o.tags ?? []) parseReference(t);
    if (o.dockerfileText !== undefined && Buffer.byteLength(o.dockerfileText) > this.limits.maxDockerfileBytes) throw dockerfileTooLarge(this.limits);
    const cacheTo = (o.cacheTo ?? []).map((spec) => {
      const c = parseCacheTo(spec);
      if (c.type === 'local') throw clientPath('--cache-to', spec);
      return c;
    });
    const cacheFrom = (o.cacheFrom ?? []).map((spec) => {
      const c = parseCacheFrom(spec);
      if (c.type === 'local') throw clientPath('--cache-from', spec);
      return c;
    });
    const flags = o.runFlags ?? {};
    const { runDefaults } = parseExtraBuildFlags(
      { network: flags.network, 'add-host': flags.addHost ?? [], ulimit: flags.ulimit ?? [], 'shm-size': flags.shmSize },
      BUILD_SPEC,
    );
    const allow = (o.allow ?? []).map(parseEntitlement);
    for (const a of allow) this.requireEntitlement(a);
    // Asking for the host's network for every step is asking for the entitlement.
    if (runDefaults.network === 'host' && !allow.includes('network.host')) {
      this.requireEntitlement('network.host', '--network host');
      allow.push('network.host');
    }
    const secrets = new Map<string, Buffer>();
    for (const { id, value } of o.secrets ?? []) secrets.set(id, Buffer.from(value, 'base64'));
    const session: Session = { secret: async (id) => secrets.get(id), ssh: () => undefined, allow: new Set(allow) };
    return {
      buildArgs: o.buildArgs,
      tags: o.tags,
      target: o.target,
      noCache: o.noCache,
      noCacheFilter: o.noCacheFilter,
      exporters,
      insecureRegistries,
      labels: o.labels,
      pull: o.pull,
      cacheTo,
      cacheFrom,
      runDefaults,
      session,
      hostSources: false,
      keepImported: false,
    };
  }

  /**
   * The Dockerfile and ignore file of an uploaded context, read only inside it: the client names
   * the Dockerfile's path, and the context may hold links (`d -> .`) that a plain join would
   * follow out of it to the server's own files.
   */
  private readDefinition(dir: string, o: WireBuildOptions): { dockerfileText: string; dockerfileName: string; ignorePatterns: string[] } {
    const ignoreFile = (path: string) => readFileInRoot(dir, path, { what: `the ignore file "${path}"`, maxBytes: this.limits.maxDockerfileBytes });
    const rootIgnore = () => {
      const text = ignoreFile('.dockerignore');
      return text === undefined ? [] : parseIgnoreFile(text.toString('utf8'), { file: '.dockerignore' });
    };
    if (o.dockerfileText !== undefined) return { dockerfileText: o.dockerfileText, dockerfileName: 'Dockerfile', ignorePatterns: rootIgnore() };
    const path = o.dockerfile || 'Dockerfile';
    let text: Buffer | undefined;
    try {
      text = readFileInRoot(dir, path, { what: `the Dockerfile "${path}" ("dockerfile")`, maxBytes: this.limits.maxDockerfileBytes });
    } catch (err) {
      if (err instanceof KilnError && err.code === 'FILE_TOO_LARGE') throw dockerfileTooLarge(this.limits);
      throw err;
    }
    if (text === undefined) {
      throw new KilnError('DOCKERFILE_MISSING', `The context holds no Dockerfile at "${path}" ("dockerfile")`, {
        hint: 'Name it with -f; a Dockerfile outside the context is sent along with the build',
      });
    }
    // As a local build: the ignore file beside the Dockerfile wins over the context's own.
    const beside = `${path}.dockerignore`;
    const besideText = ignoreFile(beside);
    const ignorePatterns = besideText === undefined ? rootIgnore() : parseIgnoreFile(besideText.toString('utf8'), { file: posix.basename(beside) });
    return { dockerfileText: text.toString('utf8'), dockerfileName: posix.basename(path), ignorePatterns };
  }

  /**
   * Stops accepting connections, lets running builds finish for `graceMs`, cancels what is
   * still running, waits for it to clean up, then closes the engine.
   */
  async shutdown(graceMs: number): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve())));
    for (const l of this.listeners) l.closeIdleConnections();
    const running = [...this.builds.keys()].map((p) => p.catch(() => undefined));
    if (running.length > 0) {
      this.log(`Waiting up to ${Math.round(graceMs / 1000)}s for ${running.length} running build${running.length === 1 ? '' : 's'}`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(running), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    for (const c of this.builds.values()) c.abort(new KilnError('SHUTTING_DOWN', 'The build service shut down: the build was cancelled', { exitCode: 130 }));
    await Promise.all([...this.builds.keys()].map((p) => p.catch(() => undefined)));
    // Give the cancelled builds' error lines a moment to reach their clients.
    await new Promise((r) => setTimeout(r, 50));
    for (const l of this.listeners) l.closeAllConnections();
    await Promise.all(closed);
    for (const s of this.sockets) removeSocket(s);
    await this.engine.close();
  }
}

/** The build spec whose flags a request's RUN settings are checked as. */
const BUILD_SPEC: CommandSpec = { name: 'build', usage: 'kiln build [OPTIONS] CONTEXT', description: '', minPositionals: 1, maxPositionals: 1, options: [] };

function clientPath(flag: string, spec: string): KilnError {
  return new KilnError('INVALID_CACHE_SPEC', `The cache "${spec}" names a path, which the build service would read or write on its own disk`, {
    exitCode: 2,
    hint: `Against a build service, ${flag} takes type=registry (or type=inline); export to a registry and import from it`,
  });
}

function dockerfileTooLarge(limits: Limits): KilnError {
  return new KilnError('DOCKERFILE_TOO_LARGE', `The Dockerfile is larger than the server's limit of ${limits.maxDockerfileBytes} bytes`);
}

/** A socket file left by a server that died is removed; one that answers is someone else's. */
async function prepareSocketPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (!st) return;
  if (!st.isSocket()) throw new KilnError('ADDRESS_IN_USE', `"${path}" exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new KilnError('ADDRESS_IN_USE', `The address unix://${path} is in use`, { hint: 'Is another kiln serve running?' });
  unlinkSync(path);
}

/** How much of a refused request's body is read before the answer, and for how long. */
const DRAIN_MAX_BYTES = 64 * 1024 * 1024;
const DRAIN_MAX_MS = 10_000;

/**
 * Reads and drops what is left of a request body, up to `maxBytes` and `maxMs`; resolves early
 * when the body ends, the connection breaks, or either bound is reached.
 */
export function drainRequest(req: IncomingMessage, maxBytes: number, maxMs: number): Promise<void> {
  if (req.complete || req.destroyed || req.readableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    let seen = 0;
    const done = () => {
      clearTimeout(timer);
      req.off('readable', onReadable);
      req.off('end', done);
      req.off('close', done);
      req.off('error', done);
      resolve();
    };
    // Read, not resumed: a body begun with an async iterator (splitFirstLine) keeps that
    // iterator's 'readable' listener, and while one is attached resume() does nothing.
    const onReadable = () => {
      for (let chunk = req.read() as Buffer | null; chunk !== null; chunk = req.read() as Buffer | null) {
        seen += chunk.length;
        if (seen > maxBytes) return done();
      }
    };
    const timer = setTimeout(done, maxMs);
    req.on('readable', onReadable);
    req.once('end', done);
    req.once('close', done);
    req.once('error', done);
    onReadable();
  });
}

function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    // Already gone (removed by hand, or the directory with it): nothing left to clean.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

type BodyKind = 'whole' | 'upload' | 'stream';

/**
 * How a route reads its body: whole (JSON, small), as an upload (a context or an archive, as
 * long as it takes), or as a stream that lasts as long as the answer (`run`'s standard input).
 */
function bodyKind(method: string, path: string, kiln: boolean): BodyKind {
  if (method !== 'POST') return 'whole';
  if (kiln && path === '/run') return 'stream';
  if (path === '/build' || path === '/load' || path === '/import' || (!kiln && path === '/images/load')) return 'upload';
  return 'whole';
}

/** Requests in progress per client, up to a limit. */
export class ClientCounts {
  private readonly counts = new Map<string, number>();

  /** Counts one more for `client`, or refuses with 429; the function returned counts it off, once. */
  acquire(client: string, max: number): () => void {
    const n = this.counts.get(client) ?? 0;
    if (n >= max) {
      throw new KilnError('TOO_MANY_UPLOADS', `The client already has ${n} uploads in progress, the server's limit`, {
        hint: 'Wait for them to finish, or start the server with a larger --max-uploads-per-client',
      });
    }
    this.counts.set(client, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.counts.get(client) ?? 1) - 1;
      if (left === 0) this.counts.delete(client);
      else this.counts.set(client, left);
    };
  }
}
