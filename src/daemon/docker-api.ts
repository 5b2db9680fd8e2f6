/**
 * The part of the Docker Engine API that the stock docker client uses for the classic builder
 * and for images. Paths come with or without a `/v1.NN` prefix; errors are Docker's
 * `{"message": …}`.
 */
import { cpus, hostname, release, totalmem } from 'node:os';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { KilnError, VertexError } from '../../cache/errors.js';
import type { ProgressEvent } from '../../solver/progress.js';
import { writeDockerArchive } from '../export/docker.js';
import { type ExportImage, prepareExport } from '../image/convert.js';
import { getImage, tagImage } from '../image/local.js';
import { DEFAULT_PLATFORM } from '../image/platform.js';
import { familiarName, familiarRepository, normalizeName, parseReference } from '../image/reference.js';
import { receiveContext } from './context.js';
import { compileMatch, type Matcher } from '../fsutil/match.js';
import { LineStream, parseClientJson, readBody, sendJson } from './http.js';
import { registryHost } from '../cli/commands/login.js';
import { type ImageSummary, imageHistory, listImages, removeImage } from './images.js';
import { intermediateImages, pruneImages } from '../image/remove.js';
import { diskUsage, parseDuration, prune } from '../../cache/gc.js';
import type { Exchange } from './server.js';
import { kilnVersion } from './version.js';
import { SECURITY_OPTIONS } from '../executor/security.js';
import { cgroupSupport } from '../executor/cgroup.js';
import type { WireBuildOptions } from './wire.js';

/** The newest API version answered; clients negotiate down to theirs through `/_ping`. */
export const DOCKER_API_VERSION = '1.43';
export const DOCKER_MIN_API_VERSION = '1.24';

/** Endpoint families of the Docker API that Kiln knowingly leaves out (501 rather than 404). */
const UNIMPLEMENTED = /^\/(containers|exec|networks|volumes|swarm|services|nodes|tasks|secrets|configs|plugins|system|events|session|grpc|distribution|commit|auth|build\/prune|images\/search|images\/prune)(\/|$)/;

export async function handleDocker(ex: Exchange): Promise<void> {
  const { req, path, res } = ex;
  const method = req.method ?? 'GET';
  const q = ex.url.searchParams;
  if (path === '/_ping' && (method === 'GET' || method === 'HEAD')) {
    res.writeHead(200, {
      'Content-Type': 'text/plain; charset=utf-8',
      'API-Version': DOCKER_API_VERSION,
      'OSType': 'linux',
      'Docker-Experimental': 'false',
      // The classic builder: Kiln speaks no BuildKit session protocol.
      'Builder-Version': '1',
      'Cache-Control': 'no-cache, no-store, must-revalidate',
      'Pragma': 'no-cache',
    });
    res.end(method === 'HEAD' ? undefined : 'OK');
    return;
  }
  if (method === 'GET' && path === '/version') return sendJson(res, 200, versionBody());
  if (method === 'GET' && path === '/info') return sendJson(res, 200, infoBody(ex));
  if (method === 'POST' && path === '/build') return buildRoute(ex);
  if (method === 'POST' && path === '/auth') return authRoute(ex);
  if (method === 'GET' && path === '/images/json') return imagesJson(ex);
  if (method === 'POST' && path === '/images/prune') return imagesPrune(ex);
  if (method === 'POST' && path === '/build/prune') return buildPrune(ex);
  if (method === 'GET' && path === '/system/df') return systemDf(ex);
  if (method === 'POST' && path === '/images/create') return pullRoute(ex);
  if (method === 'POST' && path === '/images/load') return loadRoute(ex);
  if (method === 'GET' && path === '/images/get') return saveRoute(ex, q.getAll('names'));
  let m: RegExpExecArray | null;
  if (method === 'GET' && (m = /^\/images\/(.+)\/json$/.exec(path))) return inspectRoute(ex, decodeURIComponent(m[1]!));
  if (method === 'GET' && (m = /^\/images\/(.+)\/history$/.exec(path))) return historyRoute(ex, decodeURIComponent(m[1]!));
  if (method === 'GET' && (m = /^\/images\/(.+)\/get$/.exec(path))) return saveRoute(ex, [decodeURIComponent(m[1]!)]);
  if (method === 'POST' && (m = /^\/images\/(.+)\/tag$/.exec(path))) return tagRoute(ex, decodeURIComponent(m[1]!));
  if (method === 'POST' && (m = /^\/images\/(.+)\/push$/.exec(path))) return pushRoute(ex, decodeURIComponent(m[1]!));
  if (method === 'DELETE' && (m = /^\/images\/(.+)$/.exec(path))) {
    const events = await removeImage(ex.server.engine.store, decodeURIComponent(m[1]!), { force: q.get('force') === '1' || q.get('force') === 'true' });
    return sendJson(res, 200, events.map((e) => ('untagged' in e ? { Untagged: e.untagged } : { Deleted: e.deleted })));
  }
  const known = UNIMPLEMENTED.test(path) || /^\/images\//.test(path);
  throw new KilnError(known ? 'NOT_IMPLEMENTED' : 'NOT_FOUND', `${known ? 'Kiln does not implement' : 'No such endpoint'} ${method} ${path} of the Docker Engine API`, {
    hint: known ? 'Kiln serves builds and images; containers, networks and volumes are out of its scope' : undefined,
  });
}

