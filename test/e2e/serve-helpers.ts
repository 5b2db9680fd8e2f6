import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { KILN } from '../helpers/kiln.js';

export interface Served {
  socket: string;
  log: () => string;
  stop(): Promise<number | null>;
  /** Kills the server without warning, as a crash would, and waits for it to be gone. */
  crash(): Promise<void>;
  /** Waits for the server to end by itself: its exit code, or the signal that ended it. */
  exit(): Promise<number | NodeJS.Signals | null>;
}

/** Starts `kiln serve` on a unix socket in `dir` over the store at `root`; stop() sends SIGTERM. */
export async function startServe(root: string, socket: string, args: string[] = [], options: { env?: Record<string, string> } = {}): Promise<Served> {
  const child: ChildProcess = spawn(KILN, ['serve', '--addr', `unix://${socket}`, ...args], { env: { ...process.env, KILN_ROOT: root, ...options.env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  // Listeners start one after the other: wait until every address is listening.
  const addresses = 1 + args.filter((a) => a === '--addr' || a.startsWith('--addr=')).length;
  const listening = () => existsSync(socket) && (log.match(/^Listening on /gm) ?? []).length >= addresses;
  for (let i = 0; i < 100 && !listening(); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!listening()) {
    child.kill('SIGKILL');
    throw new Error(`kiln serve did not start: ${log}`);
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ended = new Promise<number | NodeJS.Signals | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  return {
    socket,
    log: () => log,
    exit: () => ended,
    async crash() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
