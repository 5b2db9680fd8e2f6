import { parseEntitlement } from '../../build/session.js';
import { KilnError } from '../../../cache/errors.js';
import { DEFAULT_ADDRESS, parseAddress } from '../../daemon/address.js';
import { TokenAuth } from '../../daemon/auth.js';
import { BuildServer, DEFAULT_LIMITS } from '../../daemon/server.js';
import { Engine } from '../../engine.js';
import { BRIDGE, GATEWAY, SUBNET_PREFIX } from '../../executor/network.js';
import { usageError, type CommandSpec } from '../args.js';
import { compactLimits, CPU_SHARES, parseMemoryLimit, parseWholeInRange } from '../build-flags.js';
import type { ResourceLimits } from '../../executor/executor.js';
import { defaultStepLimits } from '../../executor/cgroup.js';
import { describeLimits } from '../format.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'serve',
  usage: 'kiln serve [OPTIONS]',
  description: 'Serve builds over HTTP: Kiln\'s API under /v1/ and the Docker Engine API subset of the classic builder and images.',
  minPositionals: 0,
  maxPositionals: 0,
  options: [
    { name: 'addr', type: 'list', placeholder: 'ADDR', description: `Listen on unix:///PATH or tcp://HOST:PORT (repeatable; default ${DEFAULT_ADDRESS})` },
    { name: 'tls-cert', type: 'string', placeholder: 'FILE', description: 'TLS certificate for TCP addresses' },
    { name: 'tls-key', type: 'string', placeholder: 'FILE', description: 'TLS private key for TCP addresses' },
    { name: 'tls-ca', type: 'string', placeholder: 'FILE', description: 'Require client certificates signed by this CA (mutual TLS)' },
    { name: 'insecure', type: 'bool', description: 'Allow TCP addresses without TLS' },
    { name: 'token-file', type: 'string', placeholder: 'FILE', description: 'Require a bearer token from FILE (one a line)' },
    { name: 'max-concurrent-builds', type: 'string', placeholder: 'N', description: 'Run at most N builds at once; the rest queue (default 4)' },
    { name: 'max-context-size', type: 'string', placeholder: 'BYTES', description: 'Largest context upload accepted (default 2GiB)' },
    { name: 'max-json-size', type: 'string', placeholder: 'BYTES', description: 'Largest JSON request body or build options line accepted (default 4MiB)' },
    { name: 'max-uploads-per-client', type: 'string', placeholder: 'N', description: 'Uploads (contexts, archives) one client may send at once, by token or address; more get 429 (default 8)' },
    { name: 'headers-timeout', type: 'string', placeholder: 'SECONDS', description: 'Time for a request\'s headers to arrive (default 30)' },
    { name: 'request-timeout', type: 'string', placeholder: 'SECONDS', description: 'Time for a JSON request body to arrive, and longest pause within an upload (default 60)' },
    { name: 'allow-entitlement', type: 'list', placeholder: 'NAME', description: 'Let clients ask for this entitlement with build --allow: security.insecure or network.host (repeatable; none by default)' },
    { name: 'allow-host-port', type: 'list', placeholder: 'PORT', description: `Let RUN steps reach this TCP/UDP port of the host, at ${GATEWAY} (repeatable; none by default)` },
    { name: 'shutdown-grace', type: 'string', placeholder: 'SECONDS', description: 'On SIGTERM, let running builds finish this long before cancelling them (default 30)' },
    { name: 'step-memory', type: 'string', placeholder: 'SIZE', description: 'Memory of each RUN step and run, e.g. 2g; no swap beyond it (default half of the host\'s memory; 0 for no limit)' },
    { name: 'step-pids', type: 'string', placeholder: 'N', description: 'Processes and threads of each RUN step and run at once (default 4096; 0 for no limit)' },
    { name: 'step-cpu-shares', type: 'string', placeholder: 'N', description: 'Relative CPU weight of each RUN step and run (the kernel\'s default is 1024)' },
    { name: 'step-cpus', type: 'string', placeholder: 'N', description: 'CPUs\' worth of time each RUN step and run may use, e.g. 1.5 (default no quota)' },
  ],
};

function positiveInt(value: unknown, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !/^[0-9]+$/.test(value) || Number(value) <= 0) throw usageError(`Invalid --${flag} "${String(value)}": expected a positive number`, spec);
  return Number(value);
}

/** The limits of every RUN step from the --step-* flags, over the defaults; 0 lifts one. */
function stepLimits(options: Record<string, unknown>): ResourceLimits | undefined {
  const limits: ResourceLimits = { ...defaultStepLimits() };
  const memory = options['step-memory'] as string | undefined;
  if (memory !== undefined) limits.memory = parseMemoryLimit(memory, { flag: 'step-memory', spec, allowZero: true });
  const pids = options['step-pids'] as string | undefined;
  if (pids !== undefined) {
    if (!/^[0-9]+$/.test(pids)) throw usageError(`Invalid --step-pids "${pids}": expected a whole number, or 0`, spec);
    limits.pids = Number(pids) === 0 ? undefined : Number(pids);
  }
  const shares = options['step-cpu-shares'] as string | undefined;
  if (shares !== undefined) limits.cpuShares = parseWholeInRange(shares, { flag: 'step-cpu-shares', ...CPU_SHARES, spec });
  const cpus = options['step-cpus'] as string | undefined;
  if (cpus !== undefined) {
    if (!/^[0-9]+(\.[0-9]+)?$/.test(cpus) || Number(cpus) < 0.01) throw usageError(`Invalid --step-cpus "${cpus}": expected a number of CPUs such as 1 or 0.5`, spec);
    limits.cpus = Number(cpus);
  }
  return compactLimits(limits);
}

