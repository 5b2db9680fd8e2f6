/**
 * `kiln build` against a build service (`--host`, `KILN_HOST`): the same flags as a local build,
 * turned into a request, and a build presented by the same code (src/cli/commands/build.ts), so
 * output and exit codes match; flags whose work would happen on the client's machine are refused
 * by name.
 */
import { readFileSync } from 'node:fs';
import { dockerfileReadError } from '../build/dockerfile-error.js';
import { readFile } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { stat } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { usageError, type CommandSpec, type ParsedArgs } from '../cli/args.js';
import { parseBuildArgs, parseExtraBuildFlags } from '../cli/build-flags.js';
import type { CommandIO } from '../cli/main.js';
import type { BuildRunner } from '../cli/present-build.js';
import { parseReference } from '../image/reference.js';
import { KilnClient, receiveFile, type RemoteHost } from './client.js';
import { parseEntitlement, parseSecretSpec } from '../build/session.js';
import { parseCacheFrom, parseCacheTo } from '../cache-export/spec.js';
import { exporterFor, formatOutputSpec, parseOutputSpec } from '../export/outputs.js';
import { unpackLayer } from '../../cache/unpack.js';
import type { IncomingMessage } from 'node:http';
import type { WireBuildOptions } from './wire.js';
import type { StdinInput } from '../cli/stdin-context.js';

/** Flags of `kiln build` that need the client's own machine. */
const LOCAL_ONLY = ['check'] as const;

/**
 * What the client sends for `--secret`: the values it read itself (a file, or its environment),
 * checked as a local build checks them, so that the server never needs the client's files.
 */
async function readSecrets(specs: readonly string[], spec: CommandSpec): Promise<{ id: string; value: string }[]> {
  const out: { id: string; value: string }[] = [];
  for (const raw of specs) {
    let s;
    try {
      s = parseSecretSpec(raw);
    } catch (err) {
      if (err instanceof KilnError && err.exitCode === 2) throw usageError(err.message, spec);
      throw err;
    }
    let value: Buffer;
    if ('file' in s) {
      try {
        value = await readFile(s.file);
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EISDIR')) throw err;
        throw new KilnError('SECRET_MISSING', `Cannot read the secret "${s.id}" from "${s.file}": no such file`);
      }
    } else {
      const v = process.env[s.env];
      if (v === undefined) throw new KilnError('SECRET_MISSING', `Cannot read the secret "${s.id}": the environment variable "${s.env}" is not set`);
      value = Buffer.from(v, 'utf8');
    }
    out.push({ id: s.id, value: value.toString('base64') });
  }
  return out;
}

/** `-o` specs split by where their result lands: the server's store or registry, or this machine's disk. */
function splitOutputs(specs: readonly string[], insecureRegistries: string[], spec: CommandSpec): { server: string[]; client: { output: string; dest: string }[] } {
  const server: string[] = [];
  const client: { output: string; dest: string }[] = [];
  for (const o of specs) {
    let parsed;
    try {
      // Checked here, as a local build checks it, before anything is sent.
      parsed = parseOutputSpec(o);
      exporterFor(parsed, { insecureRegistries });
    } catch (err) {
      if (err instanceof KilnError && err.code === 'INVALID_OUTPUT') throw usageError(err.message, spec);
      throw err;
    }
    if (parsed.type === 'image' || parsed.type === 'registry') server.push(o);
    else client.push({ output: formatOutputSpec(parsed), dest: parsed.dest! });
  }
  return { server, client };
}

/** Cache specs the server runs (registry, inline); a path would be the server's, so it is refused. */
function cacheSpecs(options: Record<string, unknown>, spec: CommandSpec): { cacheTo: string[]; cacheFrom: string[] } {
  const check = (flag: 'cache-to' | 'cache-from', parse: (v: string) => { type: string }) =>
    ((options[flag] as string[] | undefined) ?? []).map((v) => {
      let type;
      try {
        type = parse(v).type;
      } catch (err) {
        if (err instanceof KilnError && err.code === 'INVALID_CACHE_SPEC') throw usageError(err.message, spec);
        throw err;
      }
      if (type === 'local') {
        throw usageError(`"--${flag} ${v}" names a directory on this machine, which the build service cannot reach: against a build service use type=registry`, spec);
      }
      return v;
    });
  return { cacheTo: check('cache-to', parseCacheTo), cacheFrom: check('cache-from', parseCacheFrom) };
}


/** A tar of no entries: its end-of-archive blocks. */
async function* emptyTar(): AsyncGenerator<Buffer> {
  yield Buffer.alloc(1024);
}

async function checkContext(dir: string): Promise<void> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new KilnError('CONTEXT_NOT_DIR', `The build context "${dir}" is not a directory`);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new KilnError('CONTEXT_MISSING', `The build context "${dir}" does not exist`);
    throw err;
  }
}

/**
 * `kiln build` against a build service: the flags checked and turned into a request here, the
 * result presented by src/cli/commands/build.ts as a local build's is.
 */
