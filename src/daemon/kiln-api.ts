/**
 * Kiln's own API under `/v1/`: JSON requests and answers, and NDJSON streams for builds, pushes
 * and pulls. Errors are `{"error": WireError}` with a fitting status.
 */
import { KilnError } from '../../cache/errors.js';
import type { TransferSink } from '../../solver/progress.js';
import { inspectView } from '../cli/commands/inspect.js';
import { runtimeVersion } from '../cli/commands/version.js';
import { parseCompression, prepareExport } from '../image/convert.js';
import { getImage, tagImage } from '../image/local.js';
import { DEFAULT_PLATFORM, parsePlatform } from '../image/platform.js';
import { normalizeName, parseReference } from '../image/reference.js';
import { receiveContext, receiveContextList, type UploadedContext } from './context.js';
import { LineStream, readBody, sendJson, splitFirstLine } from './http.js';
import { imageHistory, listImages, removeImage } from './images.js';
import type { Exchange } from './server.js';
import { kilnVersion } from './version.js';
import { API_VERSION, toWireError, type BuildStreamEvent, type ContextEntry, type WireBuildOptions } from './wire.js';

export async function handleKiln(ex: Exchange): Promise<void> {
  const { req, path } = ex;
  const method = req.method ?? 'GET';
  const image = /^\/images\/(.+)$/.exec(path);
  if (method === 'GET' && path === '/version') return version(ex);
  if (method === 'GET' && path === '/info') return info(ex);
  if (method === 'POST' && path === '/build') return buildRoute(ex);
  if (method === 'POST' && path === '/context/missing') return missingRoute(ex);
  if (method === 'GET' && path === '/images') return sendJson(ex.res, 200, listImages(ex.server.engine.store));
  if (method === 'GET' && image) return inspect(ex, decodeURIComponent(image[1]!));
  if (method === 'DELETE' && image) {
    return sendJson(ex.res, 200, await removeImage(ex.server.engine.store, decodeURIComponent(image[1]!), { force: ex.url.searchParams.get('force') === 'true' }));
  }
  if (method === 'POST' && path === '/tag') return tag(ex);
  if (method === 'POST' && path === '/push') return push(ex);
  if (method === 'POST' && path === '/pull') return pull(ex);
  throw new KilnError('NOT_FOUND', `The build service has no endpoint ${method} /v1${path}`);
}

async function version(ex: Exchange): Promise<void> {
  const runtime = process.env.KILN_RUNTIME ?? 'runc';
  sendJson(ex.res, 200, { version: kilnVersion(), api: API_VERSION, node: process.version, runtime, runtimeVersion: await runtimeVersion(runtime), store: ex.server.engine.store.root });
}

function info(ex: Exchange): void {
  const { server } = ex;
  sendJson(ex.res, 200, {
    version: kilnVersion(),
    root: server.engine.store.root,
    runtime: process.env.KILN_RUNTIME ?? 'runc',
    builds: { running: server.slots.active, queued: server.slots.queued, max: server.slots.max },
    images: server.engine.store.db.allManifests().length,
    context: server.contextStats,
  });
}

async function inspect(ex: Exchange, ref: string): Promise<void> {
  const image = await getImage(ex.server.engine.store, ref);
  const names = ex.server.engine.store.db.allTags().filter((t) => t.manifest === image.manifestDigest).map((t) => t.name);
  const store = ex.server.engine.store;
  sendJson(ex.res, 200, {
    id: image.configDigest,
    manifestDigest: image.manifestDigest,
    names,
    manifest: image.manifest,
    config: image.config,
    history: imageHistory(image),
    // What `kiln inspect` prints, so that a remote inspect prints the same.
    view: inspectView(store, image, await store.blobs.size(image.manifestDigest)),
  });
}

async function jsonBody<T>(ex: Exchange): Promise<T> {
  const body = await readBody(ex.req, ex.server.limits.maxJsonBytes);
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch {
    throw new KilnError('INVALID_REQUEST', 'The request body is not valid JSON');
  }
}

