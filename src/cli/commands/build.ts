import { type CommandSpec, usageError } from '../args.js';
import type { Command } from '../main.js';
import { PROGRESS_MODES, commandProgressMode } from '../progress.js';
import { presentBuild } from '../present-build.js';

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
    { name: 'network', type: 'string', placeholder: 'MODE', description: 'Network of RUN steps without --network: default (a network of its own with outbound access), host or none' },
    { name: 'add-host', type: 'list', placeholder: 'HOST:IP', description: 'Add a line to /etc/hosts of every RUN step (repeatable)' },
    { name: 'shm-size', type: 'string', placeholder: 'SIZE', description: 'Size of /dev/shm in RUN steps (default 64m)' },
    { name: 'memory', short: 'm', type: 'string', placeholder: 'SIZE', description: 'Memory limit of each RUN step, e.g. 2g' },
    { name: 'memory-swap', type: 'string', placeholder: 'SIZE', description: 'Memory and swap of each RUN step together; -1 for unlimited swap (default: --memory, no swap)' },
    { name: 'cpu-shares', type: 'string', placeholder: 'N', description: 'Relative CPU weight of each RUN step (the kernel\'s default is 1024)' },
    { name: 'cpu-period', type: 'string', placeholder: 'MICROSECONDS', description: 'CFS period for --cpu-quota (default 100000)' },
    { name: 'cpu-quota', type: 'string', placeholder: 'MICROSECONDS', description: 'CPU time of each RUN step per --cpu-period' },
    { name: 'cpuset-cpus', type: 'string', placeholder: 'LIST', description: 'CPUs each RUN step may run on, e.g. 0-1 or 0,2' },
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
    'kiln build - < context.tar.gz               The context (and its Dockerfile) from standard input',
    'kiln build --cache-to type=registry,ref=reg/app:cache,mode=max --cache-from reg/app:cache .',
  ],
};


export const buildCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    // A bad mode is a usage error before any work, here or on a build service.
    commandProgressMode(options);
    if (positionals[0] === '-' && options.file === '-') throw usageError('The context ("-") and the Dockerfile ("-f -") cannot both come from standard input', spec);
    // Each path loads only its own code: a client of a build service never loads the engine.
    if (io.host) {
      const remote = await (await import('../../daemon/remote-commands.js')).remoteBuild(io.host, { options, positionals }, io, spec);
      return presentBuild(remote.run, { options, io, tags: remote.tags, source: remote.source });
    }
    return (await import('./build-local.js')).localBuild({ options, positionals }, io, spec);
  },
};