function versionBody() {
  const details = { ApiVersion: DOCKER_API_VERSION, MinAPIVersion: DOCKER_MIN_API_VERSION, Os: 'linux', Arch: 'amd64', KernelVersion: release() };
  return {
    Platform: { Name: 'Kiln' },
    Components: [{ Name: 'Engine', Version: kilnVersion(), Details: details }],
    Version: kilnVersion(),
    GitCommit: '',
    GoVersion: process.version,
    BuildTime: '',
    ...details,
  };
}

function cgroupFlags() {
  const c = cgroupSupport();
  return {
    MemoryLimit: c.memory,
    SwapLimit: c.swap,
    CpuCfsPeriod: c.cpu,
    CpuCfsQuota: c.cpu,
    CPUShares: c.cpu,
    CPUSet: c.cpuset,
    PidsLimit: c.pids,
    CgroupVersion: c.version === null ? '' : String(c.version),
  };
}

function infoBody(ex: Exchange) {
  const store = ex.server.engine.store;
  return {
    ID: 'kiln',
    Containers: 0,
    ContainersRunning: 0,
    ContainersPaused: 0,
    ContainersStopped: 0,
    Images: store.db.allManifests().length,
    Driver: 'overlayfs',
    DriverStatus: [['Store', store.root]],
    Plugins: { Volume: [], Network: [], Authorization: null, Log: [] },
    // What the kernel lets a container be limited by, as dockerd reports it; the limits each
    // step gets are in Kiln's /v1/info.
    ...cgroupFlags(),
    Debug: false,
    NFd: 0,
    NGoroutines: 0,
    SystemTime: new Date().toISOString(),
    LoggingDriver: 'none',
    CgroupDriver: 'cgroupfs',
    KernelVersion: release(),
    OperatingSystem: 'Kiln',
    OSType: 'linux',
    Architecture: 'x86_64',
    NCPU: cpus().length,
    MemTotal: totalmem(),
    IndexServerAddress: 'https://index.docker.io/v1/',
    RegistryConfig: { IndexConfigs: {}, InsecureRegistryCIDRs: ['127.0.0.0/8'], Mirrors: [] },
    Name: hostname(),
    Labels: [],
    ExperimentalBuild: false,
    ServerVersion: kilnVersion(),
    Runtimes: { runc: { path: ex.server.engine.executor.runtime } },
    DefaultRuntime: ex.server.engine.executor.runtime,
    Swarm: { NodeID: '', NodeAddr: '', LocalNodeState: 'inactive', ControlAvailable: false, Error: '', RemoteManagers: null },
    LiveRestoreEnabled: false,
    Isolation: '',
    InitBinary: '',
    SecurityOptions: [...SECURITY_OPTIONS],
    DockerRootDir: store.root,
    Warnings: null,
  };
}