async function tag(ex: Exchange): Promise<void> {
  const { source, target } = await jsonBody<{ source?: string; target?: string }>(ex);
  if (typeof source !== 'string' || typeof target !== 'string') throw new KilnError('INVALID_REQUEST', 'A tag request needs "source" and "target"');
  parseReference(target);
  const store = ex.server.engine.store;
  tagImage(store, await getImage(store, source), [target]);
  sendJson(ex.res, 200, { name: normalizeName(target) });
}

/**
 * The body is one JSON line of build options, then the context tar. The answer streams events
 * from the start, so the client sees that its build is queued, and ends with a `result` or an
 * `error` event; the status is 200 either way once the stream has begun.
 */
async function buildRoute(ex: Exchange): Promise<void> {
  const { line, rest } = await splitFirstLine(ex.req as AsyncIterable<Buffer>, ex.server.limits.maxJsonBytes);
  let options: WireBuildOptions & { scope?: string };
  try {
    options = JSON.parse(line) as WireBuildOptions & { scope?: string };
  } catch {
    throw new KilnError('INVALID_REQUEST', 'The build options are not valid JSON');
  }
  const context = options.context === 'list' ? await receiveList(ex, rest) : await receiveTar(ex, rest);
  const out = new LineStream(ex.res);
  const send = (e: BuildStreamEvent) => out.write(e);
  out.start('application/x-ndjson');
  try {
    const result = await ex.server.build({
      context,
      options,
      signal: ex.signal,
      scope: options.scope,
      onQueued: (position) => send({ type: 'queued', position }),
      progress: send,
    });
    send({ type: 'result', image: result.image.configDigest, manifest: result.image.manifestDigest, tags: (options.tags ?? []).map(normalizeName) });
  } catch (err) {
    send({ type: 'error', error: toWireError(err) });
  } finally {
    out.end();
    await context.dispose();
  }
}

async function receiveTar(ex: Exchange, body: AsyncIterable<Buffer>): Promise<UploadedContext> {
  const { server } = ex;
  server.contextStats.uploads++;
  const context = await receiveContext(server.engine.store, body, { maxBytes: server.limits.maxContextBytes, signal: ex.signal });
  server.contextStats.contentBytes += context.size;
  return context;
}

/** The second line lists the entries; what follows is a tar of the contents the cache lacked. */
async function receiveList(ex: Exchange, body: AsyncIterable<Buffer>): Promise<UploadedContext> {
  const { server } = ex;
  const stats = server.contextStats;
  stats.uploads++;
  const { line, rest } = await splitFirstLine(body, server.limits.maxListBytes).catch((err: unknown) => {
    if (err instanceof KilnError && err.code === 'REQUEST_TOO_LARGE') {
      throw new KilnError('REQUEST_TOO_LARGE', `The context list is larger than the server's limit of ${server.limits.maxListBytes} bytes`, {
        hint: 'Leave files out with a .dockerignore',
      });
    }
    throw err;
  });
  stats.listBytes += Buffer.byteLength(line) + 1;
  let entries: ContextEntry[];
  try {
    entries = (JSON.parse(line) as { entries: ContextEntry[] }).entries;
  } catch {
    throw new KilnError('INVALID_REQUEST', 'The context list is not valid JSON');
  }
  if (!Array.isArray(entries)) throw new KilnError('INVALID_REQUEST', 'The context list has no "entries"');
  const context = await receiveContextList(server.engine.store, server.contextFiles, entries, rest, {
    maxBytes: server.limits.maxContextBytes,
    signal: ex.signal,
    onBytes: (n) => (stats.contentBytes += n),
  });
  stats.filesReceived += context.filesReceived;
  stats.filesReused += entries.filter((e) => e.type === 'file').length - context.filesReceived;
  void server.contextFiles.sweep().catch((err: unknown) => server.logError('sweeping the context file cache', err));
  return context;
}

