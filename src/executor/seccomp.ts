import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { release } from 'node:os';
import { isErrno } from '../../cache/fsutil.js';

/**
 * The syscall policy of a sandboxed RUN step and of `kiln run`: docker's default rules
 * ("Seccomp security profiles for Docker"), as an OCI `linux.seccomp` object. Anything not
 * allowed below fails with EPERM, so a program probing for a feature sees "not permitted"
 * rather than a crash; that covers, among others, keyctl, add_key and request_key (the kernel
 * keyring is not namespaced), kexec, swapon/swapoff, userfaultfd, uselib, nfsservctl and the
 * old sysctl.
 */

/** The names this file uses for a syscall table, after Node's `process.arch`. */
type Arch = 'x64' | 'ia32' | 'arm64' | 'arm';

const EPERM = 1;
const ENOSYS = 38;

/**
 * The native architecture, then the compatibility ABIs its kernel may also run, each with the
 * kernel option that provides it.
 */
const ARCHITECTURES: Record<string, [string, ...[string, string][]]> = {
  x64: ['SCMP_ARCH_X86_64', ['SCMP_ARCH_X86', 'CONFIG_IA32_EMULATION'], ['SCMP_ARCH_X32', 'CONFIG_X86_X32_ABI']],
  arm64: ['SCMP_ARCH_AARCH64', ['SCMP_ARCH_ARM', 'CONFIG_COMPAT']],
};

let kernelConfig: string | null | undefined;

/** The running kernel's build options, when it exposes them (/proc/config.gz). */
function readKernelConfig(): string | null {
  if (kernelConfig !== undefined) return kernelConfig;
  try {
    // zlib only here, and only once: a build that runs no step never loads it.
    const { gunzipSync } = createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib');
    kernelConfig = gunzipSync(readFileSync('/proc/config.gz')).toString('latin1');
  } catch (err) {
    if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EACCES')) throw err;
    kernelConfig = null;
  }
  return kernelConfig;
}

/**
 * The filter's architectures. Each one costs the runtime a copy of the filter to compile (on
 * x86_64, ~6 ms of CPU per step for x86 and as much for x32), so an ABI the kernel says it was
 * built without is left out: its syscalls fail there anyway, and no call of an architecture the
 * filter does not list gets through it. Without /proc/config.gz every ABI is listed, as docker does.
 */
export function seccompArchitectures(arch: string = process.arch, config: string | null = readKernelConfig()): string[] {
  const entry = ARCHITECTURES[arch];
  if (entry === undefined) return [];
  const [native, ...compat] = entry;
  const built = (option: string) => config === null || new RegExp(`^${option}=y$`, 'm').test(config);
  return [native, ...compat.filter(([, option]) => built(option)).map(([name]) => name)];
}

/**
 * Allowed to every step. Grouped by what they are for; the 32-bit spellings (`chown32`,
 * `fcntl64`, `*_time64`) are the same calls for x86 and arm binaries. A name that the
 * runtime's libseccomp does not know is skipped by it, so newer calls may be listed.
 */
