/**
 * Kiln's own API under `/v1/`: JSON requests and answers, and NDJSON streams for builds, pushes
 * and pulls. Errors are `{"error": WireError}` with a fitting status.
 */
import { KilnError } from '../../cache/errors.js';
import type { TransferSink } from '../../solver/progress.js';
import { inspectView } from '../cli/commands/inspect.js';
import { runtimeVersion } from '../cli/commands/version.js';
import { collectInfo } from '../cli/commands/info.js';
import { importImage } from '../cli/commands/import.js';
import { type RunRequest, runImage } from '../cli/commands/run.js';
import { prepareSave } from '../cli/commands/save.js';
import { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { exporterFor, type OutputType, parseOutputSpec } from '../export/outputs.js';
import { diffTar } from '../../cache/diff.js';
import { pipeline } from 'node:stream/promises';
import { parseAddHosts, parseShmSize, parseUlimits } from '../cli/build-flags.js';
import type { CommandSpec } from '../cli/args.js';
import tar from 'tar-stream';
import { diskUsage, prune } from '../../cache/gc.js';
import { verifyStore } from '../../cache/verify.js';
import { writeDockerArchive } from '../export/docker.js';
import { loadArchive } from '../image/archive.js';
import type { ContainerConfig } from '../../solver/graph.js';
import { parseCompression, prepareExport } from '../image/convert.js';
import { getImage, tagImage } from '../image/local.js';
import { DEFAULT_PLATFORM, parsePlatform } from '../image/platform.js';
import { normalizeName, parseReference } from '../image/reference.js';
import { receiveContext, receiveContextList, type UploadedContext } from './context.js';
import { LineStream, parseClientJson, readBody, sendJson, splitFirstLine } from './http.js';
import { imageHistory, listImages, removeImage } from './images.js';
import type { Exchange } from './server.js';
import { kilnVersion } from './version.js';
import { API_VERSION, parseBuildOptions, parseContextList, type BuildStreamEvent } from './wire.js';

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
  if (method === 'GET' && path === '/du') return du(ex);
  if (method === 'POST' && path === '/prune') return pruneRoute(ex);
  if (method === 'POST' && path === '/store/verify') return verify(ex);
  if (method === 'POST' && path === '/save') return save(ex);
  if (method === 'POST' && path === '/load') return load(ex);
  if (method === 'POST' && path === '/import') return importRoute(ex);
  if (method === 'POST' && path === '/run') return run(ex);
  if (method === 'POST' && path === '/export') return exportRoute(ex);
  throw new KilnError('NOT_FOUND', `The build service has no endpoint ${method} /v1${path}`);
}

async function version(ex: Exchange): Promise<void> {
  const runtime = ex.server.engine.executor.runtime;
  sendJson(ex.res, 200, { version: kilnVersion(), api: API_VERSION, node: process.version, runtime, runtimeVersion: await runtimeVersion(runtime), store: ex.server.engine.store.root });
}