/** `{"checksums": [...]}` in, `{"missing": [...]}` out: the contents an upload must carry. */
async function missingRoute(ex: Exchange): Promise<void> {
  const body = await readBody(ex.req, ex.server.limits.maxListBytes);
  ex.server.contextStats.listBytes += body.length;
  let checksums: unknown;
  try {
    checksums = (JSON.parse(body.toString('utf8')) as { checksums?: unknown }).checksums;
  } catch {
    throw new KilnError('INVALID_REQUEST', 'The request body is not valid JSON');
  }
  if (!Array.isArray(checksums) || checksums.some((c) => typeof c !== 'string')) throw new KilnError('INVALID_REQUEST', 'A context question needs "checksums", a list of strings');
  sendJson(ex.res, 200, { missing: ex.server.contextFiles.missing(checksums as string[]) });
}

async function push(ex: Exchange): Promise<void> {
  const { name, insecureRegistries, compression, forceCompression } = await jsonBody<{ name?: string; insecureRegistries?: string[]; compression?: string; forceCompression?: boolean }>(ex);
  if (typeof name !== 'string') throw new KilnError('INVALID_REQUEST', 'A push request needs "name"');
  parseReference(name);
  const convert = { ...(compression !== undefined ? { compression: parseCompression(compression) } : {}), ...(forceCompression === true ? { force: true } : {}) };
  const store = ex.server.engine.store;
  const image = await getImage(store, name);
  const out = new LineStream(ex.res);
  out.start('application/x-ndjson');
  try {
    const prepared = await prepareExport(store, image, { ...convert, persist: true, signal: ex.signal });
    out.write({ type: 'prepared', config: prepared.configDigest });
    const { pushImage } = await import('../registry/push.js');
    const result = await pushImage(store, prepared.manifestDigest, [name], {
      signal: ex.signal,
      insecureRegistries,
      onEvent: (e) => out.write({ type: 'push', event: e }),
      onTransfer: throttledTransfers(out),
    });
    out.write({ type: 'result', digest: result.digest, size: prepared.manifestBytes.byteLength, config: prepared.configDigest, names: result.names });
  } catch (err) {
    out.write({ type: 'error', error: toWireError(err) });
  } finally {
    out.end();
  }
}

/**
 * Byte counts of a transfer, at most a few a second per blob (and always its last), so that a
 * fast local registry does not turn every chunk into a line on the wire.
 */
function throttledTransfers(out: LineStream): TransferSink {
  const last = new Map<string, number>();
  return (t) => {
    const now = Date.now();
    if (!t.done && t.current !== t.total && now - (last.get(t.name) ?? 0) < 200) return;
    last.set(t.name, now);
    out.write({ type: 'transfer', transfer: t });
  };
}

async function pull(ex: Exchange): Promise<void> {
  const { name, insecureRegistries, platform } = await jsonBody<{ name?: string; insecureRegistries?: string[]; platform?: string }>(ex);
  if (typeof name !== 'string') throw new KilnError('INVALID_REQUEST', 'A pull request needs "name"');
  parseReference(name);
  let chosen = DEFAULT_PLATFORM;
  if (platform !== undefined) {
    try {
      chosen = parsePlatform(platform);
    } catch (err) {
      throw new KilnError('INVALID_REQUEST', (err as Error).message, { exitCode: 2 });
    }
  }
  const out = new LineStream(ex.res);
  out.start('application/x-ndjson');
  try {
    const { pullImage } = await import('../registry/pull.js');
    const result = await pullImage(ex.server.engine.store, name, {
      platform: chosen,
      signal: ex.signal,
      insecureRegistries,
      onEvent: (e) => out.write({ type: 'pull', event: e }),
      onTransfer: throttledTransfers(out),
    });
    out.write({ type: 'result', name: result.name, digest: result.digest, downloaded: result.downloaded, config: result.image.configDigest });
  } catch (err) {
    out.write({ type: 'error', error: toWireError(err) });
  } finally {
    out.end();
  }
}