const ALWAYS: readonly string[] = [
  // Processes, threads and their identity. Plain clone and clone3 are rules of their own below.
  'execve', 'execveat', 'exit', 'exit_group', 'fork', 'vfork', 'wait4', 'waitid', 'waitpid',
  'getpid', 'getppid', 'gettid', 'getpgid', 'getpgrp', 'setpgid', 'getsid', 'setsid',
  'getuid', 'getuid32', 'geteuid', 'geteuid32', 'getgid', 'getgid32', 'getegid', 'getegid32',
  'getresuid', 'getresuid32', 'getresgid', 'getresgid32', 'getgroups', 'getgroups32',
  'setuid', 'setuid32', 'setgid', 'setgid32', 'setreuid', 'setreuid32', 'setregid', 'setregid32',
  'setresuid', 'setresuid32', 'setresgid', 'setresgid32', 'setgroups', 'setgroups32',
  'setfsuid', 'setfsuid32', 'setfsgid', 'setfsgid32', 'capget', 'capset', 'prctl', 'seccomp',
  'set_tid_address', 'set_robust_list', 'get_robust_list', 'rseq', 'restart_syscall',
  'get_thread_area', 'set_thread_area', 'landlock_create_ruleset', 'landlock_add_rule', 'landlock_restrict_self',
  'pidfd_open', 'pidfd_send_signal', 'process_mrelease',
  // Signals.
  'kill', 'tkill', 'tgkill', 'pause', 'sigaltstack', 'sigreturn', 'sigprocmask', 'signalfd', 'signalfd4',
  'rt_sigaction', 'rt_sigpending', 'rt_sigprocmask', 'rt_sigqueueinfo', 'rt_tgsigqueueinfo', 'rt_sigreturn',
  'rt_sigsuspend', 'rt_sigtimedwait', 'rt_sigtimedwait_time64',
  // Memory.
  'brk', 'mmap', 'mmap2', 'munmap', 'mremap', 'mprotect', 'madvise', 'mincore', 'msync', 'remap_file_pages',
  'mlock', 'mlock2', 'mlockall', 'munlock', 'munlockall', 'membarrier', 'memfd_create', 'memfd_secret',
  'pkey_alloc', 'pkey_free', 'pkey_mprotect',
  // Files, directories, attributes.
  'open', 'openat', 'openat2', 'creat', 'close', 'close_range', 'read', 'write', 'readv', 'writev',
  'pread64', 'pwrite64', 'preadv', 'preadv2', 'pwritev', 'pwritev2', 'lseek', '_llseek',
  'dup', 'dup2', 'dup3', 'fcntl', 'fcntl64', 'flock', 'ioctl', 'fsync', 'fdatasync', 'sync', 'syncfs', 'sync_file_range',
  'truncate', 'truncate64', 'ftruncate', 'ftruncate64', 'fallocate', 'fadvise64', 'fadvise64_64', 'readahead',
  'copy_file_range', 'sendfile', 'sendfile64', 'splice', 'tee', 'vmsplice',
  'stat', 'stat64', 'lstat', 'lstat64', 'fstat', 'fstat64', 'fstatat64', 'newfstatat', 'statx',
  'statfs', 'statfs64', 'fstatfs', 'fstatfs64', 'access', 'faccessat', 'faccessat2',
  'getcwd', 'chdir', 'fchdir', 'getdents', 'getdents64', 'mkdir', 'mkdirat', 'rmdir', 'mknod', 'mknodat',
  'rename', 'renameat', 'renameat2', 'link', 'linkat', 'unlink', 'unlinkat', 'symlink', 'symlinkat', 'readlink', 'readlinkat',
  'chmod', 'fchmod', 'fchmodat', 'chown', 'chown32', 'fchown', 'fchown32', 'fchownat', 'lchown', 'lchown32', 'umask',
  'utime', 'utimes', 'utimensat', 'utimensat_time64', 'futimesat',
  'getxattr', 'lgetxattr', 'fgetxattr', 'setxattr', 'lsetxattr', 'fsetxattr',
  'listxattr', 'llistxattr', 'flistxattr', 'removexattr', 'lremovexattr', 'fremovexattr',
  // A file handle is only looked up with CAP_DAC_READ_SEARCH (open_by_handle_at, below); making one is harmless.
  'name_to_handle_at',
  'inotify_init', 'inotify_init1', 'inotify_add_watch', 'inotify_rm_watch', 'fanotify_mark',
  // Waiting and asynchronous I/O.
  'select', '_newselect', 'pselect6', 'pselect6_time64', 'poll', 'ppoll', 'ppoll_time64',
  'epoll_create', 'epoll_create1', 'epoll_ctl', 'epoll_ctl_old', 'epoll_wait', 'epoll_wait_old', 'epoll_pwait', 'epoll_pwait2',
  'eventfd', 'eventfd2', 'pipe', 'pipe2', 'futex', 'futex_time64', 'futex_waitv',
  'io_setup', 'io_destroy', 'io_submit', 'io_cancel', 'io_getevents', 'io_pgetevents', 'io_pgetevents_time64',
  'io_uring_setup', 'io_uring_enter', 'io_uring_register',
  // Sockets; socket() itself is a rule of its own below.
  'socketpair', 'bind', 'connect', 'listen', 'accept', 'accept4', 'shutdown', 'getsockname', 'getpeername',
  'getsockopt', 'setsockopt', 'send', 'sendto', 'sendmsg', 'sendmmsg', 'recv', 'recvfrom', 'recvmsg', 'recvmmsg', 'recvmmsg_time64',
  'socketcall',
  // System V and POSIX IPC, within the step's own IPC namespace.
  'ipc', 'msgget', 'msgctl', 'msgsnd', 'msgrcv', 'semget', 'semctl', 'semop', 'semtimedop', 'semtimedop_time64',
  'shmget', 'shmctl', 'shmat', 'shmdt', 'mq_open', 'mq_unlink', 'mq_getsetattr', 'mq_notify',
  'mq_timedsend', 'mq_timedsend_time64', 'mq_timedreceive', 'mq_timedreceive_time64',
  // Time: reading clocks and timers. adjtimex and clock_adjtime only read without CAP_SYS_TIME.
  'time', 'gettimeofday', 'clock_gettime', 'clock_gettime64', 'clock_getres', 'clock_getres_time64',
  'clock_nanosleep', 'clock_nanosleep_time64', 'nanosleep', 'adjtimex', 'clock_adjtime', 'clock_adjtime64',
  'alarm', 'getitimer', 'setitimer', 'times',
  'timer_create', 'timer_delete', 'timer_getoverrun', 'timer_gettime', 'timer_gettime64', 'timer_settime', 'timer_settime64',
  'timerfd_create', 'timerfd_gettime', 'timerfd_gettime64', 'timerfd_settime', 'timerfd_settime64',
  // Scheduling and limits, which the cgroup and the rlimits bound.
  'sched_yield', 'sched_getaffinity', 'sched_setaffinity', 'sched_getattr', 'sched_setattr', 'sched_getparam', 'sched_setparam',
  'sched_getscheduler', 'sched_setscheduler', 'sched_get_priority_max', 'sched_get_priority_min',
  'sched_rr_get_interval', 'sched_rr_get_interval_time64', 'getpriority', 'setpriority', 'ioprio_get', 'ioprio_set',
  'getrlimit', 'ugetrlimit', 'setrlimit', 'prlimit64', 'getrusage', 'getcpu', 'getrandom', 'sysinfo', 'uname',
];