async function imagesJson(ex: Exchange): Promise<void> {
  const store = ex.server.engine.store;
  const filters = imageFilters(ex.url.searchParams.get('filters'));
  const all = ex.url.searchParams.get('all');
  const hidden = all === '1' || all === 'true' ? new Set<string>() : await intermediateImages(store);
  const rows = [];
  for (const i of listImages(store)) {
    if (hidden.has(i.manifest)) continue;
    let tags = i.names.map(familiarName);
    if (filters.dangling !== undefined && (tags.length === 0) !== filters.dangling) continue;
    if (filters.reference.length > 0) {
      tags = tags.filter((t) => filters.reference.some((match) => match(t) || match(t.slice(0, t.lastIndexOf(':')))));
      if (tags.length === 0) continue;
    }
    // Labels are in each image's config: read only to filter by them.
    const labels = filters.label.length > 0 ? ((await getImage(store, i.manifest)).config.config?.Labels ?? {}) : {};
    if (!filters.label.every(([k, v]) => (v === undefined ? k in labels : labels[k] === v))) continue;
    rows.push(imageSummary(i, tags, labels));
  }
  sendJson(ex.res, 200, rows);
}

/** One image as docker's image list and `system df` give it. */
function imageSummary(i: ImageSummary, tags: string[], labels: Record<string, string>) {
  return { Id: i.id, ParentId: '', RepoTags: tags, RepoDigests: [], Created: Math.floor(i.created / 1000), Size: i.size, SharedSize: -1, VirtualSize: i.size, Labels: labels, Containers: -1 };
}

/**
 * `docker image prune`: the dangling images, or every image with `-a` (`dangling=false`), and
 * `until=` a duration or a time. Only records go: the space comes back with `kiln prune`'s or the
 * automatic GC's next pass, so SpaceReclaimed is 0.
 */
async function imagesPrune(ex: Exchange): Promise<void> {
  const { dangling = true, until } = pruneFilters(ex.url.searchParams.get('filters'));
  const r = await pruneImages(ex.server.engine.store, { all: !dangling, createdBefore: until });
  sendJson(ex.res, 200, { ImagesDeleted: [...r.untagged.map((n) => ({ Untagged: familiarName(n) })), ...r.deleted.map((d) => ({ Deleted: d }))], SpaceReclaimed: 0 });
}

/**
 * `docker system df [-v]`: the images, and the build cache as `kiln du` lists it (records, cache
 * mounts, uploaded context files). Kiln has no containers or volumes.
 */
async function systemDf(ex: Exchange): Promise<void> {
  const store = ex.server.engine.store;
  const usage = await ex.server.task(ex.signal, () => diskUsage(store));
  const iso = (ms: number) => new Date(ms).toISOString();
  sendJson(ex.res, 200, {
    LayersSize: usage.images,
    Images: listImages(store).map((i) => imageSummary(i, i.names.map(familiarName), {})),
    Containers: [],
    Volumes: [],
    BuildCache: usage.records.map((r) => ({
      ID: r.id,
      Parent: '',
      Parents: null,
      Type: r.type === 'cache' ? 'regular' : r.type === 'cache-mount' ? 'exec.cachemount' : 'source.local',
      Description: r.description,
      InUse: r.inUse,
      Shared: r.shared,
      Size: r.size,
      CreatedAt: iso(r.lastUsed),
      LastUsedAt: iso(r.lastUsed),
      UsageCount: 1,
    })),
  });
}

/**
 * `docker builder prune [-a] [--filter until=…] [--keep-storage …]`: Kiln's own build cache
 * collection (`kiln prune`), which it maps onto one to one.
 */
async function buildPrune(ex: Exchange): Promise<void> {
  const q = ex.url.searchParams;
  let olderThanMs: number | undefined;
  for (const [key, values] of Object.entries(filterValues(q.get('filters')))) {
    if (key !== 'until') throw new KilnError('INVALID_REQUEST', `Kiln does not prune the build cache by "${key}"`, { exitCode: 2, hint: 'It prunes by until, with --all and --keep-storage' });
    olderThanMs = Math.max(0, Date.now() - untilTime(values));
  }
  const keep = q.get('keep-storage') ?? q.get('reserved-space');
  if (keep !== null && !/^\d+$/.test(keep)) throw new KilnError('INVALID_REQUEST', `The "keep-storage" parameter "${keep}" is not a number of bytes`, { exitCode: 2 });
  const all = q.get('all') === '1' || q.get('all') === 'true';
  const options = { all, olderThanMs, keepBytes: keep === null || keep === '0' ? undefined : Number(keep) };
  const r = await ex.server.task(ex.signal, () => prune(ex.server.engine.store, options));
  sendJson(ex.res, 200, { CachesDeleted: r.removed, SpaceReclaimed: r.freed });
}

