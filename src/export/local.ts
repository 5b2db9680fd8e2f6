import { mkdir } from 'node:fs/promises';
import { run } from '../../cache/exec.js';
import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';
import { withReadOnlyView } from '../worker/mount.js';
import type { ExportOptions, Exporter } from './exporter.js';

/** Writes the image's filesystem to a directory (`-o type=local,dest=DIR`). */
export class LocalDirExporter implements Exporter {
  constructor(private readonly dest: string) {}

  async export(store: Store, image: LocalImage, options: ExportOptions = {}): Promise<void> {
    const signal = options.signal;
    await mkdir(this.dest, { recursive: true });
    if (image.layers.length === 0) return;
    await withReadOnlyView(store, image.layers, async (root) => {
      // GNU cp keeps owners, modes, times, hard links and special files in one pass.
      await run('cp', ['-a', `${root}/.`, `${this.dest}/`]);
    }, signal);
  }
}
