import { readFileSync } from 'node:fs';
import type { ProcessSpec } from './executor.js';
import { seccompProfile } from './seccomp.js';
import { ociResources } from './cgroup.js';

/** Docker's default capability set. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
];

/** Capability names by number (linux/capability.h, as of 6.x). */
const CAPABILITY_NAMES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW',
  'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD',
  'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

let capabilityCache: string[] | undefined;

/**
 * Every capability this process may hand on, for `--security=insecure`: a capability outside
 * our own bounding set (this machine drops CAP_SYS_RESOURCE) would make the runtime fail.
 */
export function allCapabilities(): string[] {
  if (capabilityCache !== undefined) return capabilityCache;
  let bounding = (1n << BigInt(CAPABILITY_NAMES.length)) - 1n;
  try {
    const m = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) bounding = BigInt(`0x${m[1]}`);
  } catch {
    // Without /proc the full list is the best guess; the runtime reports what it cannot grant.
  }
  capabilityCache = CAPABILITY_NAMES.filter((_, i) => (bounding >> BigInt(i)) & 1n);
  return capabilityCache;
}

/** Docker's default PATH, for images that set none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

const MASKED_PATHS = [
  '/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware', '/sys/devices/virtual/powercap',
];
const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export interface SpecFiles {
  hosts: string;
  resolvConf: string;
  /** The network namespace a `default` network step joins (src/executor/network.ts). */
  netns?: string;
  /** The container's cgroup (relative to the runtime's own), when it has limits. */
  cgroupsPath?: string;
}

/** Mount points the runtime needs in the rootfs; created only for the run when absent. */
export const MOUNT_POINTS = ['/proc', '/dev', '/sys', '/etc/hosts', '/etc/resolv.conf'] as const;

/** The container's /etc/hosts: loopback, its own name, then the extra lines asked for. */
export function hostsFile(p: Pick<ProcessSpec, 'hostname' | 'extraHosts'>): string {
  const extra = (p.extraHosts ?? []).map((h) => `${h.ip}\t${h.host}\n`).join('');
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${p.hostname ?? 'kiln'}\n${extra}`;
}

/** An OCI runtime spec for one process, as a RUN step or `kiln run` needs it. */
export function runtimeSpec(p: ProcessSpec, rootfs: string, files: SpecFiles): object {
  const env = p.env.some((e) => e.startsWith('PATH=')) ? p.env : [`PATH=${DEFAULT_PATH}`, ...p.env];
  const namespaces: { type: string; path?: string }[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'cgroup' }];
  // runc brings up loopback in a network namespace it creates, and nothing else.
  if (p.network === 'none') namespaces.push({ type: 'network' });
  else if (p.network === 'default') {
    if (files.netns === undefined) throw new Error('A step on the default network needs its namespace');
    namespaces.push({ type: 'network', path: files.netns });
  }
  const insecure = p.security === 'insecure';
  const caps = insecure ? allCapabilities() : DEFAULT_CAPABILITIES;
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: p.user.uid, gid: p.user.gid, additionalGids: p.user.additionalGids },
      args: p.args,
      env,
      cwd: p.cwd,
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      noNewPrivileges: !insecure,
      ...(p.ulimits?.length ? { rlimits: p.ulimits.map((u) => ({ type: `RLIMIT_${u.name.toUpperCase()}`, soft: u.soft, hard: u.hard })) } : {}),
    },
    root: { path: rootfs, readonly: false },
    hostname: p.hostname ?? 'kiln',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${Math.ceil((p.shmSize ?? 64 * 1024 * 1024) / 1024)}k`] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: insecure ? ['nosuid', 'noexec', 'nodev'] : ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/etc/resolv.conf', type: 'bind', source: files.resolvConf, options: ['rbind', 'ro'] },
      { destination: '/etc/hosts', type: 'bind', source: files.hosts, options: ['rbind', 'ro'] },
      ...(p.mounts ?? []),
    ],
    linux: {
      namespaces,
      maskedPaths: insecure ? [] : MASKED_PATHS,
      readonlyPaths: insecure ? [] : READONLY_PATHS,
      resources: { devices: [{ allow: insecure, access: 'rwm' }], ...ociResources(p.resources) },
      ...(files.cgroupsPath !== undefined ? { cgroupsPath: files.cgroupsPath } : {}),
      // --security=insecure is unconfined, as in BuildKit: no syscall filter at all.
      ...(insecure ? {} : { seccomp: seccompProfile(caps) }),
    },
  };
}
