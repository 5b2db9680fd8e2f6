import { readFile } from 'node:fs/promises';
import { run } from './exec.js';
import { KilnError } from './errors.js';

export interface OverlayOptions {
  /** Lower directories, top first, as paths relative to `cwd`. */
  lower: string[];
  upper?: string;
  work?: string;
  /** Paths in the options are relative to this directory, which keeps the option string short. */
  cwd: string;
}

// The kernel takes at most one page of mount options; relative paths from the layers folder keep
// each lowerdir at ~70 bytes, so about 55 layers fit. Deeper chains need flattening (not yet done).
const MAX_OPTIONS = 4000;

export async function mountOverlay(target: string, o: OverlayOptions): Promise<void> {
  const parts = [`lowerdir=${o.lower.join(':')}`];
  if (o.upper !== undefined) parts.push(`upperdir=${o.upper}`, `workdir=${o.work}`);
  const options = parts.join(',');
  if (options.length > MAX_OPTIONS) {
    throw new KilnError('TOO_MANY_LAYERS', `Cannot mount a chain of ${o.lower.length} layers: the overlay options exceed one page`);
  }
  await run('mount', ['-t', 'overlay', 'overlay', '-o', options, target], { cwd: o.cwd });
}

export async function unmount(target: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const r = await run('umount', [target], { allowFail: true });
    if (r.code === 0) return;
    if (!(await isMountPoint(target))) return;
    if (attempt >= 20) {
      throw new KilnError('UNMOUNT_FAILED', `Cannot unmount "${target}": ${r.stderr.trim()}`);
    }
    // A process that just exited may still hold the mount for a moment.
    await new Promise((res) => setTimeout(res, 25 * (attempt + 1)));
  }
}

export async function isMountPoint(path: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of mounts.split('\n')) {
    const field = line.split(' ')[4];
    if (field !== undefined && unescapeMountPath(field) === path) return true;
  }
  return false;
}

/** Mount points under `prefix`, deepest first. */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  const found: string[] = [];
  for (const line of mounts.split('\n')) {
    const field = line.split(' ')[4];
    if (field === undefined) continue;
    const p = unescapeMountPath(field);
    if (p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`)) found.push(p);
  }
  return found.sort((a, b) => b.length - a.length);
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