async function info(ex: Exchange): Promise<void> {
  const { server } = ex;
  sendJson(ex.res, 200, {
    // What `kiln info` prints, so that a remote info prints the same.
    system: await collectInfo(server.engine),
    version: kilnVersion(),
    root: server.engine.store.root,
    runtime: server.engine.executor.runtime,
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
  const parsed = parseClientJson(body.toString('utf8'), 'the request body');
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new KilnError('INVALID_REQUEST', 'The request body must be a JSON object');
  return parsed as T;
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
  const options = parseBuildOptions(parseClientJson(line, 'the build options'));
  const settings = ex.server.settings(options);
  const context = options.context === 'list' ? await receiveList(ex, rest) : await receiveTar(ex, rest);
  const out = new LineStream(ex.res);
  const send = (e: BuildStreamEvent) => out.write(e);
  out.start('application/x-ndjson');
  try {
    const result = await ex.server.build({
      context,
      options,
      settings,
      signal: ex.signal,
      scope: options.scope,
      onQueued: (position) => send({ type: 'queued', position }),
      progress: send,
    });
    send({
      type: 'result',
      image: result.image.configDigest,
      manifest: result.image.manifestDigest,
      tags: (options.tags ?? []).map(normalizeName),
      mediaType: result.image.manifest.mediaType,
      manifestSize: await ex.server.engine.store.blobs.size(result.image.manifestDigest),
    });
  } catch (err) {
    send({ type: 'error', error: ex.server.wireError(err, 'a build') });
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
  const entries = parseContextList(parseClientJson(line, 'the context list'));
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

/** A list of strings or nothing: a registry list given as one string would match by substring. */
function checkStrings(v: unknown, what: string): void {
  if (v !== undefined && (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))) throw new KilnError('INVALID_REQUEST', `${what} must be a list of strings`);
}

/** `{"checksums": [...]}` in, `{"missing": [...]}` out: the contents an upload must carry. */
async function missingRoute(ex: Exchange): Promise<void> {
  const body = await readBody(ex.req, ex.server.limits.maxListBytes);
  ex.server.contextStats.listBytes += body.length;
  const checksums = ((parseClientJson(body.toString('utf8'), 'the request body') ?? {}) as { checksums?: unknown }).checksums;
  if (!Array.isArray(checksums) || checksums.some((c) => typeof c !== 'string')) throw new KilnError('INVALID_REQUEST', 'A context question needs "checksums", a list of strings');
  sendJson(ex.res, 200, { missing: ex.server.contextFiles.missing(checksums as string[]) });
}

async function push(ex: Exchange): Promise<void> {
  const { name, insecureRegistries, compression, forceCompression } = await jsonBody<{ name?: string; insecureRegistries?: string[]; compression?: string; forceCompression?: boolean }>(ex);
  if (typeof name !== 'string') throw new KilnError('INVALID_REQUEST', 'A push request needs "name"');
  if (compression !== undefined && typeof compression !== 'string') throw new KilnError('INVALID_REQUEST', 'A push request\'s "compression" must be a string');
  checkStrings(insecureRegistries, 'A push request\'s "insecureRegistries"');
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
    out.write({ type: 'error', error: ex.server.wireError(err, 'a push') });
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
  if (platform !== undefined && typeof platform !== 'string') throw new KilnError('INVALID_REQUEST', 'A pull request\'s "platform" must be a string');
  checkStrings(insecureRegistries, 'A pull request\'s "insecureRegistries"');
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
    out.write({ type: 'error', error: ex.server.wireError(err, 'a pull') });
  } finally {
    out.end();
  }
}

async function du(ex: Exchange): Promise<void> {
  sendJson(ex.res, 200, await diskUsage(ex.server.engine.store));
}

/** The client asked for confirmation on its own terminal: the request is what was confirmed. */
async function pruneRoute(ex: Exchange): Promise<void> {
  const o = await jsonBody<{ all?: unknown; olderThanMs?: unknown; keepBytes?: unknown }>(ex);
  const num = (v: unknown, name: string) => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new KilnError('INVALID_REQUEST', `A prune request's "${name}" must be a number of at least 0`);
    return v;
  };
  const options = { all: o.all === true, olderThanMs: num(o.olderThanMs, 'olderThanMs'), keepBytes: num(o.keepBytes, 'keepBytes') };
  sendJson(ex.res, 200, await ex.server.task(ex.signal, () => prune(ex.server.engine.store, options)));
}

async function verify(ex: Exchange): Promise<void> {
  const store = ex.server.engine.store;
  sendJson(ex.res, 200, { ...(await ex.server.task(ex.signal, (signal) => verifyStore(store, { signal }))), root: store.root });
}

/**
 * `{"images": [...]}` in, the docker archive out. Every image is found and prepared before the
 * answer starts, so an unknown one is a plain error; a failure midway cuts the connection, which
 * the client reports instead of keeping a truncated file.
 */
async function save(ex: Exchange): Promise<void> {
  const { images } = await jsonBody<{ images?: unknown }>(ex);
  if (!Array.isArray(images) || images.length === 0 || images.some((i) => typeof i !== 'string')) throw new KilnError('INVALID_REQUEST', 'A save request needs "images", a list of names or IDs');
  const store = ex.server.engine.store;
  await ex.server.task(ex.signal, async (signal) => {
    const prepared = await prepareSave(store, images as string[], signal);
    try {
      ex.res.writeHead(200, { 'Content-Type': 'application/x-tar' });
      const pack = tar.pack();
      const sending = pipeline(pack, ex.res, { signal });
      try {
        await writeDockerArchive(pack, prepared, signal);
        pack.finalize();
        await sending;
      } catch (err) {
        pack.destroy();
        await sending.catch(() => undefined);
        ex.res.destroy();
        if (!signal.aborted) ex.server.logError('saving images', err);
      }
    } finally {
      for (const p of prepared) await p.image.dispose();
    }
  });
}

/** The archive is the body; the answer lists the images loaded. */
async function load(ex: Exchange): Promise<void> {
  const loaded = await ex.server.task(ex.signal, (signal) => loadArchive(ex.server.engine.store, ex.req, { platform: DEFAULT_PLATFORM, signal }));
  sendJson(ex.res, 200, loaded.map((l) => ({ id: l.image.configDigest, names: l.names })));
}

/** One JSON line (`ref`, `config`, `comment`), then the root filesystem tar, already unpacked from gzip. */
async function importRoute(ex: Exchange): Promise<void> {
  const { line, rest } = await splitFirstLine(ex.req as AsyncIterable<Buffer>, ex.server.limits.maxJsonBytes);
  const o = (parseClientJson(line, 'the import options') ?? {}) as { ref?: unknown; config?: unknown; comment?: unknown };
  if (o.ref !== undefined && typeof o.ref !== 'string') throw new KilnError('INVALID_REQUEST', 'An import\'s "ref" must be a string');
  if (o.ref !== undefined) parseReference(o.ref);
  if (typeof o.config !== 'object' || o.config === null || Array.isArray(o.config)) throw new KilnError('INVALID_REQUEST', 'An import needs "config", an object');
  const image = await ex.server.task(ex.signal, (signal) =>
    importImage(ex.server.engine.store, Readable.from(rest), { ref: o.ref as string | undefined, config: o.config as ContainerConfig, comment: typeof o.comment === 'string' ? o.comment : 'kiln import', signal }),
  );
  sendJson(ex.res, 200, { id: image.configDigest });
}

/**
 * One JSON line (a RunRequest and whether standard input follows), then that input. The answer
 * streams the container's output as it comes and ends with its exit code. Bind mounts are never
 * taken from the wire: a client must not reach the server's files.
 */
async function run(ex: Exchange): Promise<void> {
  const { line, rest } = await splitFirstLine(ex.req as AsyncIterable<Buffer>, ex.server.limits.maxJsonBytes);
  const r = (parseClientJson(line, 'the run options') ?? {}) as RunRequest & { stdin?: boolean };
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (typeof r.ref !== 'string' || !strings(r.cmd) || !strings(r.env) || (r.network !== 'default' && r.network !== 'host' && r.network !== 'none')) {
    throw new KilnError('INVALID_REQUEST', 'A run request needs "ref", "cmd", "env" and "network" (default, host or none)');
  }
  if (r.network === 'host') ex.server.requireEntitlement('network.host', '--network host');
  const request: RunRequest = {
    ref: r.ref,
    cmd: r.cmd,
    entrypoint: typeof r.entrypoint === 'string' ? r.entrypoint : undefined,
    env: r.env,
    workdir: typeof r.workdir === 'string' ? r.workdir : undefined,
    user: typeof r.user === 'string' ? r.user : undefined,
    network: r.network,
    // Checked again here, against this machine's limits, as `kiln run` checks its flags.
    extraHosts: parseAddHosts(list<{ host: unknown; ip: unknown }>(r.extraHosts).map((h) => `${String(h?.host)}:${String(h?.ip)}`), RUN_SPEC),
    ulimits: parseUlimits(list<{ name: unknown; soft: unknown; hard: unknown }>(r.ulimits).map((u) => `${String(u?.name)}=${String(u?.soft)}:${String(u?.hard)}`), RUN_SPEC),
    shmSize: r.shmSize === undefined ? undefined : parseShmSize(String(r.shmSize), RUN_SPEC),
  };
  const stdin = r.stdin === true ? Readable.from(rest) : undefined;
  if (!stdin) void drain(rest);
  const out = new LineStream(ex.res);
  out.start('application/x-ndjson');
  try {
    const code = await ex.server.task(ex.signal, (signal) =>
      runImage(ex.server.engine, request, {
        signal,
        stdin,
        onStdout: (c) => out.write({ type: 'stdout', data: c.toString('base64') }),
        onStderr: (c) => out.write({ type: 'stderr', data: c.toString('base64') }),
      }),
    );
    out.write({ type: 'exit', code });
  } catch (err) {
    out.write({ type: 'error', error: ex.server.wireError(err, 'a run') });
  } finally {
    stdin?.destroy();
    out.end();
  }
}

/** The spec a run request's settings are checked as. */
const RUN_SPEC: CommandSpec = { name: 'run', usage: 'kiln run [OPTIONS] IMAGE [COMMAND [ARG...]]', description: '', minPositionals: 1, maxPositionals: Infinity, options: [] };

function list<T>(v: unknown): Partial<T>[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new KilnError('INVALID_REQUEST', 'A run request\'s "extraHosts" and "ulimits" must be lists');
  return v as Partial<T>[];
}

async function drain(body: AsyncIterable<Buffer>): Promise<void> {
  try {
    for await (const _ of body) void _;
  } catch {
    // The client went away: the request's own signal ends what it asked for.
  }
}

/** Output types whose result lands on the client's disk: the server makes it, then streams it. */
export const CLIENT_OUTPUTS: readonly OutputType[] = ['local', 'tar', 'oci', 'docker'];

/**
 * `{"image", "output", "tags"}` in, where `output` is a `-o` spec without its `dest`: the server
 * exports into a directory of its own under a lease, then streams it (a file as it is, a
 * directory as a tar; `X-Kiln-Export` says which) and removes it.
 */
async function exportRoute(ex: Exchange): Promise<void> {
  const { image: ref, output, tags } = await jsonBody<{ image?: unknown; output?: unknown; tags?: unknown }>(ex);
  if (typeof ref !== 'string' || typeof output !== 'string') throw new KilnError('INVALID_REQUEST', 'An export request needs "image" and "output"');
  if (tags !== undefined && (!Array.isArray(tags) || tags.some((t) => typeof t !== 'string'))) throw new KilnError('INVALID_REQUEST', 'An export\'s "tags" must be a list of strings');
  const spec = parseOutputSpec(output);
  if (spec.dest !== undefined) throw new KilnError('INVALID_OUTPUT', `The output "${output}" names a dest: the client writes it`, { exitCode: 2 });
  if (!CLIENT_OUTPUTS.includes(spec.type)) throw new KilnError('INVALID_OUTPUT', `The output "${output}" is not one the client writes: type must be ${CLIENT_OUTPUTS.join(', ')}`, { exitCode: 2 });
  const store = ex.server.engine.store;
  const dir = store.blobs.tempPath('export');
  await store.withLease('dir', dir, () =>
    ex.server.task(ex.signal, async (signal) => {
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
        const dest = join(dir, 'out');
        const exporter = exporterFor({ ...spec, dest });
        const image = await getImage(store, ref);
        await exporter.export(store, image, { signal, tags: (tags as string[] | undefined) ?? [] });
        const isDir = (await stat(dest)).isDirectory();
        ex.res.writeHead(200, { 'Content-Type': isDir ? 'application/x-tar' : 'application/octet-stream', 'X-Kiln-Export': isDir ? 'dir' : 'file' });
        try {
          if (isDir) {
            // As a layer is tarred: hard links stay links, devices, fifos and xattrs are kept.
            await pipeline(diffTar(dest, { signal }), ex.res, { signal });
          } else {
            await pipeline(createReadStream(dest), ex.res, { signal });
          }
        } catch (err) {
          // Headers are out: cutting the connection is how the client learns the result is not whole.
          ex.res.destroy();
          if (!signal.aborted) ex.server.logError('streaming an export', err);
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }),
  );
}
