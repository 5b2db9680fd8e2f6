import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { run } from '../../cache/exec.js';
import { isErrno, randomId } from '../../cache/fsutil.js';
import { mountTmpfs, unmount } from '../../cache/overlay.js';
import { crashPoint, traced } from '../../cache/trace.js';
import type { Store } from '../../cache/store.js';
import type { Executor, ProcessSpec, ResourceLimits, RunOptions } from './executor.js';
import { binarySize, killedForMemory, removeStepCgroup, stepCgroupPath } from './cgroup.js';
import { BridgeNetwork, stepResolvConf, type NetworkLease } from './network.js';
import { hostsFile, runtimeSpec } from './spec.js';

export const CONTAINER_LEASE = 'container';

/** Removes a container whatever its state (`delete --force` kills it first), and its cgroup. */
export async function deleteContainer(runtime: string, id: string): Promise<void> {
  await run(runtime, ['delete', '--force', id], { allowFail: true });
  await removeStepCgroup(id);
}

export interface RuncExecutorOptions {
  /** cgroup limits of every container (`kiln serve --step-*`, `kiln build --memory`…); not a client's to change. */
  limits?: ResourceLimits;
  /** Where `default` network steps get their namespaces. */
  network?: BridgeNetwork;
}

/** Runs processes with an OCI runtime binary (runc by default, crun on request). */
export class RuncExecutor implements Executor {
  constructor(
    private readonly store: Store,
    /** The runtime binary's name or path. */
    readonly runtime = 'runc',
    private readonly options: RuncExecutorOptions = {},
  ) {
    this.network = options.network ?? new BridgeNetwork();
  }

  readonly network: BridgeNetwork;

  /** The limits every container of this executor runs under. */
  get limits(): ResourceLimits | undefined {
    return this.options.limits;
  }

  async run(spec: ProcessSpec, options: RunOptions): Promise<number> {
    const id = `kiln-${randomId(6)}`;
    const bundle = join(this.store.root, 'run', id);
    const bundleLease = this.store.lease('dir', bundle);
    const containerLease = this.store.lease(CONTAINER_LEASE, id);
    let exited = false;
    let lease: NetworkLease | undefined;
    let cgroupsPath: string | undefined;
    try {
      mkdirSync(bundle, { recursive: true, mode: 0o700 });
      if (options.sensitive) await mountTmpfs(bundle, 'mode=700,size=1m');
      if (spec.network === 'default') lease = await traced('network', () => this.network.acquire());
      const files = { hosts: join(bundle, 'hosts'), resolvConf: join(bundle, 'resolv.conf'), netns: lease?.nsPath };
      const hostname = spec.hostname ?? 'kiln';
      const resources = this.options.limits;
      writeFileSync(files.hosts, hostsFile({ ...spec, hostname }));
      writeFileSync(files.resolvConf, spec.network === 'default' ? stepResolvConf(hostResolvConf()) : hostResolvConf());
      cgroupsPath = resources === undefined ? undefined : stepCgroupPath(id);
      writeFileSync(join(bundle, 'config.json'), JSON.stringify(runtimeSpec({ ...spec, hostname, resources }, options.rootfs, { ...files, cgroupsPath })));
      const code = await this.runBundle(id, bundle, options);
      exited = true;
      if (code !== 0 && resources?.memory !== undefined && killedForMemory(id, resources.memory, code)) {
        throw new KilnError('MEMORY_LIMIT', `Process "${spec.args.join(' ')}" exceeded the memory limit of ${binarySize(resources.memory)} and was killed (exit code ${code})`, {
          hint: 'The limit is the build service\'s ("kiln serve --step-memory") or, for a local build, "--memory"',
          exitCode: code,
        });
      }
      return code;
    } finally {
      // `runc run` deletes the container when its process exits; anything else may leave it.
      if (!exited) await deleteContainer(this.runtime, id);
      else if (cgroupsPath !== undefined) await removeStepCgroup(id);
      // A sandboxed step holds no CAP_NET_ADMIN: its namespace is as it was made, and its processes died with it.
      lease?.release(exited && spec.security !== 'insecure');
      this.store.release(containerLease);
      if (options.sensitive) await unmount(bundle);
      rmSync(bundle, { recursive: true, force: true });
      this.store.release(bundleLease);
    }
  }

  private runBundle(id: string, bundle: string, options: RunOptions): Promise<number> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.runtime, ['run', '--bundle', bundle, id], {
        stdio: [options.stdin === true ? 'inherit' : options.stdin ? 'pipe' : 'ignore', options.onStdout ? 'pipe' : 'inherit', options.onStderr ? 'pipe' : 'inherit'],
      });
      if (options.stdin && options.stdin !== true) {
        // A container that exits without reading all of its input closes the pipe: not an error of ours.
        child.stdin!.on('error', () => {});
        options.stdin.pipe(child.stdin!);
      }
      if (options.onStdout) {
        child.stdout!.once('data', () => crashPoint('run'));
        child.stdout!.on('data', options.onStdout);
      }
      if (options.onStderr) child.stderr!.on('data', options.onStderr);
      const onAbort = () => {
        void run(this.runtime, ['kill', id, 'KILL'], { allowFail: true });
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.signal?.aborted) onAbort();
      child.on('error', (err) => {
        options.signal?.removeEventListener('abort', onAbort);
        reject(new KilnError('RUNTIME_MISSING', `Cannot start the container runtime "${this.runtime}": ${err.message}`, { hint: 'Install it with "apt-get install runc"' }));
      });
      child.on('close', (code, signal) => {
        options.signal?.removeEventListener('abort', onAbort);
        if (options.signal?.aborted) {
          reject(options.signal.reason instanceof KilnError ? options.signal.reason : new KilnError('CANCELLED', 'The build was cancelled', { exitCode: 130 }));
          return;
        }
        resolve(code ?? 128 + (signal ? signalNumber(signal) : 0));
      });
    });
  }
}

let resolvConf: string | undefined;

function hostResolvConf(): string {
  if (resolvConf !== undefined) return resolvConf;
  try {
    resolvConf = readFileSync('/etc/resolv.conf', 'utf8');
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
    resolvConf = '';
  }
  return resolvConf;
}

function signalNumber(name: NodeJS.Signals): number {
  const table: Partial<Record<NodeJS.Signals, number>> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGQUIT: 3, SIGSEGV: 11, SIGABRT: 6, SIGPIPE: 13 };
  return table[name] ?? 0;
}
