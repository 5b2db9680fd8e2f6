import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import type { ExtraHost, Ulimit } from '../../solver/graph.js';
import { GATEWAY } from '../executor/network.js';
import type { ResourceLimits } from '../executor/executor.js';
import type { LocalImage } from '../image/local.js';
import { normalizeName } from '../image/reference.js';
import { formatPlatform, parsePlatform } from '../image/platform.js';
import { usageError, type CommandSpec } from './args.js';

/**
 * The docker/buildx build flags whose value Kiln checks itself: what the engine supports is
 * returned for the build request, what it does not is refused before any work, by name.
 */
export interface ExtraBuildFlags {
  labels: Record<string, string>;
  pull: boolean;
  /** Settings of every RUN step, absent when not given so that cache keys stay as they were. */
  runDefaults: { network?: 'none' | 'host'; extraHosts?: ExtraHost[]; ulimits?: Ulimit[]; shmSize?: number };
}


export function parseExtraBuildFlags(options: Record<string, unknown>, spec: CommandSpec): ExtraBuildFlags {
  const list = (name: string) => (options[name] as string[] | undefined) ?? [];
  const labels: Record<string, string> = {};
  for (const l of list('label')) {
    const eq = l.indexOf('=');
    if (eq === 0) throw usageError(`Invalid --label "${l}": the name is empty`, spec);
    // As docker does, `--label NAME` is the label with an empty value.
    labels[eq < 0 ? l : l.slice(0, eq)] = eq < 0 ? '' : l.slice(eq + 1);
  }
  const platform = options.platform as string | undefined;
  if (platform !== undefined) {
    for (const p of platform.split(',')) {
      let parsed;
      try {
        parsed = parsePlatform(p);
      } catch (err) {
        if (err instanceof KilnError) throw usageError(err.message, spec);
        throw err;
      }
      if (formatPlatform(parsed) !== 'linux/amd64') {
        throw new KilnError('PLATFORM_UNSUPPORTED', `Cannot build for platform "${p}": Kiln builds for linux/amd64 only`, {
          hint: 'Leave --platform out, or pass --platform linux/amd64',
        });
      }
    }
  }
  const network = options.network as string | undefined;
  if (network !== undefined && network !== 'default' && network !== 'host' && network !== 'none') {
    throw usageError(`Invalid --network "${network}": expected default, host or none`, spec);
  }
  const runDefaults: ExtraBuildFlags['runDefaults'] = {};
  // `default` asked for explicitly is the same step as no flag: it keeps the cache key.
  if (network === 'none' || network === 'host') runDefaults.network = network;
  const hosts = parseAddHosts(list('add-host'), spec);
  if (hosts.length > 0) runDefaults.extraHosts = hosts;
  const ulimits = parseUlimits(list('ulimit'), spec);
  if (ulimits.length > 0) runDefaults.ulimits = ulimits;
  const shm = parseShmSize(options['shm-size'] as string | undefined, spec);
  // The default size asked for explicitly is the same step: it keeps the key of a build without the flag.
  if (shm !== undefined && shm !== 64 * 1024 * 1024) runDefaults.shmSize = shm;
  return { labels, pull: options.pull === true, runDefaults };
}

/** `--add-host NAME:IP` (or `NAME=IP`, as docker also takes it); the IP may be IPv6. */
/** `--build-arg NAME=VALUE`; a bare `NAME` takes the value from the environment when set, as docker does. */
export function parseBuildArgs(values: readonly string[], spec: CommandSpec): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq < 0) {
      if (process.env[v] !== undefined) out[v] = process.env[v]!;
      continue;
    }
    if (eq === 0) throw usageError(`Invalid --build-arg "${v}": the name is empty`, spec);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