/** Allowed only by the architecture named, for its own binaries. */
const BY_ARCH: Record<Arch, readonly string[]> = {
  x64: ['arch_prctl', 'modify_ldt'],
  ia32: ['modify_ldt'],
  arm64: ['arm_fadvise64_64', 'arm_sync_file_range', 'sync_file_range2', 'breakpoint', 'cacheflush', 'set_tls'],
  arm: ['arm_fadvise64_64', 'arm_sync_file_range', 'sync_file_range2', 'breakpoint', 'cacheflush', 'set_tls'],
};

/**
 * Allowed only to a step that holds the capability, which the kernel checks as well: the filter
 * keeps the code behind these calls out of reach of a step without it, as docker does.
 */
const BY_CAPABILITY: Record<string, readonly string[]> = {
  // Mounts, namespaces, the kernel log and the other administrative calls.
  CAP_SYS_ADMIN: [
    'mount', 'umount', 'umount2', 'mount_setattr', 'move_mount', 'open_tree', 'fsopen', 'fsconfig', 'fsmount', 'fspick',
    'unshare', 'setns', 'clone', 'clone3', 'sethostname', 'setdomainname', 'quotactl', 'quotactl_fd',
    'fanotify_init', 'lookup_dcookie', 'bpf', 'perf_event_open', 'syslog',
  ],
  CAP_BPF: ['bpf'],
  CAP_PERFMON: ['perf_event_open'],
  CAP_SYSLOG: ['syslog'],
  CAP_DAC_READ_SEARCH: ['open_by_handle_at'],
  CAP_SYS_BOOT: ['reboot'],
  CAP_SYS_CHROOT: ['chroot'],
  CAP_SYS_MODULE: ['init_module', 'finit_module', 'delete_module'],
  CAP_SYS_PACCT: ['acct'],
  CAP_SYS_PTRACE: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd', 'process_madvise'],
  CAP_SYS_RAWIO: ['iopl', 'ioperm'],
  CAP_SYS_TIME: ['settimeofday', 'stime', 'clock_settime', 'clock_settime64'],
  CAP_SYS_TTY_CONFIG: ['vhangup'],
  CAP_SYS_NICE: ['get_mempolicy', 'set_mempolicy', 'set_mempolicy_home_node', 'mbind'],
};

