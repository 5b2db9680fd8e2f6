import { KilnError } from '../../cache/errors.js';
import { formatHelp, parseArgs, usageError, type CommandSpec, type ParsedArgs } from './args.js';
import { formatError } from './report.js';
import type { RemoteHost } from '../daemon/client.js';

export interface Command {
  spec: CommandSpec;
  run(args: ParsedArgs, io: CommandIO): Promise<number>;
}

export interface CommandIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  signal: AbortSignal;
  /** The build service to run against (`--host`, `KILN_HOST`); commands then open no local store. */
  host?: RemoteHost;
}

/** Commands load on demand: a cached build must not pay for what it does not use. */
export const COMMANDS: Record<string, () => Promise<Command>> = {
  build: () => import('./commands/build.js').then((m) => m.buildCommand),
  import: () => import('./commands/import.js').then((m) => m.importCommand),
  images: () => import('./commands/images.js').then((m) => m.imagesCommand),
  run: () => import('./commands/run.js').then((m) => m.runCommand),
  debug: () => import('./commands/debug.js').then((m) => m.debugCommand),
  version: () => import('./commands/version.js').then((m) => m.versionCommand),
  pull: () => import('./commands/pull.js').then((m) => m.pullCommand),
  push: () => import('./commands/push.js').then((m) => m.pushCommand),
  tag: () => import('./commands/tag.js').then((m) => m.tagCommand),
  save: () => import('./commands/save.js').then((m) => m.saveCommand),
  load: () => import('./commands/load.js').then((m) => m.loadCommand),
  login: () => import('./commands/login.js').then((m) => m.loginCommand),
  logout: () => import('./commands/logout.js').then((m) => m.logoutCommand),
  du: () => import('./commands/du.js').then((m) => m.duCommand),
  prune: () => import('./commands/prune.js').then((m) => m.pruneCommand),
  store: () => import('./commands/store.js').then((m) => m.storeCommand),
  inspect: () => import('./commands/inspect.js').then((m) => m.inspectCommand),
  history: () => import('./commands/history.js').then((m) => m.historyCommand),
  rmi: () => import('./commands/rmi.js').then((m) => m.rmiCommand),
  info: () => import('./commands/info.js').then((m) => m.infoCommand),
  completion: () => import('./commands/completion.js').then((m) => m.completionCommand),
  serve: () => import('./commands/serve.js').then((m) => m.serveCommand),
};
const ALIASES: Record<string, string> = { ls: 'images' };

const TOP_HELP = `Usage: kiln COMMAND [OPTIONS]

A Dockerfile build engine: runc on overlayfs, a content-addressed cache, OCI images.

Commands:
  build     Build an image from a Dockerfile and a context
  import    Import a root filesystem tarball as an image
  images    List images in the store (alias: ls)
  inspect   Show an image's config and manifest as JSON, or fields of it (--format)
  history   Show the steps that made an image
  rmi       Remove images from the store
  run       Run a command in a new container from an image
  debug     Inspect how a Dockerfile parses and compiles (parse, graph)
  pull      Pull an image from a registry
  push      Push an image to a registry
  tag       Give an image another name
  save      Write images to a docker/OCI archive
  load      Load images from a docker or OCI archive
  login     Store credentials for a registry in the docker config
  logout    Remove the credentials of a registry
  du        Show build cache disk usage
  prune     Remove build cache (never what a stored image needs)
  store     Check the store (store verify)
  info      Show the store, runtime, storage driver and GC policy
  serve     Serve builds to many clients over HTTP (Kiln's API and the Docker Engine API)
  version   Show version information
  completion  Print a bash or zsh completion script

Global options (before the command):
  --host URL    Run the command against a build service ("kiln serve"): unix:///PATH or tcp://HOST:PORT;
                no local store is opened (also KILN_HOST). login, logout and serve refuse it
  --token-file F, --tls-ca F, --tls-cert F, --tls-key F   Credentials for it (also KILN_TOKEN_FILE, KILN_TLS_*)

Environment:
  KILN_ROOT     Store location (default /var/lib/kiln as root)
  KILN_RUNTIME  OCI runtime binary (default runc)
  KILN_PROGRESS Progress of builds: auto, tty, plain, rawjson or quiet (default auto)
  KILN_GC_KEEP_STORAGE  Build cache kept after each build (default 10% of the disk, at most 10GB; 0 turns collection off)
  KILN_EXTRA_CA_CERTS   PEM file of extra certificate authorities for TLS (NODE_EXTRA_CA_CERTS means the same)

Run "kiln COMMAND --help" for more on a command.`;