export const serveCommand: Command = {
  spec,
  async run({ options }, io) {
    let addresses;
    try {
      addresses = ((options.addr as string[] | undefined) ?? [DEFAULT_ADDRESS]).map(parseAddress);
    } catch (err) {
      if (err instanceof KilnError) throw usageError(err.message, spec);
      throw err;
    }
    const cert = options['tls-cert'] as string | undefined;
    const key = options['tls-key'] as string | undefined;
    if ((cert === undefined) !== (key === undefined)) throw usageError('"--tls-cert" and "--tls-key" go together', spec);
    if (options['tls-ca'] !== undefined && cert === undefined) throw usageError('"--tls-ca" needs "--tls-cert" and "--tls-key"', spec);
    const maxConcurrentBuilds = positiveInt(options['max-concurrent-builds'], 'max-concurrent-builds', 4);
    const maxContextBytes = positiveInt(options['max-context-size'], 'max-context-size', 2 * 1024 ** 3);
    const graceMs = positiveInt(options['shutdown-grace'], 'shutdown-grace', 30) * 1000;
    const limits = {
      maxContextBytes,
      maxJsonBytes: positiveInt(options['max-json-size'], 'max-json-size', DEFAULT_LIMITS.maxJsonBytes),
      maxUploadsPerClient: positiveInt(options['max-uploads-per-client'], 'max-uploads-per-client', DEFAULT_LIMITS.maxUploadsPerClient),
      headersTimeoutMs: positiveInt(options['headers-timeout'], 'headers-timeout', DEFAULT_LIMITS.headersTimeoutMs / 1000) * 1000,
      requestTimeoutMs: positiveInt(options['request-timeout'], 'request-timeout', DEFAULT_LIMITS.requestTimeoutMs / 1000) * 1000,
    };
    const entitlements = ((options['allow-entitlement'] as string[] | undefined) ?? []).map((e) => {
      try {
        return parseEntitlement(e);
      } catch (err) {
        if (err instanceof KilnError) throw usageError(err.message.replace('--allow', '--allow-entitlement'), spec);
        throw err;
      }
    });
    const allowHostPorts = ((options['allow-host-port'] as string[] | undefined) ?? []).map((p) => {
      if (!/^[0-9]+$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw usageError(`Invalid --allow-host-port "${p}": expected a port number from 1 to 65535`, spec);
      return Number(p);
    });
    const steps = stepLimits(options);
    const auth = options['token-file'] === undefined ? undefined : await TokenAuth.fromFile(options['token-file'] as string);
    io.signal.throwIfAborted();
    // A server opens its host ports to RUN steps and keeps namespaces ready.
    const engine = await Engine.open({ network: { allowHostPorts, poolSize: 2 }, service: true, stepLimits: steps });
    let server: BuildServer;
    try {
      // A server that cannot keep steps off the host's network does not start; and the first
      // build does not wait for the bridge.
      await engine.executor.network.warm();
      io.stderr(`RUN steps get networks of their own on ${BRIDGE} (${SUBNET_PREFIX}.0.0/16); host ports open to them: ${allowHostPorts.length > 0 ? allowHostPorts.join(', ') : 'none'}\n`);
      server = await BuildServer.start(engine, {
        addresses,
        tls: cert && key ? { cert, key, ca: options['tls-ca'] as string | undefined } : undefined,
        insecure: options.insecure === true,
        auth,
        maxConcurrentBuilds,
        limits,
        entitlements,
        log: (line) => io.stderr(`${line}\n`),
      });
    } catch (err) {
      await engine.close();
      throw err;
    }
    io.stderr(`Limits of each RUN step: ${describeLimits(steps)}\n`);
    const backstop = processBackstop(server);
    try {
      await new Promise<void>((resolve) => {
        if (io.signal.aborted) resolve();
        else io.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      io.stderr('Shutting down: no new connections\n');
      await server.shutdown(graceMs);
    } finally {
      backstop();
    }
    io.stderr('Stopped\n');
    return 0;
  },
};

/**
 * What escapes every handler of one request (a stream's 'error' with no listener, a promise
 * nobody awaited) is logged with its stack under an id, and the server goes on: ending the
 * process would end every other client's build, which is what a hostile client would want.
 * An uncaught exception is kept alive too, against Node's advice, because the server's state
 * is built to survive a failure at any point (the store writes to tmp/ and renames; a build's
 * resources are released by its own finally blocks), and a restart would cost more than it
 * protects. Returns the function that removes the handlers.
 */
function processBackstop(server: BuildServer): () => void {
  const onRejection = (reason: unknown) => server.logError('unhandled rejection', reason);
  const onException = (err: Error, origin: string) => server.logError(origin === 'unhandledRejection' ? 'unhandled rejection' : 'uncaught exception', err);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
