import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { totalmem } from 'node:os';
import { posix } from 'node:path';
import { isErrno } from '../../cache/fsutil.js';
import type { ResourceLimits } from './executor.js';

/** One mounted cgroup hierarchy and this process's cgroup in it. */
interface Hierarchy {
  /** Where it is mounted. */
  mount: string;
  /** This process's cgroup, from /proc/self/cgroup. */
  own: string;
  controllers: string[];
  unified: boolean;
}

let hierarchyCache: Hierarchy[] | undefined;

/** The cgroup hierarchies of this host (v1 controllers, the unified one, or both in hybrid mode). */
function hierarchies(): Hierarchy[] {
  if (hierarchyCache !== undefined) return hierarchyCache;
  let mountinfo: string;
  let cgroups: string;
  try {
    mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
    cgroups = readFileSync('/proc/self/cgroup', 'utf8');
  } catch (err) {
    // Without /proc there is no cgroup to find; the runtime says what it cannot do.
    if (!isErrno(err, 'ENOENT')) throw err;
    hierarchyCache = [];
    return hierarchyCache;
  }
  const own = new Map<string, string>();
  for (const line of cgroups.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) own.set(m[1]!, m[2]!);
  }
  const found: Hierarchy[] = [];
  for (const line of mountinfo.split('\n')) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const mount = left.split(' ')[4]!;
    const [fstype, , superOptions = ''] = right.split(' ');
    if (fstype === 'cgroup2') {
      const path = own.get('');
      if (path !== undefined) found.push({ mount, own: path, controllers: [], unified: true });
    } else if (fstype === 'cgroup') {
      const names = superOptions.split(',').filter((o) => !['rw', 'ro', 'relatime', 'noexec', 'nosuid', 'nodev', 'clone_children', 'xattr'].includes(o) && !o.startsWith('release_agent='));
      const key = [...own.keys()].find((k) => k !== '' && k.split(',').sort().join(',') === [...names].sort().join(','));
      if (key !== undefined) found.push({ mount, own: own.get(key)!, controllers: names, unified: false });
    }
  }
  hierarchyCache = found;
  return found;
}

/** 2 for the unified hierarchy alone, 1 when the controllers are v1 ones (hybrid included), null without cgroups. */
export function cgroupVersion(): 1 | 2 | null {
  const h = hierarchies();
  if (h.some((x) => !x.unified)) return 1;
  return h.length > 0 ? 2 : null;
}

/**
 * Where a container's cgroup's parent is in `h`: runc reads a relative `cgroupsPath` from its
 * own cgroup under v1, and from that cgroup's parent under v2 (a cgroup holding processes cannot
 * hand controllers down to children).
 */
function parentDir(h: Hierarchy, id: string): string {
  const base = cgroupVersion() === 2 ? posix.dirname(h.own) : h.own;
  return posix.join(h.mount, base, id);
}

/**
 * The `linux.cgroupsPath` of container `id`: a cgroup of its own inside one named after it, which
 * stays when the runtime removes the container's, so that what happened (an OOM kill, the peak
 * memory) can still be read afterwards. `removeStepCgroup` removes it.
 */
export function stepCgroupPath(id: string): string {
  return `${id}/step`;
}

/** Removes what `stepCgroupPath` left once the runtime has removed the container's own cgroup. */
export async function removeStepCgroup(id: string): Promise<void> {
  for (const h of hierarchies()) {
    const dir = parentDir(h, id);
    // A cgroup whose last process or child has just gone can answer EBUSY for a moment (runc
    // retries the same way); one still busy after ~0.6 s stays behind, empty.
    for (let attempt = 0; ; attempt++) {
      try {
        rmdirIfPresent(posix.join(dir, 'step'));
        rmdirIfPresent(dir);
        break;
      } catch (err) {
        if (!isErrno(err, 'EBUSY')) throw err;
        if (attempt === 5) break;
        await new Promise((r) => setTimeout(r, 10 * 2 ** attempt));
      }
    }
  }
}

