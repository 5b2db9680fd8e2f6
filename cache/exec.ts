import { spawn } from 'node:child_process';
import { KilnError } from './errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a helper program (mount, umount, mknod…) to completion, collecting its output. */
export function run(cmd: string, args: string[], options: { cwd?: string; input?: string | Uint8Array; allowFail?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => reject(new KilnError('EXEC_FAILED', `Cannot run "${cmd}": ${e.message}`, { cause: e })));
    child.on('close', (code, signal) => {
      const result = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code: code ?? (signal ? 128 : 1) };
      if (result.code !== 0 && !options.allowFail) {
        reject(new KilnError('EXEC_FAILED', `"${cmd} ${args.join(' ')}" failed: ${result.stderr.trim() || `exit code ${result.code}`}`));
      } else {
        resolve(result);
      }
    });
    if (options.input !== undefined) child.stdin!.end(options.input);
  });
}