export async function remoteBuild(
  host: RemoteHost,
  { options, positionals }: ParsedArgs,
  io: CommandIO,
  spec: CommandSpec,
): Promise<{ run: BuildRunner; tags: string[]; source: (name: string) => string | undefined }> {
  for (const flag of LOCAL_ONLY) {
    if (options[flag] !== undefined) throw usageError(`"--${flag}" does not work against a build service (--host)`, spec);
  }
  const limit = ['memory', 'memory-swap', 'cpu-shares', 'cpu-period', 'cpu-quota', 'cpuset-cpus'].find((n) => options[n] !== undefined);
  if (limit !== undefined) {
    throw usageError(`"--${limit}" does not work against a build service (--host): the limits of its steps are its operator's ("kiln serve --step-memory", "--step-pids", "--step-cpus", "--step-cpu-shares")`, spec);
  }
  if (options.ssh !== undefined) {
    throw usageError('"--ssh" does not work against a build service (--host): the agent socket is on this machine and is not forwarded; clone with credentials from --secret, or build on the machine that has the agent', spec);
  }
  if (options['max-parallelism'] !== undefined) {
    // One solver serves every client of the server, so its parallelism is the server's to set.
    io.stderr('warning: --max-parallelism is ignored with --host: the build service shares one solver (one step per core) among all its clients\n');
  }
  const extra = parseExtraBuildFlags(options, spec);
  const tags = (options.tag as string[] | undefined) ?? [];
  for (const t of tags) parseReference(t);
  if (options.push === true && tags.length === 0) throw usageError('"--push" needs at least one -t REF to push to', spec);
  const insecureRegistries = (options['insecure-registry'] as string[] | undefined) ?? [];
  const outputs = splitOutputs((options.output as string[] | undefined) ?? [], insecureRegistries, spec);
  const caches = cacheSpecs(options, spec);
  const allow = ((options.allow as string[] | undefined) ?? []).map((a) => {
    try {
      return parseEntitlement(a);
    } catch (err) {
      if (err instanceof KilnError && err.exitCode === 2) throw usageError(err.message, spec);
      throw err;
    }
  });
  const secrets = await readSecrets((options.secret as string[] | undefined) ?? [], spec);
  const file = options.file as string | undefined;
  // `-`: standard input holds the context archive, or a Dockerfile and no context.
  const fromStdin = positionals[0] === '-';
  const contextDir = fromStdin ? '-' : resolve(positionals[0]!);
  if (!fromStdin) await checkContext(contextDir);
  const wire: WireBuildOptions & { scope: string } = {
    buildArgs: parseBuildArgs((options['build-arg'] as string[] | undefined) ?? [], spec),
    tags,
    target: options.target as string | undefined,
    noCache: options['no-cache'] === true,
    noCacheFilter: (options['no-cache-filter'] as string[] | undefined) ?? [],
    outputs: outputs.server,
    push: options.push === true,
    insecureRegistries,
    runFlags: {
      network: options.network as string | undefined,
      addHost: (options['add-host'] as string[] | undefined) ?? [],
      ulimit: (options.ulimit as string[] | undefined) ?? [],
      shmSize: options['shm-size'] as string | undefined,
    },
    allow,
    secrets,
    ...caches,
    labels: extra.labels,
    pull: extra.pull,
    scope: fromStdin ? `-\0${file ?? 'Dockerfile'}` : `${contextDir}\0${file === undefined || file === '-' ? 'Dockerfile' : resolve(file)}`,
  };
  let source: string | undefined;
  let stdin: StdinInput | undefined;
  if (fromStdin) {
    const { readStdinInput } = await import('../cli/stdin-context.js');
    stdin = await readStdinInput(io.signal, file);
    if (stdin.dockerfileText !== undefined) wire.dockerfileText = source = stdin.dockerfileText;
    else wire.dockerfile = stdin.dockerfile;
  } else if (file === '-') {
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
      throw dockerfileReadError(err, path);
    }
    const rel = relative(contextDir, path);
    // Inside the context it travels with it; outside, its text goes along with the options.
    if (rel !== '' && !rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel)) wire.dockerfile = rel.split(sep).join('/');
    else wire.dockerfileText = source;
  }
  const text = source;
  const fileName = file === undefined || file === '-' ? 'Dockerfile' : basename(file);
  const client = new KilnClient(host);
  const run: BuildRunner = async ({ progress, notice }) => {
    const handlers = {
      signal: io.signal,
      onQueued: (position: number) => notice(`Waiting for a build slot on the build service: number ${position} in the queue\n`),
      progress,
    };
    // A Dockerfile on standard input goes with an empty context: a tar of no entries.
    const result = stdin !== undefined ? await client.buildArchive(stdin.archive ?? emptyTar(), wire, handlers) : await client.build(contextDir, wire, handlers);
    for (const o of outputs.client) {
      const res = await client.request('POST', '/export', { json: { image: result.manifest, output: o.output, tags }, signal: io.signal });
      await receiveExport(res, o.dest, io.signal);
    }
    return { id: result.id, manifestDigest: result.manifest, mediaType: result.mediaType, manifestSize: result.manifestSize ?? 0 };
  };
  return { run, tags, source: (name: string) => (name === fileName ? text : undefined) };
}

/** A file result is written whole; a directory result (type=local, oci with tar=false) is unpacked into `dest`. */
async function receiveExport(res: IncomingMessage, dest: string, signal: AbortSignal): Promise<void> {
  if (res.headers['x-kiln-export'] !== 'dir') return receiveFile(res, dest === '-' ? '-' : resolve(dest), signal);
  try {
    await unpackLayer(res, resolve(dest), { signal });
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    if (err instanceof KilnError && err.code === 'UNSAFE_ARCHIVE') throw err;
    throw new KilnError('SERVER_ERROR', `The build service ended the export to "${dest}" early: ${(err as Error).message}`, { hint: 'The server log has the details' });
  }
}
