/**
 * `kiln build` and `kiln images` against a build service (`--host`, `KILN_HOST`). They parse the
 * same flags and report through the same views as the local commands, so output and exit codes
 * match; flags whose work would happen on the client's machine are refused by name.
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { stat } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { usageError, type CommandSpec, type ParsedArgs } from '../cli/args.js';
import { parseExtraBuildFlags } from '../cli/build-flags.js';
import { humanSize, table, timeAgo } from '../cli/format.js';
import type { CommandIO } from '../cli/main.js';
import { openProgressView, resolveProgressMode } from '../cli/progress.js';
import { familiarRepository, parseReference } from '../image/reference.js';
import { ExplainCollector } from '../../solver/explain.js';
import { KilnClient, type RemoteHost } from './client.js';
import type { WireBuildOptions } from './wire.js';

/** Flags of `kiln build` that need the client's own machine: secrets and agents, local outputs. */
const LOCAL_ONLY = ['secret', 'ssh', 'check', 'metadata-file'] as const;

function buildArgs(values: readonly string[], spec: CommandSpec): Record<string, string> {
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

async function checkContext(dir: string): Promise<void> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new KilnError('CONTEXT_NOT_DIR', `The build context "${dir}" is not a directory`);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new KilnError('CONTEXT_MISSING', `The build context "${dir}" does not exist`);
    throw err;
  }
}

export async function remoteBuild(host: RemoteHost, { options, positionals }: ParsedArgs, io: CommandIO, spec: CommandSpec): Promise<number> {
  for (const flag of LOCAL_ONLY) {
    if (options[flag] !== undefined) throw usageError(`"--${flag}" does not work against a build service (--host)`, spec);
  }
  const mode = options.quiet === true ? 'quiet' : resolveProgressMode(options.progress as string | undefined, process.env.KILN_PROGRESS, process.stderr.isTTY === true);
  const quiet = mode === 'quiet';
  const extra = parseExtraBuildFlags(options, spec);
  const tags = (options.tag as string[] | undefined) ?? [];
  for (const t of tags) parseReference(t);
  if (options.push === true && tags.length === 0) throw usageError('"--push" needs at least one -t REF to push to', spec);
  const contextDir = resolve(positionals[0]!);
  await checkContext(contextDir);
  const file = options.file as string | undefined;
  const wire: WireBuildOptions & { scope: string } = {
    buildArgs: buildArgs((options['build-arg'] as string[] | undefined) ?? [], spec),
    tags,
    target: options.target as string | undefined,
    noCache: options['no-cache'] === true,
    noCacheFilter: (options['no-cache-filter'] as string[] | undefined) ?? [],
    outputs: (options.output as string[] | undefined) ?? [],
    push: options.push === true,
    insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
    labels: extra.labels,
    pull: extra.pull,
    scope: `${contextDir}\0${file === undefined || file === '-' ? 'Dockerfile' : resolve(file)}`,
  };
  let source: string | undefined;
  if (file === '-') {
    try {
      wire.dockerfileText = source = readFileSync(0, 'utf8');
    } catch (err) {
      throw new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile from standard input: ${(err as Error).message}`);
    }
  } else {
    const path = resolve(file ?? join(contextDir, 'Dockerfile'));
    try {
      source = readFileSync(path, 'utf8');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        throw new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile "${path}": no such file`, { hint: 'Pass its path with -f, or "-f -" to read it from standard input' });
      }
      throw err;
    }
    const rel = relative(contextDir, path);
    // Inside the context it travels with it; outside, its text goes along with the options.
    if (rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel)) wire.dockerfile = rel.split(sep).join('/');
    else wire.dockerfileText = source;
  }
  const text = source;
  const report = options.explain === true ? new ExplainCollector() : undefined;
  const printReport = () => {
    if (!report) return;
    if (mode === 'rawjson') io.stderr(`${JSON.stringify({ type: 'explain', text: report.format() })}\n`);
    else if (!quiet) io.stderr(`\n${report.format()}`);
  };
  const fileName = file === undefined || file === '-' ? 'Dockerfile' : basename(file);
  const view = await openProgressView(mode, process.stderr, { source: (name) => (name === fileName ? text : undefined) });
  const client = new KilnClient(host);
  try {
    const result = await client.build(contextDir, wire, {
      signal: io.signal,
      onQueued: (position) => {
        if (!quiet && mode !== 'rawjson') io.stderr(`Waiting for a build slot on the build service: number ${position} in the queue\n`);
      },
      progress: (e) => {
        if (!quiet) view.handle(e);
        report?.handle(e);
      },
    });
    if (options.iidfile) await writeFile(options.iidfile as string, result.id);
    await view.succeed({ imageId: result.id, tags });
    printReport();
    if (quiet) io.stdout(`${result.id}\n`);
    return 0;
  } catch (err) {
    await view.fail(err);
    printReport();
    return err instanceof KilnError ? err.exitCode : 1;
  }
}

export async function remoteImages(host: RemoteHost, { options }: ParsedArgs, io: CommandIO): Promise<number> {
  const images = await new KilnClient(host).images(io.signal);
  const id = (config: string) => (options['no-trunc'] ? config : config.slice(7, 19));
  const rows: string[][] = [];
  const tagged: string[][] = [];
  for (const img of images) {
    for (const name of img.names) {
      const ref = parseReference(name);
      tagged.push([name, familiarRepository(ref), ref.tag ?? '<none>', id(img.id), timeAgo(img.created), humanSize(img.size)]);
    }
  }
  // Names in order, then the untagged images, as the local listing prints them.
  tagged.sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : 0));
  for (const t of tagged) rows.push(t.slice(1));
  for (const img of images) if (img.names.length === 0) rows.push(['<none>', '<none>', id(img.id), timeAgo(img.created), humanSize(img.size)]);
  if (options.quiet) io.stdout([...new Set(rows.map((r) => r[2]))].map((r) => `${r}\n`).join(''));
  else io.stdout(table([['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], ...rows]));
  return 0;
}
