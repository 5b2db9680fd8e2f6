import { statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { dockerfileReadError } from './dockerfile-error.js';
import { autoGc } from '../../cache/gc.js';
import { isErrno, readFileQuickly } from '../../cache/fsutil.js';
import { dockerfileFrontend } from '../../frontend/index.js';
import type { RunDefaults } from '../../frontend/frontend.js';
import { parseIgnoreFile } from '../../frontend/ignore/index.js';
import type { BuildDefinition, Platform } from '../../solver/graph.js';
import { ProgressNumbers, type ProgressSink, type TransferSink } from '../../solver/progress.js';
import type { Session } from '../../solver/worker.js';
import type { CacheFrom, CacheTo } from '../cache-export/spec.js';
import type { Engine } from '../engine.js';
import type { Exporter } from '../export/exporter.js';
import { tagImage, writeImage, type LocalImage } from '../image/local.js';
import { normalizeName } from '../image/reference.js';
import { assembleConfig } from './assemble.js';
import { storeResolver } from './resolver.js';

export interface BuildRequest {
  contextDir: string;
  /** Path of the Dockerfile, or '-' with `dockerfileText` given. */
  dockerfile?: string;
  dockerfileText?: string;
  /** The Dockerfile's name in messages and locations when `dockerfileText` is given (`Dockerfile`). */
  dockerfileName?: string;
  /**
   * The context's ignore patterns, when the caller read them itself (a server reads them inside
   * the upload, never through a link out of it); otherwise they are read from the context.
   */
  ignorePatterns?: string[];
  buildArgs?: Record<string, string>;
  tags?: string[];
  target?: string;
  noCache?: boolean;
  /** Stages whose steps run again whatever the cache holds. */
  noCacheFilter?: string[];
  /** Secrets, agent sockets and entitlements (src/build/session.ts). */
  session?: Session;
  exporters?: Exporter[];
  /** Registries that may be reached over plain HTTP (`--insecure-registry`). */
  insecureRegistries?: string[];
  progress?: ProgressSink;
  signal?: AbortSignal;
  /** Ask the registry for every base image even when the store has it (`--pull`). */
  pull?: boolean;
  /** What every RUN step gets unless it says otherwise (`--network`, `--add-host`, `--ulimit`, `--shm-size`). */
  runDefaults?: RunDefaults;
  /** False for a build service's clients: no `file://` git source (FrontendRequest.hostSources). */
  hostSources?: boolean;
  /** False for a build service's clients: `--cache-from` hits stay this build's (SolveOptions.keepImported). */
  keepImported?: boolean;
  /** Labels set on the final image over the Dockerfile's own (`docker build --label`). */
  labels?: Record<string, string>;
  /**
   * Names this build apart for cache-miss explanations instead of the context directory: a
   * server unpacks every upload into a new directory, so it passes the client's own context.
   */
  scope?: string;
  /** Where to export the build cache (`--cache-to`). */
  cacheTo?: CacheTo[];
  /** Exported caches to reuse (`--cache-from`); one that cannot be read is a warning. */
  cacheFrom?: CacheFrom[];
}

export interface BuildResult {
  image: LocalImage;
  warnings: BuildDefinition['warnings'];
}

export const LINUX_AMD64: Platform = { os: 'linux', architecture: 'amd64' };

/** Reads the request's inputs, compiles, solves, writes the image, tags it, runs exporters. */
export async function build(engine: Engine, req: BuildRequest): Promise<BuildResult> {
  const progress = req.progress ?? (() => {});
  const contextDir = resolve(req.contextDir);
  await checkContext(contextDir);
  const tags = (req.tags ?? []).map(normalizeName);
  const numbers = new ProgressNumbers();

  const { text, file } = await readDockerfile(req, contextDir);
  const defId = numbers.id('internal:definition');
  progress({ type: 'vertex.start', id: defId, name: `[internal] load build definition from ${file}`, time: Date.now() });
  progress({ type: 'vertex.done', id: defId, time: Date.now(), duration: 0 });
  const ignoreId = numbers.id('internal:dockerignore');
  progress({ type: 'vertex.start', id: ignoreId, name: '[internal] load .dockerignore', time: Date.now() });
  const exclude = await readDockerignore(contextDir, req);
  progress({ type: 'vertex.done', id: ignoreId, time: Date.now(), duration: 0 });

  const def = await dockerfileFrontend.compile({
    dockerfile: text,
    file,
    buildArgs: req.buildArgs ?? {},
    target: req.target,
    context: { name: 'context', source: contextDir, exclude },
    platform: LINUX_AMD64,
    resolver: storeResolver(engine.store, { insecureRegistries: req.insecureRegistries, alwaysPull: req.pull, progress, numbers }),
    runDefaults: req.runDefaults,
    hostSources: req.hostSources,
    signal: req.signal,
  });
  for (const w of def.warnings) progress({ type: 'warning', message: w.message, rule: w.rule, location: w.location });
  const failing = def.checkError ? def.warnings.filter((w) => w.rule !== undefined) : [];
  if (failing.length > 0) {
    throw new KilnError('CHECK_FAILED', `The Dockerfile's checks found ${failing.length} problem${failing.length === 1 ? '' : 's'} and "# check=error=true" makes them fatal`, {
      location: failing[0]!.location,
      hint: `${failing[0]!.rule}: ${failing[0]!.message}`,
    });
  }

  // Loaded only for reproducible builds: most builds never clamp a time.
  const reproducible = (req.buildArgs?.SOURCE_DATE_EPOCH ?? process.env.SOURCE_DATE_EPOCH) !== undefined ? await import('../image/reproducible.js') : undefined;
  const epoch = reproducible?.sourceDateEpoch(req.buildArgs ?? {});
  // Loaded only for builds that share their cache: most builds never touch a remote one.
  const remote = req.cacheTo?.length || req.cacheFrom?.length ? await import('../cache-export/run.js') : undefined;
  const cacheImports = remote && req.cacheFrom?.length && !req.noCache ? await remote.importCaches(engine.store, req.cacheFrom, { progress, numbers, signal: req.signal, insecureRegistries: req.insecureRegistries }) : [];
  const results = def.root
    ? await engine.solver.solve([def.root], {
        noCache: req.noCache,
        noCacheFilter: req.noCacheFilter,
        signal: req.signal,
        progress,
        numbers,
        // Explanations compare with the last build of the same Dockerfile in the same context.
        scope: req.scope ?? `${contextDir}\0${req.dockerfile === undefined ? file : resolve(req.dockerfile)}`,
        buildArgs: Object.keys(req.buildArgs ?? {}),
        session: req.session,
        cacheImports,
        keepImported: req.keepImported,
        sourceDateEpoch: epoch,
      })
    : new Map();
  req.signal?.throwIfAborted();
  const assembled = assembleConfig(def, results);
  const config = req.labels && Object.keys(req.labels).length > 0 ? { ...assembled, config: { ...assembled.config, Labels: { ...assembled.config.Labels, ...req.labels } } } : assembled;
  const exportId = numbers.id('internal:export');
  const start = Date.now();
  progress({ type: 'vertex.start', id: exportId, name: 'exporting to image', time: start });
  const layers = def.root ? results.get(def.root.digest)!.snapshot.layers : [];
  // The steps wrote their layers with clamped times already (the epoch is in their keys).
  let finalConfig = reproducible && epoch !== undefined ? reproducible.clampConfig(config, epoch) : config;
  if (remote && req.cacheTo?.some((c) => c.type === 'inline')) finalConfig = remote.inlineCache(finalConfig, results, def.root);
  const image = await writeImage(engine.store, finalConfig, layers, { signal: req.signal });
  const onTransfer: TransferSink = (t) => progress({ type: 'transfer', id: exportId, ...t, time: Date.now() });
  for (const exporter of req.exporters ?? []) await exporter.export(engine.store, image, { signal: req.signal, tags, onTransfer });
  if (remote && req.cacheTo?.length) await remote.exportCaches(engine.store, req.cacheTo, results, def.root, { progress, numbers, signal: req.signal, insecureRegistries: req.insecureRegistries });
  req.signal?.throwIfAborted();
  if (tags.length > 0) tagImage(engine.store, image, tags);
  progress({ type: 'vertex.done', id: exportId, time: Date.now(), duration: Date.now() - start });
  // The image is tagged and safe: now keep the build cache within its limit (cache/gc.ts). A
  // build that ran no step added no layer, so it skips the check (a statfs and a sum per build).
  const ran = [...results.values()].some((r) => !r.cached);
  const gc = ran ? await autoGc(engine.store, { keepImages: [image.manifestDigest] }) : undefined;
  if (gc && gc.records + gc.cacheMounts + (gc.images ?? 0) > 0) {
    const images = gc.images ? `${gc.images} untagged image${gc.images === 1 ? '' : 's'}, ` : '';
    progress({ type: 'info', message: `Removed ${images}${gc.records} cache records and ${gc.cacheMounts} cache mounts to keep the build cache within its limit` });
  }
  return { image, warnings: def.warnings };
}

async function checkContext(dir: string): Promise<void> {
  try {
    const st = statSync(dir);
    if (!st.isDirectory()) throw new KilnError('CONTEXT_NOT_DIR', `The build context "${dir}" is not a directory`);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new KilnError('CONTEXT_MISSING', `The build context "${dir}" does not exist`);
    throw err;
  }
}

async function readDockerfile(req: BuildRequest, contextDir: string): Promise<{ text: string; file: string }> {
  if (req.dockerfileText !== undefined) return { text: req.dockerfileText, file: req.dockerfileName ?? 'Dockerfile' };
  const path = resolve(req.dockerfile ?? `${contextDir}/Dockerfile`);
  try {
    return { text: (await readFileQuickly(path)).toString('utf8'), file: basename(path) };
  } catch (err) {
    throw dockerfileReadError(err, path);
  }
}

/**
 * The ignore file beside the Dockerfile (`NAME.dockerignore`, e.g. `app.Dockerfile.dockerignore`)
 * wins over `.dockerignore` at the context root.
 */
async function readDockerignore(contextDir: string, req: Pick<BuildRequest, 'dockerfile' | 'dockerfileText' | 'ignorePatterns'>): Promise<string[]> {
  if (req.ignorePatterns !== undefined) return req.ignorePatterns;
  const candidates = [`${contextDir}/.dockerignore`];
  if (req.dockerfileText === undefined) candidates.unshift(`${resolve(req.dockerfile ?? `${contextDir}/Dockerfile`)}.dockerignore`);
  for (const path of candidates) {
    try {
      return parseIgnoreFile((await readFileQuickly(path)).toString('utf8'), { file: basename(path) });
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
  return [];
}

/** `kiln build --check`: compiles every stage for its warnings and builds nothing. */
export async function checkBuild(engine: Engine, req: BuildRequest): Promise<{ warnings: BuildDefinition['warnings']; error: boolean }> {
  const contextDir = resolve(req.contextDir);
  await checkContext(contextDir);
  const { text, file } = await readDockerfile(req, contextDir);
  const exclude = await readDockerignore(contextDir, req);
  const def = await dockerfileFrontend.compile({
    dockerfile: text,
    file,
    buildArgs: req.buildArgs ?? {},
    target: req.target,
    context: { name: 'context', source: contextDir, exclude },
    platform: LINUX_AMD64,
    resolver: storeResolver(engine.store),
    signal: req.signal,
    check: true,
  });
  return { warnings: def.warnings, error: def.checkError === true && def.warnings.some((w) => w.rule !== undefined) };
}