/**
 * What `kiln --host URL COMMAND` does. `remote`: runs against the build service, opening no
 * local store. `here`: needs no store, so it runs on this machine (`debug parse`; `debug graph`
 * refuses by itself). A string: refused with that reason, since the work belongs to one machine.
 */
const ON_HOST: Record<string, 'remote' | 'here' | string> = {
  build: 'remote', images: 'remote', tag: 'remote', rmi: 'remote', inspect: 'remote', history: 'remote', push: 'remote', pull: 'remote',
  version: 'remote', info: 'remote', du: 'remote', prune: 'remote', save: 'remote', load: 'remote', import: 'remote', run: 'remote', store: 'remote',
  debug: 'here',
  completion: 'here',
  login: 'the build service pushes and pulls with its own credentials: run "kiln login" on the server',
  logout: 'the build service pushes and pulls with its own credentials: run "kiln logout" on the server',
  serve: 'it starts a build service; it does not use one',
};

/** Global flags before the command: `kiln --host URL [--token-file F] [--tls-ca F …] build …`. */
function globalHost(argv: readonly string[]): { host: RemoteHost | undefined; explicit: boolean; rest: string[] } {
  const env = process.env;
  const host: Partial<RemoteHost> = { url: env.KILN_HOST || undefined, tlsCa: env.KILN_TLS_CA, tlsCert: env.KILN_TLS_CERT, tlsKey: env.KILN_TLS_KEY, tokenFile: env.KILN_TOKEN_FILE };
  const keys: Record<string, keyof RemoteHost> = { '--host': 'url', '-H': 'url', '--token-file': 'tokenFile', '--tls-ca': 'tlsCa', '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey' };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const key = keys[eq < 0 ? arg : arg.slice(0, eq)];
    if (!key) break;
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || value === '') throw usageError(`Flag "${eq < 0 ? arg : arg.slice(0, eq)}" needs a value`);
    host[key] = value;
  }
  return { host: host.url ? (host as RemoteHost) : undefined, explicit: i > 0, rest: argv.slice(i) };
}

export async function main(argv: readonly string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s);
  const err = (s: string) => process.stderr.write(s);
  let remote;
  try {
    remote = globalHost(argv);
  } catch (e) {
    err(formatError(e));
    return 2;
  }
  const [name, ...rest] = remote.rest;
  // KILN_HOST alone leaves commands that cannot run remotely (serve, say) local; --host does not.
  const onHost = ON_HOST[ALIASES[name ?? ''] ?? name ?? ''];
  const host = remote.explicit || onHost === 'remote' || onHost === 'here' ? remote.host : undefined;
  // `kiln help CMD` is `kiln CMD --help`.
  if (name === 'help' && rest[0] !== undefined && !rest[0].startsWith('-')) return main([rest[0], '--help']);
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
    if (host && onHost !== 'remote' && onHost !== 'here') {
      throw usageError(`"kiln ${name}" does not run against a build service (--host): ${onHost ?? 'unknown'}`, undefined);
    }
    const command = await load();
    const helpAt = rest.findIndex((a) => a === '--help' || a === '-h');
    if (helpAt >= 0 && !(command.spec.stopAtPositional && helpAt > firstPositional(rest))) {
      out(`${formatHelp(command.spec)}\n`);
      return 0;
    }
    const args = parseArgs(rest, command.spec);
    return await command.run(args, { stdout: out, stderr: err, signal: controller.signal, host });
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