function pruneFilters(text: string | null): { dangling?: boolean; until?: number } {
  const out: { dangling?: boolean; until?: number } = {};
  for (const [key, values] of Object.entries(filterValues(text))) {
    if (key === 'dangling') out.dangling = parseDangling(values);
    else if (key === 'until') out.until = untilTime(values);
    else throw new KilnError('INVALID_REQUEST', `Kiln does not prune images by "${key}"`, { exitCode: 2, hint: 'It prunes by dangling and until' });
  }
  return out;
}

/** Docker's `until` filter as a time (ms): a duration before now (`24h`), Unix seconds or a date. */
function untilTime(values: readonly string[]): number {
  const v = values[0] ?? '';
  const ms = parseDuration(v);
  const at = Number.isNaN(ms) ? (/^\d+(\.\d+)?$/.test(v) ? Number(v) * 1000 : Date.parse(v)) : Date.now() - ms;
  if (Number.isNaN(at)) throw new KilnError('INVALID_REQUEST', `Invalid filter "until=${v}": expected a duration such as 24h or a time`, { exitCode: 2 });
  return at;
}

/**
 * The `filters` of GET /images/json that `docker images --filter` sends: `reference` (a glob
 * on the name, with or without its tag: `*` stops at `/`), `dangling` and `label` (KEY or
 * KEY=VALUE).
 */
function imageFilters(text: string | null): { reference: Matcher[]; dangling?: boolean; label: [string, string | undefined][] } {
  const out: { reference: Matcher[]; dangling?: boolean; label: [string, string | undefined][] } = { reference: [], label: [] };
  for (const [key, values] of Object.entries(filterValues(text))) {
    if (key === 'reference') out.reference = values.map((v) => compileMatch(v));
    else if (key === 'dangling') out.dangling = parseDangling(values);
    else if (key === 'label') out.label = values.map((v) => (v.includes('=') ? [v.slice(0, v.indexOf('=')), v.slice(v.indexOf('=') + 1)] : [v, undefined]));
    else throw new KilnError('INVALID_REQUEST', `Kiln does not filter images by "${key}"`, { exitCode: 2, hint: 'It filters by reference, dangling and label' });
  }
  return out;
}

/** Docker's `filters` parameter, in either JSON form clients send: `{"k":{"v":true}}` or `{"k":["v"]}`. */
function filterValues(text: string | null): Record<string, string[]> {
  if (text === null || text === '') return {};
  const parsed = parseClientJson(text, 'the "filters" parameter', { exitCode: 2 });
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new KilnError('INVALID_REQUEST', 'The "filters" parameter is not a JSON object', { exitCode: 2 });
  return Object.fromEntries(Object.entries(parsed).map(([k, raw]) => [k, Array.isArray(raw) ? raw.map(String) : typeof raw === 'object' && raw !== null ? Object.keys(raw) : []]));
}

function parseDangling(values: readonly string[]): boolean {
  if (values.some((v) => v !== 'true' && v !== 'false' && v !== '1' && v !== '0')) throw new KilnError('INVALID_REQUEST', `Invalid filter "dangling=${values.join(',')}": expected true or false`, { exitCode: 2 });
  return values.some((v) => v === 'true' || v === '1');
}


const EMPTY_CONTAINER_CONFIG = {
  Hostname: '',
  Domainname: '',
  User: '',
  AttachStdin: false,
  AttachStdout: false,
  AttachStderr: false,
  ExposedPorts: null,
  Tty: false,
  OpenStdin: false,
  StdinOnce: false,
  Env: null,
  Cmd: null,
  Image: '',
  Volumes: null,
  WorkingDir: '',
  Entrypoint: null,
  OnBuild: null,
  Labels: null,
};

async function inspectRoute(ex: Exchange, name: string): Promise<void> {
  const store = ex.server.engine.store;
  const image = await getImage(store, name).catch(noSuchImage(name));
  const names = store.db.allTags().filter((t) => t.manifest === image.manifestDigest).map((t) => familiarName(t.name));
  const c = image.config;
  sendJson(ex.res, 200, {
    Id: image.configDigest,
    RepoTags: names,
    RepoDigests: [],
    Parent: '',
    Comment: '',
    Created: c.created ?? new Date(0).toISOString(),
    DockerVersion: '',
    Author: c.author ?? '',
    // Every key docker's inspect has, so that templates such as {{.Config.Cmd}} work unset too.
    Config: { ...EMPTY_CONTAINER_CONFIG, ...c.config },
    Architecture: c.architecture,
    Os: c.os,
    Size: image.layers.reduce((n, l) => n + l.blobSize, 0),
    GraphDriver: { Name: 'overlayfs', Data: null },
    RootFS: { Type: 'layers', Layers: c.rootfs.diff_ids },
    Metadata: { LastTagTime: '0001-01-01T00:00:00Z' },
  });
}

