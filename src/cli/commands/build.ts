import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { KilnError } from '../../../cache/errors.js';
import { build } from '../../build/build.js';
import { Engine } from '../../engine.js';
import { ImageExporter } from '../../export/image.js';
import { parseOutput } from '../../export/outputs.js';
import { type CacheFrom, type CacheTo, parseCacheFrom, parseCacheTo } from '../../cache-export/spec.js';
import { parseReference } from '../../image/reference.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command, CommandIO } from '../main.js';
import type { ProgressSink } from '../../../solver/progress.js';
import { parseDigest } from '../../../cache/digest.js';
import { openProgressView, PROGRESS_MODES, commandProgressMode } from '../progress.js';
import { parseBuildArgs, parseExtraBuildFlags, writeMetadataFile } from '../build-flags.js';
import { runCheck } from '../check.js';
import { createSession, parseEntitlement, parseSecretSpec, parseSshSpec } from '../../build/session.js';
import { ExplainCollector } from '../../../solver/explain.js';

const spec: CommandSpec = {
  name: 'build',
  usage: 'kiln build [OPTIONS] CONTEXT',
  description: 'Build an image from a Dockerfile and a context directory.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'file', short: 'f', type: 'string', placeholder: 'FILE', description: 'Dockerfile path (default CONTEXT/Dockerfile; "-" reads standard input)' },
    { name: 'tag', short: 't', type: 'list', placeholder: 'REF', description: 'Name and tag the image (repeatable)' },
    { name: 'build-arg', type: 'list', placeholder: 'K=V', description: 'Set a build-time variable (repeatable)' },
    { name: 'target', type: 'string', placeholder: 'STAGE', description: 'Build this stage instead of the last one' },
    { name: 'no-cache', type: 'bool', description: 'Run every step, reusing nothing' },
    { name: 'progress', type: 'string', placeholder: 'MODE', choices: PROGRESS_MODES, description: 'Progress output: auto (tty on a terminal, else plain), tty, plain, rawjson (one JSON event a line) or quiet' },
    { name: 'quiet', short: 'q', type: 'bool', description: 'Print only the image ID' },
    { name: 'output', short: 'o', type: 'list', placeholder: 'SPEC', description: 'Export (repeatable): type=image|registry|oci|docker|tar|local[,dest=…][,name=…][,push=true][,compression=gzip|zstd|uncompressed]' },
    { name: 'push', type: 'bool', description: 'Push the image to the registries of its -t names (and tag it locally)' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
    { name: 'iidfile', type: 'string', placeholder: 'FILE', description: 'Write the image ID to FILE' },
    { name: 'check', type: 'bool', description: 'Run the Dockerfile checks and print their warnings; build nothing' },
    { name: 'secret', type: 'list', placeholder: 'SPEC', description: 'Secret for RUN --mount=type=secret: id=ID,src=FILE | id=ID,env=VARIABLE (repeatable)' },
    { name: 'ssh', type: 'list', placeholder: 'SPEC', description: 'SSH agent for RUN --mount=type=ssh: default | ID=SOCKET (repeatable)' },
    { name: 'allow', type: 'list', placeholder: 'ENTITLEMENT', description: 'Allow security.insecure (RUN --security=insecure)' },
    { name: 'no-cache-filter', type: 'list', placeholder: 'STAGE', description: 'Run the steps of this stage again, reusing nothing (repeatable)' },
    { name: 'max-parallelism', type: 'string', placeholder: 'N', description: 'Run at most N steps at once (default: the number of cores)' },
    { name: 'explain', type: 'bool', description: 'After the build, print why each step ran or was cached' },
    { name: 'metadata-file', type: 'string', placeholder: 'FILE', description: 'Write the image digests and names to FILE as JSON (as buildx does)' },
    { name: 'label', type: 'list', placeholder: 'K=V', description: 'Set a label on the image (repeatable)' },
    { name: 'platform', type: 'string', placeholder: 'OS/ARCH', description: 'Target platform: linux/amd64 only' },
    { name: 'pull', type: 'bool', description: 'Pull every base image from its registry even when the store has it' },
    { name: 'network', type: 'string', placeholder: 'MODE', description: 'Network of RUN steps without --network: default (the host\'s), host or none' },
    { name: 'add-host', type: 'list', placeholder: 'HOST:IP', description: 'Add a line to /etc/hosts of every RUN step (repeatable)' },
    { name: 'shm-size', type: 'string', placeholder: 'SIZE', description: 'Size of /dev/shm in RUN steps (default 64m)' },
    { name: 'ulimit', type: 'list', placeholder: 'NAME=SOFT[:HARD]', description: 'Resource limit of RUN steps, such as nofile=1024:2048 (repeatable)' },
    { name: 'cache-to', type: 'list', placeholder: 'SPEC', description: 'Export the build cache (repeatable): type=registry,ref=R | type=local,dest=DIR [,mode=min|max][,cache-mounts=true] | type=inline' },
    { name: 'cache-from', type: 'list', placeholder: 'SPEC', description: 'Reuse an exported cache (repeatable): type=registry,ref=R | type=local,src=DIR | R' },
  ],
  examples: [
    'kiln build -t app:1 .                       Build ./Dockerfile, name the image app:1',
    'kiln build -f docker/Dockerfile --target test .',
    'ID=$(kiln build -q .)                       Only the image ID, on stdout',
    'kiln build --progress plain . 2>build.log   BuildKit\'s plain log, every line of output',
    'kiln build --progress rawjson . 2>events    One JSON progress event a line, for tools',
    'kiln build -o type=oci,dest=app.tar .       Also export an OCI archive',
    'kiln build --cache-to type=registry,ref=reg/app:cache,mode=max --cache-from reg/app:cache .',
  ],
};


