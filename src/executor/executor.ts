/** The executor contract: run one process in one root filesystem. */
export interface ProcessUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

export interface ProcessSpec {
  args: string[];
  env: string[];
  cwd: string;
  user: ProcessUser;
  hostname?: string;
  network: 'default' | 'none' | 'host';
}

export interface RunOptions {
  /** The mounted root filesystem. */
  rootfs: string;
  signal?: AbortSignal;
  /** Called with output chunks; absent streams are inherited from this process. */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Inherit this process's stdin (kiln run). */
  stdin?: boolean;
}

export interface Executor {
  /** Runs the process to its end and returns its exit code. */
  run(spec: ProcessSpec, options: RunOptions): Promise<number>;
}