async function historyRoute(ex: Exchange, name: string): Promise<void> {
  const image = await getImage(ex.server.engine.store, name).catch(noSuchImage(name));
  const rows = imageHistory(image).map((h, i) => ({
    Id: i === 0 ? image.configDigest : '<missing>',
    Created: Math.floor(h.created / 1000),
    CreatedBy: h.createdBy,
    Tags: null,
    Size: h.size,
    Comment: h.comment,
  }));
  sendJson(ex.res, 200, rows);
}

function noSuchImage(name: string) {
  return (err: unknown): never => {
    if (err instanceof KilnError && err.code === 'IMAGE_UNKNOWN') throw new KilnError('IMAGE_UNKNOWN', `No such image: ${name}`);
    throw err;
  };
}

async function tagRoute(ex: Exchange, name: string): Promise<void> {
  const repo = ex.url.searchParams.get('repo');
  if (!repo) throw new KilnError('INVALID_REQUEST', 'The tag request needs a "repo" parameter', { exitCode: 2 });
  const tag = ex.url.searchParams.get('tag');
  const target = tag ? `${repo}:${tag}` : repo;
  parseReference(target);
  const store = ex.server.engine.store;
  tagImage(store, await getImage(store, name).catch(noSuchImage(name)), [target]);
  ex.res.writeHead(201).end();
}

/** A JSON array of strings in a query parameter (`cachefrom=["app:cache"]`); absent or empty is none. */
function jsonList(v: string | null, what: string): string[] {
  if (v === null || v === '' || v === 'null') return [];
  const parsed = parseClientJson(v, `the "${what}" parameter`, { exitCode: 2 });
  if (!Array.isArray(parsed) || parsed.some((x) => typeof x !== 'string')) throw new KilnError('INVALID_REQUEST', `The "${what}" parameter is not a JSON list of strings`, { exitCode: 2 });
  return parsed as string[];
}

/**
 * The RUN settings of the classic builder's query: `networkmode`, `extrahosts` (repeated, or
 * comma-separated), `shmsize` in bytes (0: the default) and `ulimits` as JSON
 * (`[{"Name":"nofile","Soft":1024,"Hard":2048}]`), as dockerd reads them. The server checks
 * them as it checks `kiln build`'s flags.
 */
function classicRunFlags(q: URLSearchParams): NonNullable<WireBuildOptions['runFlags']> {
  // dockerd's "bridge" is what Kiln's "default" is: a network of the step's own, NAT outside.
  const asked = q.get('networkmode') || undefined;
  const mode = asked === 'bridge' ? 'default' : asked;
  if (mode !== undefined && mode !== 'default' && mode !== 'host' && mode !== 'none') {
    throw new KilnError('INVALID_REQUEST', `Kiln builds with network "default" (or "bridge"), "host" or "none", not "${mode}" (networkmode)`, {
      exitCode: 2,
      hint: 'RUN steps get a network of their own by default; "host" needs the network.host entitlement',
    });
  }
  const addHost = q.getAll('extrahosts').flatMap((h) => h.split(',')).map((h) => h.trim()).filter(Boolean);
  const shm = q.get('shmsize');
  if (shm !== null && shm !== '' && !/^\d+$/.test(shm)) throw new KilnError('INVALID_REQUEST', `The "shmsize" parameter "${shm}" is not a number of bytes`, { exitCode: 2 });
  const ulimit: string[] = [];
  const raw = q.get('ulimits');
  if (raw !== null && raw !== '' && raw !== 'null') {
    const list = parseClientJson(raw, 'the "ulimits" parameter', { exitCode: 2 });
    if (!Array.isArray(list)) throw new KilnError('INVALID_REQUEST', 'The "ulimits" parameter is not a JSON list', { exitCode: 2 });
    for (const u of list as { Name?: unknown; Soft?: unknown; Hard?: unknown }[]) {
      if (typeof u?.Name !== 'string' || typeof u.Soft !== 'number' || typeof u.Hard !== 'number') {
        throw new KilnError('INVALID_REQUEST', 'Each of "ulimits" needs "Name", "Soft" and "Hard"', { exitCode: 2 });
      }
      ulimit.push(`${u.Name}=${u.Soft}:${u.Hard}`);
    }
  }
  return { network: mode, addHost, ulimit, shmSize: shm && shm !== '0' ? shm : undefined };
}

