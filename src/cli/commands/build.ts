import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { KilnError } from '../../../cache/errors.js';
import { build } from '../../build/build.js';
import { Engine } from '../../engine.js';
import { parseOutput } from '../../export/outputs.js';
import { parseReference } from '../../image/reference.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import { PlainPrinter } from '../plain.js';

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
    { name: 'output', short: 'o', type: 'list', placeholder: 'SPEC', description: 'Export: type=oci,dest=FILE.tar | type=local,dest=DIR' },
    { name: 'iidfile', type: 'string', placeholder: 'FILE', description: 'Write the image ID to FILE' },
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
      exporters = ((options.output as string[] | undefined) ?? []).map(parseOutput);
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
    const printer = quiet ? undefined : new PlainPrinter(io.stderr);
    const engine = await Engine.open();
    try {
      const result = await build(engine, {
        contextDir: positionals[0]!,
        dockerfile: file === '-' ? undefined : file,
        dockerfileText,
        buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? []),
        tags,
        target: options.target as string | undefined,
        noCache: options['no-cache'] === true,
        exporters,
        progress: printer ? (e) => printer.handle(e) : undefined,
        signal: io.signal,
      });
      printer?.finish();
      const id = result.image.configDigest;
      if (options.iidfile) await writeFile(options.iidfile as string, id);
      if (quiet) io.stdout(`${id}\n`);
      else io.stderr(`\nBuilt ${id}${tags.length ? ` as ${tags.join(', ')}` : ''}\n`);
      return 0;
    } catch (err) {
      printer?.finish();
      throw err;
    } finally {
      engine.close();
    }
  },
};
