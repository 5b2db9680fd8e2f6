/** The executor contract: run one process in one root filesystem. */
export interface ProcessUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

/** An extra mount in the container, in OCI runtime spec terms. */
export interface SpecMount {
  destination: string;
  type: 'bind' | 'tmpfs';
  source: string;
  options: string[];
}

export interface ProcessSpec {
  args: string[];
  env: string[];
  cwd: string;
  user: ProcessUser;
  hostname?: string;
  network: 'default' | 'none' | 'host';
  /** Mounts over the root filesystem (RUN --mount), after the standard ones. */
  mounts?: SpecMount[];
  /** `insecure` runs with every capability and without masked paths (`--security=insecure`). */
  security?: 'sandbox' | 'insecure';
  /** Lines added to /etc/hosts after the standard ones. */
  extraHosts?: { host: string; ip: string }[];
  /** Resource limits by ulimit's names (`nofile`, `nproc`, …). */
  ulimits?: { name: string; soft: number; hard: number }[];
  /** Size of /dev/shm in bytes; 64 MiB when absent, as docker gives. */
  shmSize?: number;
  /** cgroup limits of the container: the executor sets its own here. */
  resources?: ResourceLimits;
}

/** cgroup limits of one container, in docker's terms; an absent field is not limited. */
export interface ResourceLimits {
  /** Bytes of memory (`--memory`). */
  memory?: number;
  /** Bytes of memory and swap together (`--memory-swap`), -1 for unlimited swap; the memory limit (no swap) when absent. */
  memorySwap?: number;
  /** Processes and threads at once. */
  pids?: number;
  /** Relative CPU weight (`--cpu-shares`, 1024 by default in the kernel). */
  cpuShares?: number;
  /** CPUs' worth of time (`--cpus`, as a CFS quota over a 100 ms period). */
  cpus?: number;
  /** CPUs the processes may run on (`--cpuset-cpus`, e.g. `0-1`). */
  cpusetCpus?: string;
}

export interface RunOptions {
  /** The mounted root filesystem. */
  rootfs: string;
  signal?: AbortSignal;
  /** Called with output chunks; absent streams are inherited from this process. */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Inherit this process's stdin (kiln run), or feed it from a stream (kiln run through a build service). */
  stdin?: boolean | NodeJS.ReadableStream;
  /** Keep the bundle (whose config holds the environment) in memory: it carries a secret. */
  sensitive?: boolean;
}

export interface Executor {
  /** Runs the process to its end and returns its exit code. */
  run(spec: ProcessSpec, options: RunOptions): Promise<number>;
}