/**
 * `docker login` asks the daemon to check the credentials against the registry's `/v2/`; the
 * client keeps them, and sends them with each push or pull (X-Registry-Auth).
 */
async function authRoute(ex: Exchange): Promise<void> {
  const body = await readBody(ex.req, ex.server.limits.maxJsonBytes);
  const auth = (parseClientJson(body.toString('utf8'), 'the request body', { exitCode: 2 }) ?? {}) as { username?: unknown; password?: unknown; serveraddress?: unknown };
  if (typeof auth.username !== 'string' || typeof auth.password !== 'string') throw new KilnError('INVALID_REQUEST', 'A login needs "username" and "password"', { exitCode: 2 });
  const registry = registryHost(typeof auth.serveraddress === 'string' && auth.serveraddress !== '' ? auth.serveraddress : 'docker.io');
  const { RegistryClient } = await import('../registry/client.js');
  const client = new RegistryClient(registry, { credentials: { username: auth.username, password: auth.password }, attempts: 3 });
  try {
    await client.ping(ex.signal);
  } catch (err) {
    if (err instanceof KilnError && (err.code === 'UNAUTHORIZED' || err.code === 'DENIED')) {
      throw new KilnError('UNAUTHORIZED', `Login to "${registry}" failed: the registry refused the credentials of "${auth.username}"`);
    }
    throw err;
  }
  sendJson(ex.res, 200, { Status: 'Login Succeeded', IdentityToken: '' });
}

function jsonBool(v: string | null): boolean {
  return v === '1' || v === 'true' || v === 'True';
}

/**
 * A JSON object of strings in a query parameter (`buildargs`, `labels`). A build arg sent as
 * null names one whose value the client could not find: docker skips it, and so does Kiln.
 */
function jsonMap(v: string | null, what: string, options: { nulls?: boolean } = {}): Record<string, string> {
  if (!v || v === 'null') return {};
  const parsed = parseClientJson(v, `the "${what}" parameter`, { exitCode: 2 });
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new KilnError('INVALID_REQUEST', `The "${what}" parameter is not a JSON object`, { exitCode: 2 });
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(parsed)) {
    if (typeof val === 'string') out[k] = val;
    else if (!(val === null && options.nulls)) throw new KilnError('INVALID_REQUEST', `The "${what}" parameter gives "${k}" a value that is not a string`, { exitCode: 2 });
  }
  return out;
}

function errorLine(message: string) {
  return { errorDetail: { message }, error: message };
}

function dockerMessage(ex: Exchange, err: unknown, what: string): string {
  if (err instanceof VertexError) return `step ${err.vertex} failed: ${err.message}`;
  const wire = ex.server.wireError(err, what);
  return wire.hint ? `${wire.message} (${wire.hint})` : wire.message;
}

/**
 * The classic builder protocol: the context tar is the body, options are query parameters, and
 * the answer is a stream of JSON messages that the docker client prints as they come.
 */
