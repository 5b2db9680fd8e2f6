import { KilnError } from '../../cache/errors.js';

export type Address = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number; tls: boolean };

export const DEFAULT_ADDRESS = 'unix:///run/kiln/kiln.sock';

/**
 * `unix:///path`, `tcp://HOST:PORT`, `http://HOST:PORT` or `https://HOST:PORT`. A bare path is
 * taken for a unix socket, as docker takes `DOCKER_HOST`.
 */
export function parseAddress(input: string): Address {
  if (input.startsWith('/')) return { kind: 'unix', path: input };
  const m = /^(unix|tcp|http|https):\/\/(.*)$/.exec(input);
  if (!m) {
    throw new KilnError('INVALID_ADDRESS', `Invalid address "${input}"`, { exitCode: 2, hint: 'Use unix:///path/to/socket or tcp://HOST:PORT' });
  }
  const [, scheme, rest] = m as unknown as [string, string, string];
  if (scheme === 'unix') {
    if (!rest.startsWith('/')) throw new KilnError('INVALID_ADDRESS', `Invalid address "${input}": the socket path must be absolute`, { exitCode: 2 });
    return { kind: 'unix', path: rest };
  }
  const hp = /^(\[[^\]]+\]|[^:/]+):(\d{1,5})\/?$/.exec(rest);
  if (!hp || Number(hp[2]) > 65535) {
    throw new KilnError('INVALID_ADDRESS', `Invalid address "${input}": expected HOST:PORT`, { exitCode: 2, hint: 'For example tcp://127.0.0.1:8375' });
  }
  return { kind: 'tcp', host: hp[1]!.replace(/^\[|\]$/g, ''), port: Number(hp[2]), tls: scheme === 'https' };
}

export function formatAddress(a: Address): string {
  return a.kind === 'unix' ? `unix://${a.path}` : `tcp://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}
