import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { KilnError } from '../../../cache/errors.js';
import { build } from '../../build/build.js';
import { Engine } from '../../engine.js';
import { ImageExporter } from '../../export/image.js';
import { parseOutput } from '../../export/outputs.js';
import { parseReference } from '../../image/reference.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import { PlainPrinter } from '../plain.js';
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
    { name: 'progress', type: 'string', placeholder: 'MODE', description: 'Progress output: plain, auto or quiet' },
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
  ],
};

function parseBuildArgs(values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq < 0) {
      // As docker does: `--build-arg NAME` takes the value from the environment, if set.
      if (process.env[v] !== undefined) out[v] = process.env[v]!;
      continue;
    }
    if (eq === 0) throw usageError(`Invalid --build-arg "${v}": the name is empty`, spec);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

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

export const buildCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const quiet = options.quiet === true || options.progress === 'quiet';
    const mode = (options.progress as string | undefined) ?? process.env.KILN_PROGRESS ?? 'auto';
    if (!['auto', 'plain', 'quiet', 'tty'].includes(mode)) throw usageError(`Invalid --progress "${mode}": expected auto, plain, tty or quiet`, spec);
    const tags = (options.tag as string[] | undefined) ?? [];
    for (const t of tags) parseReference(t);
    let exporters;
    try {
      const insecureRegistries = (options['insecure-registry'] as string[] | undefined) ?? [];
      exporters = ((options.output as string[] | undefined) ?? []).map((o) => parseOutput(o, { insecureRegistries }));
      if (options.push === true) {
        if (tags.length === 0) throw usageError('"--push" needs at least one -t REF to push to', spec);
        exporters.push(new ImageExporter({ push: true, tag: false, insecureRegistries }));
      }
    } catch (err) {
      if (err instanceof KilnError && err.code === 'INVALID_OUTPUT') throw usageError(err.message, spec);
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
      return runCheck({ contextDir: positionals[0]!, dockerfile: file === '-' ? undefined : file, dockerfileText, target: options.target as string | undefined, buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? []) }, io.stderr);
    }
    const session = await buildSession(options);
    const parallelism = options['max-parallelism'] as string | undefined;
    if (parallelism !== undefined && !/^[1-9]\d*$/.test(parallelism)) {
      throw usageError(`Invalid --max-parallelism "${parallelism}": expected a positive number`, spec);
    }
    const printer = quiet ? undefined : new PlainPrinter(io.stderr);
    const report = options.explain === true ? new ExplainCollector() : undefined;
    const engine = await Engine.open({ maxParallelism: parallelism === undefined ? undefined : Number(parallelism) });
    try {
      const result = await build(engine, {
        contextDir: positionals[0]!,
        dockerfile: file === '-' ? undefined : file,
        dockerfileText,
        buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? []),
        tags,
        target: options.target as string | undefined,
        noCache: options['no-cache'] === true,
        noCacheFilter: (options['no-cache-filter'] as string[] | undefined) ?? [],
        session,
        exporters,
        insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
        progress:
          printer || report
            ? (e) => {
                printer?.handle(e);
                report?.handle(e);
              }
            : undefined,
        signal: io.signal,
      });
      printer?.finish();
      if (report) io.stderr(`\n${report.format()}`);
      const id = result.image.configDigest;
      if (options.iidfile) await writeFile(options.iidfile as string, id);
      if (quiet) io.stdout(`${id}\n`);
      else io.stderr(`\nBuilt ${id}${tags.length ? ` as ${tags.join(', ')}` : ''}\n`);
      return 0;
    } catch (err) {
      printer?.finish();
      if (report) io.stderr(`\n${report.format()}`);
      throw err;
    } finally {
      engine.close();
    }
  },
};
