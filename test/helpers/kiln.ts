import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '../..');
export const KILN = join(REPO, 'bin/kiln');

export interface KilnResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/kiln against a store, collecting its output. */
export function kiln(root: string, args: readonly string[], options: { input?: string | Buffer; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<KilnResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(KILN, args, {
      env: { ...process.env, KILN_ROOT: root, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.end(options.input ?? '');
  });
}

export interface TempDir {
  path: string;
  cleanup: () => Promise<void>;
}

/** A fresh temporary directory; `cleanup` unmounts anything left below it and removes it. */
export function tempDir(prefix = 'kiln-test-'): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    cleanup: async () => {
      for (const m of mountsUnder(path)) execFileSync('umount', ['-l', m]);
      await rm(path, { recursive: true, force: true });
    },
  };
}

export function mountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === prefix || p.startsWith(`${prefix}/`)))
    .sort((a, b) => b.length - a.length);
}

/**
 * Containers of ours that runc still knows about; with `root`, only those whose bundle lives in
 * that store (other test files may run containers at the same time).
 */
export function kilnContainers(root?: string): string[] {
  const list = (JSON.parse(execFileSync('runc', ['list', '--format', 'json'], { encoding: 'utf8' }) || '[]') ?? []) as { id: string; bundle: string }[];
  return list.filter((c) => c.id.startsWith('kiln-') && (root === undefined || c.bundle.startsWith(`${root}/`))).map((c) => c.id);
}

/** The rootfs tarball from Debian's busybox-static that test/global-setup.ts makes for the run. */
export function baseTar(): string {
  const tar = process.env.KILN_TEST_BASE_TAR;
  if (!tar || !existsSync(tar)) throw new Error('KILN_TEST_BASE_TAR is not set: run the tests through vitest (test/global-setup.ts makes it)');
  return tar;
}

/** A store with the busybox base imported as `test/base:1`. */
export async function storeWithBase(): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const t = tempDir('kiln-store-');
  const r = await kiln(t.path, ['import', '--change', 'CMD ["sh"]', baseTar(), 'test/base:1']);
  if (r.code !== 0) throw new Error(`import failed: ${r.stderr}`);
  return { root: t.path, cleanup: t.cleanup };
}

/**
 * How most end-to-end files start: a store with the base image, and a work directory (named with
 * `prefix`) holding an empty `ctx/`. `cleanup` removes both.
 */
export async function storeAndContext(prefix: string): Promise<{ root: string; work: TempDir; ctx: string; cleanup: () => Promise<void> }> {
  const store = await storeWithBase();
  const work = tempDir(prefix);
  const ctx = join(work.path, 'ctx');
  mkdirSync(ctx);
  return {
    root: store.root,
    work,
    ctx,
    cleanup: async () => {
      await work.cleanup();
      await store.cleanup();
    },
  };
}

/** The `#N` of the first plain-progress step line matching `pattern`. */
export function stepNumber(log: string, pattern: string): number | undefined {
  for (const line of log.split('\n')) {
    const m = /^#(\d+) \[[^\]]*\] (.*)$/.exec(line);
    if (m && m[2]!.includes(pattern)) return Number(m[1]);
  }
  return undefined;
}

export function stepCached(log: string, pattern: string): boolean {
  const n = stepNumber(log, pattern);
  return n !== undefined && new RegExp(`^#${n} CACHED$`, 'm').test(log);
}

export function stepRan(log: string, pattern: string): boolean {
  const n = stepNumber(log, pattern);
  return n !== undefined && !new RegExp(`^#${n} CACHED$`, 'm').test(log) && new RegExp(`^#${n} DONE`, 'm').test(log);
}
