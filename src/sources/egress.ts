import dns from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { networkInterfaces } from 'node:os';
import { KilnError } from '../../cache/errors.js';
import { SUBNET_PREFIX } from '../executor/network.js';

/**
 * What a build service's client may not fetch with ADD: the server itself. A download or a git
 * source is made by the server's own process on the host's network, so without this check a
 * client could read services that listen on the host's loopback or its other addresses (and the
 * link-local range, where cloud metadata services answer). RUN steps have the same boundary from
 * their network namespace (src/executor/network.ts).
 */
export function isHostAddress(address: string): boolean {
  const a = address.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
  if (isIP(a) === 4) {
    const [x, y] = a.split('.').map(Number) as [number, number];
    if (x === 127 || x === 0 || (x === 169 && y === 254)) return true;
    if (a.startsWith(`${SUBNET_PREFIX}.`)) return true;
  } else if (isIP(a) === 6) {
    if (a === '::1' || a === '::' || /^fe[89ab]/.test(a)) return true;
  } else {
    return false;
  }
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.address.toLowerCase() === a) return true;
  }
  return false;
}

function refused(host: string, address: string): KilnError {
  return new KilnError('SOURCE_REFUSED', `"${host}" is the build service's own host (${address}), which a build's sources may not reach`, {
    hint: 'Serve the file from another host, or put it in the build context',
  });
}

/** Refuses a host name (or address) that is, or resolves to, an address of this host. */
export async function checkEgress(hostname: string): Promise<void> {
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) !== 0) {
    if (isHostAddress(host)) throw refused(host, host);
    return;
  }
  let addresses: dns.LookupAddress[];
  try {
    addresses = await dns.promises.lookup(host, { all: true });
  } catch {
    // An unknown name fails where it is fetched, with the fetcher's own words.
    return;
  }
  const bad = addresses.find((a) => isHostAddress(a.address));
  if (bad) throw refused(host, bad.address);
}

/**
 * A `lookup` for connections that must not reach this host: the addresses a name resolves to are
 * checked as the connection is made, so a name cannot resolve to another host for the check and
 * to this one for the connection.
 */
export const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    const bad = addresses.find((a) => isHostAddress(a.address));
    if (bad) return callback(Object.assign(refused(hostname, bad.address), { errno: 0, syscall: 'lookup' }) as unknown as NodeJS.ErrnoException, '', 0);
    if (options.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
    const first = addresses[0]!;
    callback(null, first.address, first.family);
  });
};

/** The egress rule of a build service's downloads (src/registry/transport.ts HttpRequest.egress). */
export const SERVICE_EGRESS = {
  lookup: guardedLookup,
  refuse: (hostname: string): Error | undefined => (isIP(hostname) !== 0 && isHostAddress(hostname) ? refused(hostname, hostname) : undefined),
};

/** The host a git source names: a URL's, or the `host` of scp-like `user@host:path`. */
export function gitHost(url: string): string | undefined {
  const scp = /^[^/@:]+@([^:/]+):/.exec(url);
  if (scp) return scp[1];
  try {
    return new URL(url).hostname;
  } catch {
    return undefined;
  }
}