export function parseAddHosts(values: readonly string[], spec: CommandSpec): ExtraHost[] {
  return values.map((h) => {
    const m = /^([^:=\s]+)[:=](.+)$/.exec(h);
    if (!m) throw usageError(`Invalid --add-host "${h}": expected HOST:IP`, spec);
    // As docker's: the host's address on the steps' bridge (whose ports a server opens with --allow-host-port).
    const ip = m[2] === 'host-gateway' ? GATEWAY : m[2]!.replace(/^\[(.*)\]$/, '$1');
    const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
    const ok = v4 ? v4.slice(1).every((n) => Number(n) <= 255) : /^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*$/.test(ip);
    if (!ok) throw usageError(`Invalid --add-host "${h}": "${ip}" is not an IP address`, spec);
    return { host: m[1]!, ip };
  });
}

/** ulimit's names as docker takes them, with the line of /proc/self/limits that holds each. */
const ULIMITS: Record<string, string> = {
  core: 'Max core file size', cpu: 'Max cpu time', data: 'Max data size', fsize: 'Max file size', locks: 'Max file locks',
  memlock: 'Max locked memory', msgqueue: 'Max msgqueue size', nice: 'Max nice priority', nofile: 'Max open files',
  nproc: 'Max processes', rss: 'Max resident set', rtprio: 'Max realtime priority', rttime: 'Max realtime timeout',
  sigpending: 'Max pending signals', stack: 'Max stack size',
};

/**
 * `--ulimit NAME=SOFT[:HARD]`. A limit above this process's hard limit is refused here: the
 * kernel refuses to raise one without CAP_SYS_RESOURCE, which containers are not given.
 */
export function parseUlimits(values: readonly string[], spec: CommandSpec): Ulimit[] {
  const byName = new Map<string, Ulimit>();
  for (const u of values) {
    const m = /^([a-z]+)=(\d+)(?::(\d+))?$/.exec(u);
    if (!m) throw usageError(`Invalid --ulimit "${u}": expected NAME=SOFT[:HARD] with whole numbers, such as nofile=1024:2048`, spec);
    const name = m[1]!;
    if (!Object.hasOwn(ULIMITS, name)) throw usageError(`Invalid --ulimit "${u}": unknown limit "${name}"; expected one of ${Object.keys(ULIMITS).join(', ')}`, spec);
    const soft = Number(m[2]);
    const hard = m[3] === undefined ? soft : Number(m[3]);
    if (soft > hard) throw usageError(`Invalid --ulimit "${u}": the soft limit ${soft} is above the hard limit ${hard}`, spec);
    const max = hardLimit(ULIMITS[name]!);
    if (max !== undefined && hard > max) {
      throw new KilnError('ULIMIT_TOO_HIGH', `Cannot set --ulimit ${name} to ${hard}: the hard limit of this machine is ${max}`, { hint: `Ask for ${max} or less: the kernel refuses to raise a hard limit inside a container` });
    }
    byName.set(name, { name, soft, hard });
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** The hard limit of this process for one line of /proc/self/limits; undefined when unlimited or unknown. */
function hardLimit(label: string): number | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/self/limits', 'utf8');
  } catch (err) {
    // Without /proc the runtime is the judge: it reports a limit it cannot set.
    if (err instanceof Error) return undefined;
    throw err;
  }
  const line = text.split('\n').find((l) => l.startsWith(label));
  const hard = line?.slice(label.length).trim().split(/\s+/)[1];
  return hard === undefined || !/^\d+$/.test(hard) ? undefined : Number(hard);
}

/** `--shm-size 128m`: docker's units; more than zero. */
export function parseShmSize(value: string | undefined, spec: CommandSpec): number | undefined {
  if (value === undefined) return undefined;
  const bytes = parseBytes(value);
  if (bytes === undefined || bytes <= 0) throw usageError(`Invalid --shm-size "${value}": expected a size such as 64m or 1g`, spec);
  return bytes;
}

