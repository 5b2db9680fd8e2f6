import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { KilnError } from '../../cache/errors.js';
import { fsyncDir, randomId } from '../../cache/fsutil.js';
import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';
import { withReadOnlyView } from '../worker/mount.js';
import type { ExportOptions, Exporter } from './exporter.js';

/** Writes the image's filesystem as one tar (`-o type=tar,dest=FILE`, `-` for standard output). */
export class TarExporter implements Exporter {
  constructor(private readonly dest: string) {}

  async export(store: Store, image: LocalImage, options: ExportOptions = {}): Promise<void> {
    const toStdout = this.dest === '-';
    const tmp = toStdout ? '-' : join(dirname(this.dest), `.${basename(this.dest)}.${randomId(4)}.tmp`);
    try {
      await withReadOnlyView(store, image.layers, (root) => gnuTar(root, tmp, options.signal), options.signal);
      if (!toStdout) {
        await rename(tmp, this.dest);
        await fsyncDir(dirname(this.dest));
      }
    } catch (err) {
      if (!toStdout) await rm(tmp, { force: true });
      throw err;
    }
  }
}

/**
 * GNU tar keeps owners (numerically), modes, times, hard links, special files and extended
 * attributes in one pass over the merged read-only view, in name order.
 */
function gnuTar(root: string, out: string, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['--numeric-owner', '--sort=name', '--xattrs', '-C', root, '-cf', out, '.'], { stdio: ['ignore', out === '-' ? 'inherit' : 'ignore', 'pipe'], signal });
    const errs: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => errs.push(c));
    child.on('error', (e) => reject(signal?.aborted ? signal.reason : new KilnError('EXEC_FAILED', `Cannot run "tar": ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new KilnError('EXPORT_FAILED', `Writing the filesystem tar failed: ${Buffer.concat(errs).toString().trim() || `exit code ${code}`}`));
    });
  });
}