async function buildRoute(ex: Exchange): Promise<void> {
  const q = ex.url.searchParams;
  if (q.get('remote')) throw new KilnError('NOT_IMPLEMENTED', 'Kiln does not build from a remote context (the "remote" parameter of POST /build)');
  const platform = q.get('platform');
  if (platform && platform !== 'linux/amd64' && platform !== 'linux') {
    throw new KilnError('INVALID_PLATFORM', `Kiln builds for linux/amd64 only, not "${platform}"`, { exitCode: 2 });
  }
  const quiet = jsonBool(q.get('q'));
  const tags = q.getAll('t').filter((t) => t !== '');
  for (const t of tags) parseReference(t);
  const dockerfile = q.get('dockerfile') || 'Dockerfile';
  const options: WireBuildOptions = {
    dockerfile,
    tags,
    buildArgs: jsonMap(q.get('buildargs'), 'buildargs', { nulls: true }),
    labels: jsonMap(q.get('labels'), 'labels'),
    target: q.get('target') || undefined,
    noCache: jsonBool(q.get('nocache')),
    pull: jsonBool(q.get('pull')),
    cacheFrom: jsonList(q.get('cachefrom'), 'cachefrom'),
    runFlags: classicRunFlags(q),
  };
  const settings = ex.server.settings(options);
  const context = await receiveContext(ex.server.engine.store, ex.req as AsyncIterable<Buffer>, { maxBytes: ex.server.limits.maxContextBytes, signal: ex.signal });
  const out = new LineStream(ex.res);
  out.start('application/json');
  const say = (s: string) => {
    if (!quiet) out.write({ stream: s });
  };
  const steps = new ClassicSteps(say);
  try {
    const result = await ex.server.build({
      context,
      options,
      settings,
      signal: ex.signal,
      scope: `docker\0${tags[0] ?? ''}\0${dockerfile}`,
      onQueued: (position) => say(`Waiting for a build slot: number ${position} in the queue\n`),
      progress: (e) => steps.handle(e),
    });
    const id = result.image.configDigest;
    out.write({ aux: { ID: id } });
    if (quiet) out.write({ stream: `${id}\n` });
    say(`Successfully built ${id.slice(7, 19)}\n`);
    for (const t of tags) say(`Successfully tagged ${familiarName(normalizeName(t))}\n`);
  } catch (err) {
    out.write(errorLine(dockerMessage(ex, err, 'a docker build')));
  } finally {
    out.end();
    await context.dispose();
  }
}

/** Kiln's progress events told the way the classic builder tells them: `Step 2/3 : RUN …`. */
class ClassicSteps {
  private readonly names = new Map<number, string>();
  constructor(private readonly say: (s: string) => void) {}

  handle(e: ProgressEvent): void {
    switch (e.type) {
      case 'vertex.start': {
        const m = /^\[(?:\S+ )?(\d+)\/(\d+)\] (.*)$/s.exec(e.name);
        if (!m || this.names.has(e.id)) return;
        this.names.set(e.id, e.name);
        this.say(`Step ${m[1]}/${m[2]} : ${m[3]}\n`);
        return;
      }
      case 'vertex.cached':
        if (this.names.has(e.id)) this.say(' ---> Using cache\n');
        return;
      case 'vertex.log':
        if (this.names.has(e.id)) this.say(e.data);
        return;
      case 'vertex.error':
        if (this.names.has(e.id)) this.say(` ---> Failed: ${e.message}\n`);
        return;
      case 'warning':
        this.say(`[WARNING]: ${e.message}\n`);
        return;
      default:
        return;
    }
  }
}

