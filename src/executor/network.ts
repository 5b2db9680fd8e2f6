import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { run } from '../../cache/exec.js';
import { isErrno, randomId } from '../../cache/fsutil.js';
import { isAlive, selfIdentity } from '../../cache/lease.js';

/**
 * The network of RUN steps that ask for none in particular: each step gets a network namespace
 * of its own, joined to a host bridge by a veth pair, with outbound access through NAT and no
 * way to the host itself (its loopback is the namespace's own; the host's addresses are dropped
 * at the input hook) except the ports an operator opened. Namespaces are made ahead of time in a
 * small pool, so a step does not wait for them, and go back to it after a step that could not
 * change them.
 */
export interface NetworkLease {
  /** The namespace's bind mount, for the runtime spec's `network` namespace `path`. */
  nsPath: string;
  address: string;
  /**
   * Gives the namespace back. `reuse` when the step could not change it (no CAP_NET_ADMIN, its
   * processes all gone): the next step takes it as it is, which spares making one a step.
   */
  release(reuse?: boolean): void;
}

export interface BridgeOptions {
  /** Host ports RUN steps may reach on the bridge's address: open while this process runs. */
  allowHostPorts?: readonly number[];
  /** Namespaces made ahead of time, beyond those given back by finished steps (a server's; none by default). */
  poolSize?: number;
}

/** The bridge and its /16 (gateway .0.1). Fixed, so that every Kiln process on a host shares one. */
export const BRIDGE = 'kiln0';
export const SUBNET_PREFIX = '10.89';
export const GATEWAY = `${SUBNET_PREFIX}.0.1`;
/** The bridge's own hardware address, locally administered, ending in the gateway's address. */
const BRIDGE_MAC = '02:42:0a:59:00:01';
const TABLE = 'kiln';
/** Marks the rules this code writes: a table of another version is replaced. */
const FIREWALL_VERSION = 'kiln firewall 1';
/** Who holds which address: one file a namespace, made with O_EXCL, holding the owner's pid and start time. */
const STATE_DIR = '/run/kiln/net';
const NETNS_DIR = '/run/netns';
/** Namespaces given back and kept for the next steps: as many as steps usually run at once. */
const MAX_FREE = 8;
const FIRST_HOST = 2;
const LAST_HOST = 65534;

interface Prepared {
  index: number;
  name: string;
  address: string;
}

export class BridgeNetwork {
  private host: Promise<void> | undefined;
  private readonly ready: Promise<Prepared>[] = [];
  private readonly pending = new Set<Promise<unknown>>();
  private closed = false;
  private mtu = 1500;
  private readonly poolSize: number;

  constructor(private readonly options: BridgeOptions = {}) {
    this.poolSize = options.poolSize ?? 0;
  }

  /** The host ports this process opens to steps. */
  get hostPorts(): readonly number[] {
    return this.options.allowHostPorts ?? [];
  }

  /** Whether nothing was ever set up, so that closing has nothing to wait for. */
  get idle(): boolean {
    return this.host === undefined && this.pending.size === 0;
  }

  /** Sets up the host side once: bridge, forwarding, firewall, and sweeps namespaces of dead owners. */
  prepareHost(): Promise<void> {
    this.host ??= setUpHost(this.options.allowHostPorts).then((mtu) => {
      this.mtu = mtu;
    });
    return this.host;
  }

  /** Sets the host side up and makes the pool's namespaces now, rather than for the first step. */
  async warm(): Promise<void> {
    await this.prepareHost();
    this.fill();
    await Promise.all(this.ready);
  }

  async acquire(): Promise<NetworkLease> {
    if (this.closed) throw new KilnError('SHUTTING_DOWN', 'The build network is closed');
    await this.prepareHost();
    const next = this.ready.shift() ?? this.create();
    this.fill();
    const ns = await next;
    let released = false;
    return {
      nsPath: join(NETNS_DIR, ns.name),
      address: ns.address,
      release: (reuse = false) => {
        if (released) return;
        released = true;
        if (reuse && !this.closed && this.ready.length < Math.max(this.poolSize, MAX_FREE)) this.ready.push(Promise.resolve(ns));
        else this.track(destroy(ns));
      },
    };
  }

  /** Removes the namespaces kept ready and waits for every removal under way. */
  async close(): Promise<void> {
    this.closed = true;
    const ready = this.ready.splice(0);
    for (const p of ready) this.track(p.then(destroy, () => undefined));
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    // The ports a server opened close with it.
    const ports = this.options.allowHostPorts ?? [];
    if (this.host !== undefined && ports.length > 0) {
      await this.host.then(
        async () => {
          await run('nft', ['delete', 'element', 'inet', TABLE, 'host_ports', `{ ${ports.join(', ')} }`], { allowFail: true });
          unlinkQuiet(portsFile());
        },
        () => undefined,
      );
    }
  }

  private fill(): void {
    while (!this.closed && this.ready.length < this.poolSize) {
      const p = this.create();
      // A failure is seen by the step that takes this namespace; until then it is not unhandled.
      p.catch(() => undefined);
      this.ready.push(p);
    }
  }

