import { KilnError } from '../../cache/errors.js';
import { formatHelp, parseArgs, usageError, type CommandSpec, type ParsedArgs } from './args.js';
import { formatError } from './report.js';

export interface Command {
  spec: CommandSpec;
  run(args: ParsedArgs, io: CommandIO): Promise<number>;
}

export interface CommandIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  signal: AbortSignal;
}

/** Commands load on demand: a cached build must not pay for what it does not use. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  build: () => import('./commands/build.js').then((m) => m.buildCommand),
  import: () => import('./commands/import.js').then((m) => m.importCommand),
  images: () => import('./commands/images.js').then((m) => m.imagesCommand),
  run: () => import('./commands/run.js').then((m) => m.runCommand),
  debug: () => import('./commands/debug.js').then((m) => m.debugCommand),
  version: () => import('./commands/version.js').then((m) => m.versionCommand),
};
const ALIASES: Record<string, string> = { ls: 'images' };

const TOP_HELP = `Usage: kiln COMMAND [OPTIONS]

A Dockerfile build engine: runc on overlayfs, a content-addressed cache, OCI images.

Commands:
  build     Build an image from a Dockerfile and a context
  import    Import a root filesystem tarball as an image
  images    List images in the store (alias: ls)
  run       Run a command in a new container from an image
  debug     Inspect how a Dockerfile parses and compiles (parse, graph)
  version   Show version information

Environment:
  KILN_ROOT     Store location (default /var/lib/kiln as root)
  KILN_RUNTIME  OCI runtime binary (default runc)

Run "kiln COMMAND --help" for more on a command.`;

export async function main(argv: readonly string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s);
  const err = (s: string) => process.stderr.write(s);
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(`${TOP_HELP}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') return main(['version']);
  const load = COMMANDS[ALIASES[name] ?? name];
  const controller = new AbortController();
  let interrupted = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted++;
    if (interrupted > 2) process.exit(130);
    controller.abort(new KilnError('CANCELLED', `Interrupted by ${sig}: the build was cancelled`, { exitCode: 130 }));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    if (!load) throw usageError(`Unknown command "${name}"`);
    const command = await load();
    if (rest.includes('--help') && !(command.spec.stopAtPositional && rest.indexOf('--help') > firstPositional(rest))) {
      out(`${formatHelp(command.spec)}\n`);
      return 0;
    }
    const args = parseArgs(rest, command.spec);
    return await command.run(args, { stdout: out, stderr: err, signal: controller.signal });
  } catch (e) {
    err(formatError(e));
    if (e instanceof KilnError) return e.exitCode;
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function firstPositional(args: readonly string[]): number {
  const i = args.findIndex((a) => !a.startsWith('-'));
  return i < 0 ? Infinity : i;
}