/** The cgroup limits of `docker build` (--memory, --memory-swap, --cpu-shares, --cpu-period, --cpu-quota, --cpuset-cpus). */
export function parseStepLimits(options: Record<string, unknown>, spec: CommandSpec): ResourceLimits | undefined {
  const text = (name: string) => options[name] as string | undefined;
  const limits: ResourceLimits = {};
  const memory = text('memory');
  if (memory !== undefined) limits.memory = parseMemoryLimit(memory, { flag: 'memory', spec });
  const swap = text('memory-swap');
  if (swap !== undefined) {
    const bytes = swap === '-1' ? -1 : parseBytes(swap);
    if (limits.memory === undefined) throw usageError('"--memory-swap" needs "--memory"', spec);
    if (bytes === undefined || (bytes !== -1 && bytes < limits.memory)) throw usageError(`Invalid --memory-swap "${swap}": expected -1 or a size no smaller than --memory`, spec);
    limits.memorySwap = bytes;
  }
  const whole = (name: string, min: number, max: number): number | undefined => {
    const v = text(name);
    return v === undefined ? undefined : parseWholeInRange(v, { flag: name, min, max, spec });
  };
  limits.cpuShares = whole('cpu-shares', CPU_SHARES.min, CPU_SHARES.max);
  const period = whole('cpu-period', 1000, 1_000_000);
  const quota = whole('cpu-quota', 1000, Number.MAX_SAFE_INTEGER);
  if (period !== undefined && quota === undefined) throw usageError('"--cpu-period" needs "--cpu-quota"', spec);
  if (quota !== undefined) limits.cpus = quota / (period ?? 100_000);
  const cpuset = text('cpuset-cpus');
  if (cpuset !== undefined) {
    if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(cpuset)) throw usageError(`Invalid --cpuset-cpus "${cpuset}": expected a list such as 0-3 or 0,2`, spec);
    limits.cpusetCpus = cpuset;
  }
  return compactLimits(limits);
}

/** The range of a CPU weight (`--cpu-shares`), as docker and the kernel take it. */
export const CPU_SHARES = { min: 2, max: 262144 };

/**
 * A memory limit of `--memory` or `kiln serve --step-memory`: a size of at least docker's 6m
 * minimum, with less the runtime's own init may not start; with `allowZero`, 0 for none.
 */
export function parseMemoryLimit(value: string, o: { flag: string; spec: CommandSpec; allowZero?: boolean }): number | undefined {
  const bytes = parseBytes(value);
  if (o.allowZero && bytes === 0) return undefined;
  if (bytes === undefined || bytes < 6 * 1024 ** 2) {
    throw usageError(`Invalid --${o.flag} "${value}": expected a size of at least 6m, such as 512m or 2g${o.allowZero ? ', or 0' : ''}`, o.spec);
  }
  return bytes;
}

/** A whole number from `min` to `max` given to `--flag`. */
export function parseWholeInRange(value: string, o: { flag: string; min: number; max: number; spec: CommandSpec }): number {
  if (!/^[0-9]+$/.test(value) || Number(value) < o.min || Number(value) > o.max) throw usageError(`Invalid --${o.flag} "${value}": expected a number from ${o.min} to ${o.max}`, o.spec);
  return Number(value);
}

/** The limits that are set, or undefined for none. */
export function compactLimits(limits: ResourceLimits): ResourceLimits | undefined {
  const set = Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) as ResourceLimits;
  return Object.keys(set).length > 0 ? set : undefined;
}

/** `64m`, `1g`, `65536k`, `1048576` (bytes), as docker reads them: binary units. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmg]?)i?b?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase()]!;
  return Math.round(Number(m[1]) * unit);
}

/** The JSON `docker buildx build --metadata-file` writes, for the keys Kiln can fill. */
export async function writeMetadataFile(
  path: string,
  image: Pick<LocalImage, 'configDigest' | 'manifestDigest'> & { manifest: { mediaType?: string } },
  options: { tags: readonly string[]; manifestSize: number },
): Promise<void> {
  const { tags, manifestSize } = options;
  const metadata: Record<string, unknown> = {
    'containerimage.config.digest': image.configDigest,
    'containerimage.descriptor': { mediaType: image.manifest.mediaType, digest: image.manifestDigest, size: manifestSize },
    'containerimage.digest': image.manifestDigest,
  };
  if (tags.length > 0) metadata['image.name'] = tags.map(normalizeName).join(',');
  try {
    await writeFile(path, `${JSON.stringify(metadata, null, 2)}\n`);
  } catch (err) {
    throw new KilnError('METADATA_WRITE', `Cannot write the metadata file "${path}": ${(err as Error).message}`, { cause: err });
  }
}
