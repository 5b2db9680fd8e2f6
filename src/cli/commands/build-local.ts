import { readFileSync } from 'node:fs';
import { KilnError } from '../../../cache/errors.js';
import { build } from '../../build/build.js';
import { Engine } from '../../engine.js';
import { ImageExporter } from '../../export/image.js';
import { parseOutput } from '../../export/outputs.js';
import { type CacheFrom, type CacheTo, parseCacheFrom, parseCacheTo } from '../../cache-export/spec.js';
import { parseReference } from '../../image/reference.js';
import { usageError, type CommandSpec, type ParsedArgs } from '../args.js';
import type { CommandIO } from '../main.js';
import { parseBuildArgs, parseExtraBuildFlags, parseStepLimits } from '../build-flags.js';
import { runCheck } from '../check.js';
import { createSession, parseEntitlement, parseSecretSpec, parseSshSpec } from '../../build/session.js';
import { type BuildRunner, dockerfileSource, presentBuild } from '../present-build.js';
import type { StdinContext } from '../stdin-context.js';

/** `kiln build` in this process, on the local store. */
export async function localBuild({ options, positionals }: ParsedArgs, io: CommandIO, spec: CommandSpec): Promise<number> {
  const extra = parseExtraBuildFlags(options, spec);
  const tags = (options.tag as string[] | undefined) ?? [];
  for (const t of tags) parseReference(t);
  let exporters;
  let cacheTo: CacheTo[] = [];
  let cacheFrom: CacheFrom[] = [];
  try {
    const insecureRegistries = (options['insecure-registry'] as string[] | undefined) ?? [];
    exporters = ((options.output as string[] | undefined) ?? []).map((o) => parseOutput(o, { insecureRegistries }));
    cacheTo = ((options['cache-to'] as string[] | undefined) ?? []).map(parseCacheTo);
    cacheFrom = ((options['cache-from'] as string[] | undefined) ?? []).map(parseCacheFrom);
    if (options.push === true) {
      if (tags.length === 0) throw usageError('"--push" needs at least one -t REF to push to', spec);
      exporters.push(new ImageExporter({ push: true, tag: false, insecureRegistries }));
    }
  } catch (err) {
    if (err instanceof KilnError && (err.code === 'INVALID_OUTPUT' || err.code === 'INVALID_CACHE_SPEC')) throw usageError(err.message, spec);
    throw err;
  }
  const file = options.file as string | undefined;
  const context = positionals[0]!;
  let dockerfileText: string | undefined;
  if (file === '-') {
    try {
      dockerfileText = readFileSync(0, 'utf8');
    } catch (err) {
      throw new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile from standard input: ${(err as Error).message}`);
    }
  }
  if (options.check === true) {
    if (context === '-') throw usageError('"--check" reads the Dockerfile from a context directory or "-f FILE", not from a context on standard input', spec);
    return runCheck({ contextDir: context, dockerfile: file === '-' ? undefined : file, dockerfileText, target: options.target as string | undefined, buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? [], spec) }, io.stderr);
  }
  const session = await buildSession(options, spec);
  const parallelism = options['max-parallelism'] as string | undefined;
  if (parallelism !== undefined && !/^[1-9]\d*$/.test(parallelism)) {
    throw usageError(`Invalid --max-parallelism "${parallelism}": expected a positive number`, spec);
  }
  const stepLimits = parseStepLimits(options, spec);
  const engine = await Engine.open({ maxParallelism: parallelism === undefined ? undefined : Number(parallelism), stepLimits });
  let stdin: StdinContext | undefined;
  try {
    let contextDir = context;
    let dockerfile = file === '-' ? undefined : file;
    let scope: string | undefined;
    if (context === '-') {
      stdin = await (await import('../stdin-context.js')).stdinContext(engine.store, io.signal, file);
      contextDir = stdin.dir;
      dockerfile = stdin.dockerfile;
      dockerfileText = stdin.dockerfileText;
      // The cache records of one Dockerfile on standard input explain each other's misses.
      scope = `-\0${file ?? 'Dockerfile'}`;
    }
    const run: BuildRunner = async ({ progress }) => {
      const result = await build(engine, {
        contextDir,
        dockerfile,
        dockerfileText,
        scope,
        buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? [], spec),
        tags,
        target: options.target as string | undefined,
        noCache: options['no-cache'] === true,
        noCacheFilter: (options['no-cache-filter'] as string[] | undefined) ?? [],
        session,
        exporters,
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
        cacheTo,
        cacheFrom,
        labels: extra.labels,
        runDefaults: extra.runDefaults,
        pull: extra.pull,
        progress,
        signal: io.signal,
      });
      const { image } = result;
      return { id: image.configDigest, manifestDigest: image.manifestDigest, mediaType: image.manifest.mediaType, manifestSize: await engine.store.blobs.size(image.manifestDigest) };
    };
    return await presentBuild(run, { options, io, tags, source: dockerfileSource(contextDir, dockerfile, dockerfileText) });
  } finally {
    await stdin?.dispose();
    await engine.close();
  }
}

async function buildSession(options: Record<string, unknown>, spec: CommandSpec) {
  try {
    return await createSession({
      secrets: ((options.secret as string[] | undefined) ?? []).map(parseSecretSpec),
      ssh: ((options.ssh as string[] | undefined) ?? []).map((s) => parseSshSpec(s)),
      // The host's network is the local user's own: a local build has it without asking.
      allow: [...((options.allow as string[] | undefined) ?? []).map(parseEntitlement), 'network.host'],
    });
  } catch (err) {
    if (err instanceof KilnError && err.exitCode === 2) throw usageError(err.message, spec);
    throw err;
  }
}