function registryAuth(header: string | string[] | undefined): { username: string; password: string; identityToken?: string } | undefined {
  if (typeof header !== 'string' || header === '') return undefined;
  const parsed = parseClientJson(Buffer.from(header.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'), 'the X-Registry-Auth header', { exitCode: 2 }) as { username?: unknown; password?: unknown; identitytoken?: unknown } | null;
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || [parsed.username, parsed.password, parsed.identitytoken].some((v) => v !== undefined && typeof v !== 'string')) {
    throw new KilnError('INVALID_REQUEST', 'The X-Registry-Auth header must be a JSON object of strings', { exitCode: 2 });
  }
  if (!parsed.username && !parsed.identitytoken) return undefined;
  return { username: (parsed.username as string | undefined) ?? '', password: (parsed.password as string | undefined) ?? '', identityToken: (parsed.identitytoken as string | undefined) || undefined };
}

async function pushRoute(ex: Exchange, name: string): Promise<void> {
  const tag = ex.url.searchParams.get('tag');
  const full = tag ? `${name}:${tag}` : name;
  const ref = parseReference(full);
  const credentials = registryAuth(ex.req.headers['x-registry-auth']);
  const store = ex.server.engine.store;
  const image = await getImage(store, full).catch(noSuchImage(full));
  const out = new LineStream(ex.res);
  out.start('application/json');
  out.write({ status: `The push refers to repository [${familiarRepository(ref)}]` });
  try {
    const prepared = await prepareExport(store, image, { persist: true, signal: ex.signal });
    const { pushImage } = await import('../registry/push.js');
    const result = await pushImage(store, prepared.manifestDigest, [full], {
      signal: ex.signal,
      credentials,
      onEvent: (e) => {
        if (e.type !== 'blob' || e.digest === prepared.configDigest) return;
        const status = { exists: 'Layer already exists', mounted: 'Mounted from another repository', pushing: 'Pushing', pushed: 'Pushed' }[e.status];
        out.write({ status, progressDetail: {}, id: e.digest.slice(7, 19) });
      },
    });
    const size = prepared.manifestBytes.byteLength;
    out.write({ status: `${ref.tag ?? 'latest'}: digest: ${result.digest} size: ${size}` });
    out.write({ progressDetail: {}, aux: { Tag: ref.tag ?? 'latest', Digest: result.digest, Size: size } });
  } catch (err) {
    out.write(errorLine(dockerMessage(ex, err, 'a docker push')));
  } finally {
    out.end();
  }
}

async function pullRoute(ex: Exchange): Promise<void> {
  const q = ex.url.searchParams;
  const from = q.get('fromImage');
  if (!from) throw new KilnError('NOT_IMPLEMENTED', 'Kiln does not implement image import (POST /images/create without "fromImage")');
  const tag = q.get('tag');
  const full = tag ? (tag.startsWith('sha256:') ? `${from}@${tag}` : `${from}:${tag}`) : from;
  const ref = parseReference(full);
  const credentials = registryAuth(ex.req.headers['x-registry-auth']);
  const out = new LineStream(ex.res);
  out.start('application/json');
  out.write({ status: `Pulling from ${familiarRepository(ref)}`, id: ref.digest ?? ref.tag ?? 'latest' });
  try {
    const { pullImage } = await import('../registry/pull.js');
    const result = await pullImage(ex.server.engine.store, full, {
      platform: DEFAULT_PLATFORM,
      signal: ex.signal,
      credentials,
      onEvent: (e) => {
        if (e.type !== 'layer') return;
        const status = { exists: 'Already exists', downloading: 'Downloading', done: 'Pull complete' }[e.status];
        out.write({ status, progressDetail: {}, id: e.digest.slice(7, 19) });
      },
    });
    out.write({ status: `Digest: ${result.digest}` });
    out.write({ status: `Status: ${result.downloaded > 0 ? 'Downloaded newer image' : 'Image is up to date'} for ${familiarName(result.name)}` });
  } catch (err) {
    out.write(errorLine(dockerMessage(ex, err, 'a docker pull')));
  } finally {
    out.end();
  }
}

async function saveRoute(ex: Exchange, names: string[]): Promise<void> {
  if (names.length === 0) throw new KilnError('INVALID_REQUEST', 'Name at least one image to save', { exitCode: 2 });
  const store = ex.server.engine.store;
  const byManifest = new Map<string, { image: Awaited<ReturnType<typeof getImage>>; names: string[] }>();
  for (const n of names) {
    const image = await getImage(store, n).catch(noSuchImage(n));
    const entry = byManifest.get(image.manifestDigest) ?? { image, names: [] };
    // An image named by ID is saved without a name, as docker does.
    if (!/^(sha256:)?[a-f0-9]{12,64}$/.test(n)) entry.names.push(normalizeName(n));
    byManifest.set(image.manifestDigest, entry);
  }
  const prepared: { image: ExportImage; names: string[] }[] = [];
  try {
    for (const { image, names: ns } of byManifest.values()) {
      prepared.push({ image: await prepareExport(store, image, { compression: 'uncompressed', ociMediaTypes: false, signal: ex.signal }), names: ns });
    }
    const pack = tar.pack();
    ex.res.writeHead(200, { 'Content-Type': 'application/x-tar' });
    const writing = pipeline(pack, ex.res, { signal: ex.signal });
    await writeDockerArchive(pack, prepared, ex.signal);
    pack.finalize();
    await writing;
  } finally {
    for (const p of prepared) await p.image.dispose();
  }
}

/** `quiet` hides only progress, as in dockerd: what was loaded is always told. */
async function loadRoute(ex: Exchange): Promise<void> {
  const { loadArchive } = await import('../image/archive.js');
  const loaded = await loadArchive(ex.server.engine.store, ex.req, { platform: DEFAULT_PLATFORM, signal: ex.signal });
  const out = new LineStream(ex.res);
  out.start('application/json');
  for (const l of loaded) {
    if (l.names.length === 0) out.write({ stream: `Loaded image ID: ${l.image.configDigest}\n` });
    for (const n of l.names) out.write({ stream: `Loaded image: ${familiarName(n)}\n` });
  }
  out.end();
}
