/**
 * Kiln's own API under `/v1/`: JSON requests and answers, and NDJSON streams for builds, pushes
 * and pulls. Errors are `{"error": WireError}` with a fitting status.
 */
import { KilnError } from '../../cache/errors.js';
import { prepareExport } from '../image/convert.js';
import { getImage, tagImage } from '../image/local.js';
import { DEFAULT_PLATFORM } from '../image/platform.js';
import { normalizeName, parseReference } from '../image/reference.js';
import { receiveContext } from './context.js';
import { LineStream, readBody, sendJson, splitFirstLine } from './http.js';
import { imageHistory, listImages, removeImage } from './images.js';
import type { Exchange } from './server.js';
import { kilnVersion } from './version.js';
import { API_VERSION, toWireError, type BuildStreamEvent, type WireBuildOptions } from './wire.js';

export async function handleKiln(ex: Exchange): Promise<void> {
  const { req, path } = ex;
  const method = req.method ?? 'GET';
  const image = /^\/images\/(.+)$/.exec(path);
  if (method === 'GET' && path === '/version') return sendJson(ex.res, 200, { version: kilnVersion(), api: API_VERSION, node: process.version });
  if (method === 'GET' && path === '/info') return info(ex);
  if (method === 'POST' && path === '/build') return buildRoute(ex);
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

function info(ex: Exchange): void {
  const { server } = ex;
  sendJson(ex.res, 200, {
    version: kilnVersion(),
    root: server.engine.store.root,
    runtime: process.env.KILN_RUNTIME ?? 'runc',
    builds: { running: server.slots.active, queued: server.slots.queued, max: server.slots.max },
    images: server.engine.store.db.allManifests().length,
  });
}

async function inspect(ex: Exchange, ref: string): Promise<void> {
  const image = await getImage(ex.server.engine.store, ref);
  const names = ex.server.engine.store.db.allTags().filter((t) => t.manifest === image.manifestDigest).map((t) => t.name);
  sendJson(ex.res, 200, { id: image.configDigest, manifestDigest: image.manifestDigest, names, manifest: image.manifest, config: image.config, history: imageHistory(image) });
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
  const context = await receiveContext(ex.server.engine.store, rest, { maxBytes: ex.server.limits.maxContextBytes, signal: ex.signal });
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

async function push(ex: Exchange): Promise<void> {
  const { name, insecureRegistries } = await jsonBody<{ name?: string; insecureRegistries?: string[] }>(ex);
  if (typeof name !== 'string') throw new KilnError('INVALID_REQUEST', 'A push request needs "name"');
  parseReference(name);
  const store = ex.server.engine.store;
  const image = await getImage(store, name);
  const out = new LineStream(ex.res);
  out.start('application/x-ndjson');
  try {
    const prepared = await prepareExport(store, image, { persist: true, signal: ex.signal });
    const { pushImage } = await import('../registry/push.js');
    const result = await pushImage(store, prepared.manifestDigest, [name], { signal: ex.signal, insecureRegistries, onEvent: (e) => out.write({ type: 'push', event: e }) });
    out.write({ type: 'result', digest: result.digest, size: prepared.manifestBytes.byteLength, config: prepared.configDigest });
  } catch (err) {
    out.write({ type: 'error', error: toWireError(err) });
  } finally {
    out.end();
  }
}

async function pull(ex: Exchange): Promise<void> {
  const { name, insecureRegistries } = await jsonBody<{ name?: string; insecureRegistries?: string[] }>(ex);
  if (typeof name !== 'string') throw new KilnError('INVALID_REQUEST', 'A pull request needs "name"');
  parseReference(name);
  const out = new LineStream(ex.res);
  out.start('application/x-ndjson');
  try {
    const { pullImage } = await import('../registry/pull.js');
    const result = await pullImage(ex.server.engine.store, name, { platform: DEFAULT_PLATFORM, signal: ex.signal, insecureRegistries, onEvent: (e) => out.write({ type: 'pull', event: e }) });
    out.write({ type: 'result', name: result.name, digest: result.digest, downloaded: result.downloaded });
  } catch (err) {
    out.write({ type: 'error', error: toWireError(err) });
  } finally {
    out.end();
  }
}