async function buildSession(options: Record<string, unknown>) {
  try {
    return await createSession({
      secrets: ((options.secret as string[] | undefined) ?? []).map(parseSecretSpec),
      ssh: ((options.ssh as string[] | undefined) ?? []).map((s) => parseSshSpec(s)),
      allow: ((options.allow as string[] | undefined) ?? []).map(parseEntitlement),
    });
  } catch (err) {
    if (err instanceof KilnError && err.exitCode === 2) throw usageError(err.message, spec);
    throw err;
  }
}

/** What the presentation needs of a built image, from this process or from a build service. */
export interface BuiltImage {
  id: string;
  manifestDigest: string;
  mediaType?: string;
  manifestSize: number;
}

/**
 * Runs a build, feeding its progress events; `notice` takes a line for the user (the build
 * service's queue position).
 */
export type BuildRunner = (h: { progress?: ProgressSink; notice: (line: string) => void }) => Promise<BuiltImage>;

export const buildCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    // A bad mode is a usage error before any work, here or on a build service.
    commandProgressMode(options);
    if (io.host) {
      const remote = await (await import('../../daemon/remote-commands.js')).remoteBuild(io.host, { options, positionals }, io, spec);
      return presentBuild(remote.run, { options, io, tags: remote.tags, source: remote.source });
    }
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
    let dockerfileText: string | undefined;
    if (file === '-') {
      try {
        dockerfileText = readFileSync(0, 'utf8');
      } catch (err) {
        throw new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile from standard input: ${(err as Error).message}`);
      }
    }
    if (options.check === true) {
      return runCheck({ contextDir: positionals[0]!, dockerfile: file === '-' ? undefined : file, dockerfileText, target: options.target as string | undefined, buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? [], spec) }, io.stderr);
    }
    const session = await buildSession(options);
    const parallelism = options['max-parallelism'] as string | undefined;
    if (parallelism !== undefined && !/^[1-9]\d*$/.test(parallelism)) {
      throw usageError(`Invalid --max-parallelism "${parallelism}": expected a positive number`, spec);
    }
    const engine = await Engine.open({ maxParallelism: parallelism === undefined ? undefined : Number(parallelism) });
    try {
      const run: BuildRunner = async ({ progress }) => {
        const result = await build(engine, {
          contextDir: positionals[0]!,
          dockerfile: file === '-' ? undefined : file,
          dockerfileText,
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
      return await presentBuild(run, { options, io, tags, source: dockerfileSource(positionals[0]!, file, dockerfileText) });
    } finally {
      engine.close();
    }
  },
};

/**
 * One presentation of a build, local or remote: the progress view in its mode, `--explain`,
 * `--iidfile`, `--metadata-file`, the image ID for `-q`, the failure report and the exit code.
 */
async function presentBuild(run: BuildRunner, o: { options: Record<string, unknown>; io: CommandIO; tags: string[]; source: (name: string) => string | undefined }): Promise<number> {
  const { options, io, tags } = o;
  const mode = commandProgressMode(options);
  const quiet = mode === 'quiet';
  const report = options.explain === true ? new ExplainCollector() : undefined;
  const printReport = () => {
    if (!report) return;
    if (mode === 'rawjson') io.stderr(`${JSON.stringify({ type: 'explain', text: report.format() })}\n`);
    else if (!quiet) io.stderr(`\n${report.format()}`);
  };
  const view = await openProgressView(mode, process.stderr, { source: o.source });
  try {
    const result = await run({
      progress:
        !quiet || report
          ? (e) => {
              view.handle(e);
              report?.handle(e);
            }
          : undefined,
      notice: (line) => {
        if (!quiet && mode !== 'rawjson') io.stderr(line);
      },
    });
    if (options.iidfile) await writeFile(options.iidfile as string, result.id);
    if (options['metadata-file']) {
      const image = { configDigest: parseDigest(result.id), manifestDigest: parseDigest(result.manifestDigest), manifest: { mediaType: result.mediaType } };
      await writeMetadataFile(options['metadata-file'] as string, image, { tags, manifestSize: result.manifestSize });
    }
    await view.succeed({ imageId: result.id, tags });
    printReport();
    if (quiet) io.stdout(`${result.id}\n`);
    return 0;
  } catch (err) {
    // The view reports the failure in its own form (a paragraph, or a JSON event in rawjson).
    await view.fail(err);
    printReport();
    return err instanceof KilnError ? err.exitCode : 1;
  }
}

/** The Dockerfile's text by the name error locations give it, read only when a step failed. */
function dockerfileSource(context: string, file: string | undefined, stdinText: string | undefined): (name: string) => string | undefined {
  if (stdinText !== undefined) return (name) => (name === 'Dockerfile' ? stdinText : undefined);
  const path = resolve(file ?? join(context, 'Dockerfile'));
  return (name) => {
    if (name !== basename(path)) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      // Changed or gone since the build read it: the report goes without the excerpt.
      if (err instanceof Error) return undefined;
      throw err;
    }
  };
}