function rmdirIfPresent(dir: string): void {
  try {
    rmdirSync(dir);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

function readNumber(path: string, key?: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  if (key === undefined) return Number(text.trim());
  const m = new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * Whether the container `id`, which ended with `exitCode`, was killed for exceeding its memory
 * limit of `limit` bytes. cgroup v2 counts OOM kills in the parent's `memory.events`; v1 counts
 * them only in the container's own cgroup, which the runtime has removed by now, so there a
 * process killed by SIGKILL (137) after the memory use reached the limit is taken for one.
 */
export function killedForMemory(id: string, limit: number, exitCode: number): boolean {
  const h = hierarchies().find((x) => x.controllers.includes('memory')) ?? hierarchies().find((x) => x.unified);
  if (h === undefined) return false;
  const dir = parentDir(h, id);
  if (h.unified) return (readNumber(posix.join(dir, 'memory.events'), 'oom_kill') ?? 0) > 0;
  // The kernel charges memory in batches of 64 pages: the peak may stop short of the limit.
  const peak = readNumber(posix.join(dir, 'memory.max_usage_in_bytes'));
  return exitCode === 137 && peak !== undefined && peak >= limit - 256 * 1024;
}

/** Whether swap is accounted, so that a swap limit can be set at all. */
function swapAccounted(): boolean {
  const h = hierarchies();
  const v1 = h.find((x) => x.controllers.includes('memory'));
  if (v1) return existsSync(posix.join(v1.mount, 'memory.memsw.limit_in_bytes'));
  const v2 = h.find((x) => x.unified);
  return v2 !== undefined && existsSync(posix.join(v2.mount, posix.dirname(v2.own), 'memory.swap.max'));
}

/** What docker info says the kernel can limit, from the controllers this host has. */
export function cgroupSupport() {
  const h = hierarchies();
  const version = cgroupVersion();
  let controllers = h.flatMap((x) => x.controllers);
  if (version === 2) {
    const v2 = h.find((x) => x.unified)!;
    controllers = (readFileSync(posix.join(v2.mount, 'cgroup.controllers'), 'utf8').trim() || '').split(/\s+/);
  }
  const has = (c: string) => controllers.includes(c);
  return { version, memory: has('memory'), swap: has('memory') && swapAccounted(), pids: has('pids'), cpu: has('cpu'), cpuset: has('cpuset') };
}

/**
 * The defaults of `kiln serve` for each RUN step. Memory: half of the host's, so that one step
 * can never take the memory the server and the other builds need, and no swap beyond it. Pids:
 * 4096, far above what a parallel compile uses (a `make -j` of a few hundred processes and
 * threads) and far below the 32768 of a default pid_max, so a fork bomb stops at its cgroup.
 * CPU: no quota — each step has a cgroup of its own, which the scheduler already treats as one
 * entity however many processes it forks.
 */
export function defaultStepLimits(): ResourceLimits {
  return { memory: Math.floor(totalmem() / 2 / 1024 ** 2) * 1024 ** 2, pids: 4096 };
}

const CPU_PERIOD = 100_000;

/** The OCI `linux.resources` entries for `limits`, beside the device rules. */
export function ociResources(limits: ResourceLimits | undefined): object {
  if (limits === undefined) return {};
  const out: Record<string, object> = {};
  if (limits.memory !== undefined) {
    // No swap beyond the memory limit unless asked: a step swapping the host is as bad as one filling it.
    const swap = limits.memorySwap ?? limits.memory;
    out.memory = { limit: limits.memory, ...(swapAccounted() ? { swap } : {}) };
  }
  if (limits.pids !== undefined) out.pids = { limit: limits.pids };
  const cpu: Record<string, number | string> = {};
  if (limits.cpuShares !== undefined) cpu.shares = limits.cpuShares;
  if (limits.cpus !== undefined) Object.assign(cpu, { quota: Math.round(limits.cpus * CPU_PERIOD), period: CPU_PERIOD });
  if (limits.cpusetCpus !== undefined) cpu.cpus = limits.cpusetCpus;
  if (Object.keys(cpu).length > 0) out.cpu = cpu;
  return out;
}

/** `268435456` as "256MiB": limits are set in binary units. */
export function binarySize(bytes: number): string {
  for (const [unit, size] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return bytes >= 1024 ** 2 ? `${(bytes / 1024 ** 2).toFixed(1)}MiB` : `${bytes}B`;
}