  private create(): Promise<Prepared> {
    return this.track(createNamespace(this.mtu));
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const settled = p.finally(() => this.pending.delete(settled));
    settled.catch(() => undefined);
    this.pending.add(settled);
    return p;
  }
}

function addressOf(index: number): string {
  return `${SUBNET_PREFIX}.${index >> 8}.${index & 255}`;
}

async function createNamespace(mtu: number): Promise<Prepared> {
  const index = claimIndex();
  const name = `kiln-${index}`;
  const address = addressOf(index);
  const veth = `kv${randomId(5)}`;
  try {
    await ip([], [
      `netns add ${name}`,
      `link add ${veth} mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${name}`,
      `link set ${veth} master ${BRIDGE} up`,
      // Isolated ports forward only to the bridge itself: steps cannot reach each other.
      `link set ${veth} type bridge_slave isolated on`,
    ]);
    await ip(['-n', name], ['link set lo up', `addr add ${address}/16 dev eth0`, 'link set eth0 up', `route add default via ${GATEWAY}`]);
  } catch (err) {
    await destroy({ index, name, address });
    throw err;
  }
  return { index, name, address };
}

async function destroy(ns: Prepared): Promise<void> {
  // The veth pair goes with the namespace.
  await run('ip', ['netns', 'delete', ns.name], { allowFail: true });
  unlinkQuiet(join(STATE_DIR, String(ns.index)));
}

function portsFile(): string {
  return join(STATE_DIR, `ports.${process.pid}`);
}

/** Takes a free host address for this process: the O_EXCL create is what makes it ours, across processes. */
function claimIndex(): number {
  mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
  const span = LAST_HOST - FIRST_HOST + 1;
  const start = Math.floor(Math.random() * span);
  const owner = `${ownerLine()}\n`;
  for (let k = 0; k < span; k++) {
    const index = FIRST_HOST + ((start + k) % span);
    let fd: number;
    try {
      fd = openSync(join(STATE_DIR, String(index)), 'wx', 0o600);
    } catch (err) {
      if (isErrno(err, 'EEXIST')) continue;
      throw err;
    }
    writeSync(fd, owner);
    closeSync(fd);
    return index;
  }
  throw new KilnError('NETWORK_EXHAUSTED', `Every address of ${SUBNET_PREFIX}.0.0/16 is taken by a running step`);
}

/** What a state file says of its owner: "PID START", the identity cache/lease.ts gives a process. */
function ownerLine(): string {
  const me = selfIdentity();
  return `${me.pid} ${me.start}`;
}

/**
 * Whether the owner a state file names is gone. An empty line is a file its owner is writing
 * this instant: not gone.
 */
function ownerGone(line: string): boolean {
  const [pid, start = ''] = line.trim().split(' ');
  if (!pid) return false;
  return !isAlive({ pid: Number(pid), start });
}

/** Removes namespaces whose owner is gone (a process killed before it could clean up). */
export async function sweepNamespaces(): Promise<number> {
  let names: string[];
  try {
    names = readdirSync(STATE_DIR);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return 0;
    throw err;
  }
  let swept = 0;
  for (const n of names) {
    const ports = /^ports\.\d+$/.test(n);
    const index = Number(n);
    if (!ports && !Number.isInteger(index)) continue;
    const text = readQuiet(join(STATE_DIR, n));
    if (text === undefined) continue;
    const [owner = '', list = ''] = text.split('\n');
    if (!ownerGone(owner)) continue;
    if (ports) {
      // A server's open ports: closed when the server died without closing them.
      if (/^\d+(, \d+)*$/.test(list)) await run('nft', ['delete', 'element', 'inet', TABLE, 'host_ports', `{ ${list} }`], { allowFail: true });
      unlinkQuiet(join(STATE_DIR, n));
      continue;
    }
    await destroy({ index, name: `kiln-${index}`, address: addressOf(index) });
    swept++;
  }
  return swept;
}

