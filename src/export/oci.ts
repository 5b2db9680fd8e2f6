import { mkdir } from 'node:fs/promises';
import type { Store } from '../../cache/store.js';
import { type ConvertOptions, prepareExport } from '../image/convert.js';
import type { LocalImage } from '../image/local.js';
import type { ExportOptions, Exporter } from './exporter.js';
import { DirSink, TarSink, writeLayout, writeTarFile } from './layout.js';

/** Writes an OCI image layout (`-o type=oci,dest=FILE`): a tar file, or a directory with `tar=false`. */
export class OciExporter implements Exporter {
  constructor(
    private readonly dest: string,
    private readonly options: { names?: readonly string[]; tar?: boolean; convert?: ConvertOptions } = {},
  ) {}

  async export(store: Store, image: LocalImage, options: ExportOptions = {}): Promise<void> {
    const names = this.options.names?.length ? this.options.names : (options.tags ?? []);
    const prepared = await prepareExport(store, image, { ...this.options.convert, signal: options.signal });
    try {
      const images = [{ image: prepared, names }];
      if (this.options.tar === false) {
        await mkdir(this.dest, { recursive: true });
        await writeLayout(new DirSink(this.dest, { onTransfer: options.onTransfer }), images, options.signal);
      } else {
        await writeTarFile(this.dest, (pack) => writeLayout(new TarSink(pack, { onTransfer: options.onTransfer }), images, options.signal), options.signal);
      }
    } finally {
      await prepared.dispose();
    }
  }
}