/** The namespace flags of clone(2): CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. */
export const CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

const AF_VSOCK = 40;

/**
 * personality(2) values that only choose the Linux ABI: PER_LINUX, UNAME26 (old version
 * strings), PER_LINUX32 (what `setarch i686` asks for) with UNAME26, and 0xffffffff, which
 * reads the current persona. ADDR_NO_RANDOMIZE and the like stay refused.
 */
const PERSONALITIES = [0x0, 0x0008, 0x20000, 0x20008, 0xffffffff];

interface SyscallRule {
  names: string[];
  action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
  errnoRet?: number;
  args?: { index: number; value: number; valueTwo?: number; op: string }[];
}

/** Kernels before 4.8 ran seccomp before ptrace's changes to a syscall: a tracer could skip the filter. */
function ptraceIsSafe(kernel = release()): boolean {
  const [major = 0, minor = 0] = kernel.split('.').map((n) => Number.parseInt(n, 10));
  return major > 4 || (major === 4 && minor >= 8);
}

/**
 * The `linux.seccomp` object of a container with capabilities `caps`, for this machine's
 * architecture (`arch`: Node's name for it).
 */
export function seccompProfile(caps: readonly string[], arch: string = process.arch, kernel: string | null = arch === process.arch ? readKernelConfig() : null): object {
  const has = new Set(caps);
  const allowed = new Set(ALWAYS);
  for (const name of BY_ARCH[arch as Arch] ?? []) allowed.add(name);
  // As in docker: tracing the step's own processes (strace, gdb) is allowed where it cannot defeat the filter.
  if (ptraceIsSafe()) for (const name of ['ptrace', 'process_vm_readv', 'process_vm_writev']) allowed.add(name);
  for (const [cap, names] of Object.entries(BY_CAPABILITY)) if (has.has(cap)) for (const name of names) allowed.add(name);
  const rules: SyscallRule[] = [{ names: [...allowed].sort(), action: 'SCMP_ACT_ALLOW' }];
  // socket(2) for every family but vsock, whose peers are the host and its other guests.
  rules.push({ names: ['socket'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: AF_VSOCK, op: 'SCMP_CMP_NE' }] });
  for (const value of PERSONALITIES) rules.push({ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value, op: 'SCMP_CMP_EQ' }] });
  if (!has.has('CAP_SYS_ADMIN')) {
    // Threads and processes, but no new namespace: flags & CLONE_NEW_FLAGS must be 0 (value is the mask).
    // s390 passes the flags second; no other architecture we run on does.
    rules.push({ names: ['clone'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: CLONE_NEW_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }] });
    // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes glibc fall back to clone.
    rules.push({ names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS });
  }
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    architectures: seccompArchitectures(arch, kernel),
    syscalls: rules,
  };
}

/** What `docker info` lists under SecurityOptions for this policy. */
export const SECCOMP_SECURITY_OPTION = 'name=seccomp,profile=builtin';