/** A state file's text, or undefined when another process's sweep removed it meanwhile. */
function readQuiet(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

async function setUpHost(allowHostPorts: readonly number[] | undefined): Promise<number> {
  if (process.getuid?.() !== 0) {
    throw new KilnError('NETWORK_UNAVAILABLE', 'RUN steps get a network of their own only when Kiln runs as root', {
      hint: 'Run as root, or build with --network host (or none)',
    });
  }
  await sweepNamespaces();
  const mtu = uplinkMtu();
  if (!existsSync(`/sys/class/net/${BRIDGE}`)) {
    try {
      await ip([], [`link add ${BRIDGE} address ${BRIDGE_MAC} mtu ${mtu} type bridge`]);
    } catch (err) {
      // Another Kiln process made it in the meantime.
      if (!existsSync(`/sys/class/net/${BRIDGE}`)) throw networkError(err);
    }
  }
  // A bridge without an address of its own takes the lowest of its ports', which changes as
  // steps come and go: a namespace used again would keep sending to the gateway's old address
  // until its neighbour entry expired (seen: connections hanging for ten seconds and more).
  if (readFileSync(`/sys/class/net/${BRIDGE}/addr_assign_type`, 'utf8').trim() !== '3') {
    await ip([], [`link set ${BRIDGE} address ${BRIDGE_MAC}`]).catch((err) => {
      throw networkError(err);
    });
  }
  const addrs = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', BRIDGE]);
  if (!addrs.stdout.includes(` ${GATEWAY}/16 `)) await run('ip', ['addr', 'add', `${GATEWAY}/16`, 'dev', BRIDGE], { allowFail: true });
  await ip([], [`link set ${BRIDGE} up`]).catch((err) => {
    throw networkError(err);
  });
  if (readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== '1') writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
  // Every Kiln process on the host shares the table, and servers' open ports are elements of its
  // set: it is written only when absent or of another version.
  const current = await run('nft', ['list', 'table', 'inet', TABLE], { allowFail: true });
  if (current.code !== 0 || !current.stdout.includes(`"${FIREWALL_VERSION}"`)) {
    await run('nft', ['-f', '-'], { input: firewall() }).catch((err) => {
      throw networkError(err, 'Install nftables ("apt-get install nftables"), or build with --network host');
    });
  }
  if (allowHostPorts !== undefined && allowHostPorts.length > 0) {
    // Recorded first: if this process dies, the next Kiln process closes them (sweepNamespaces).
    mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
    writeFileSync(portsFile(), `${ownerLine()}\n${allowHostPorts.join(', ')}\n`, { mode: 0o600 });
    await run('nft', ['add', 'element', 'inet', TABLE, 'host_ports', `{ ${allowHostPorts.join(', ')} }`]);
  }
  await openForwardPolicy();
  return mtu;
}

/**
 * Our own table, replaced atomically: the delete of a table that may not exist is made safe by
 * declaring it first. Servers add their open ports to `host_ports` and take them out when they
 * stop (two servers that open one port close it with the first to stop). Steps reach anything but the host (and link-local addresses, where cloud
 * metadata services answer); the host answers them only on the ports listed.
 */
export function firewall(): string {
  return `table inet ${TABLE}
delete table inet ${TABLE}
table inet ${TABLE} {
  comment "${FIREWALL_VERSION}"
  set host_ports {
    type inet_service
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${BRIDGE}" ct state established,related accept
    iifname "${BRIDGE}" meta l4proto { tcp, udp } th dport @host_ports accept
    iifname "${BRIDGE}" meta l4proto tcp reject with tcp reset
    iifname "${BRIDGE}" reject with icmpx admin-prohibited
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "${BRIDGE}" oifname "${BRIDGE}" drop
    iifname "${BRIDGE}" ip daddr 169.254.0.0/16 drop
    oifname "${BRIDGE}" ct state established,related accept
    oifname "${BRIDGE}" iifname != "${BRIDGE}" drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${SUBNET_PREFIX}.0.0/16 oifname != "${BRIDGE}" masquerade
  }
}
`;
}

/**
 * Where another firewall (dockerd's iptables rules) drops forwarded packets by default, our
 * accept does not count: its chain is consulted too. Steps' traffic is then let through there.
 */
async function openForwardPolicy(): Promise<void> {
  const rules = await run('iptables', ['-S', 'FORWARD'], { allowFail: true });
  if (rules.code !== 0 || !rules.stdout.includes('-P FORWARD DROP')) return;
  for (const rule of [['-i', BRIDGE, '-j', 'ACCEPT'], ['-o', BRIDGE, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT']]) {
    if ((await run('iptables', ['-C', 'FORWARD', ...rule], { allowFail: true })).code !== 0) await run('iptables', ['-I', 'FORWARD', ...rule]);
  }
}

/** The MTU of the interface of the default route: a bigger one on the bridge would need fragments outside. */
function uplinkMtu(): number {
  try {
    for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
      const [iface, dest] = line.split('\t');
      if (iface && dest === '00000000') return Number(readFileSync(`/sys/class/net/${iface}/mtu`, 'utf8').trim()) || 1500;
    }
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  return 1500;
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch (err) {
    // Removed already, by a sweep of another process.
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

async function ip(global: string[], commands: string[]): Promise<void> {
  await run('ip', [...global, '-batch', '-'], { input: commands.join('\n') + '\n' });
}

function networkError(err: unknown, hint = 'Run as root with iproute2 and nftables, or build with --network host'): KilnError {
  return new KilnError('NETWORK_UNAVAILABLE', `Cannot set up the network of RUN steps: ${err instanceof Error ? err.message : String(err)}`, { hint, cause: err });
}

/**
 * The resolver a step gets: the host's, without loopback nameservers (the step's loopback is its
 * own); when none is left, public resolvers, as docker does.
 */
export function stepResolvConf(host: string): string {
  const lines = host.split('\n');
  const kept = lines.filter((l) => !/^\s*nameserver\s+(127\.|::1\b)/.test(l));
  if (kept.some((l) => /^\s*nameserver\s/.test(l))) return kept.join('\n');
  return [...kept.filter((l) => l.trim() !== ''), 'nameserver 8.8.8.8', 'nameserver 8.8.4.4', ''].join('\n');
}
