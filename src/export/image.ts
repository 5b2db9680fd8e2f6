import type { Store } from '../../cache/store.js';
import { KilnError } from '../../cache/errors.js';
import type { ConvertOptions } from '../image/convert.js';
import { type LocalImage, tagImage } from '../image/local.js';
import type { ExportOptions, Exporter } from './exporter.js';

/**
 * `-o type=image[,name=R][,push=true]` names the image in the store and, with push, pushes it;
 * `type=registry` is the same with push and without touching the store's names.
 */
export class ImageExporter implements Exporter {
  constructor(
    private readonly options: { names?: readonly string[]; push: boolean; tag: boolean; convert?: ConvertOptions; insecureRegistries?: readonly string[] },
  ) {}

  async export(store: Store, image: LocalImage, options: ExportOptions = {}): Promise<void> {
    const names = this.options.names?.length ? this.options.names : (options.tags ?? []);
    if (this.options.push) {
      if (names.length === 0) throw new KilnError('PUSH_NO_NAME', 'Cannot push an image without a name', { hint: 'Give one with -t REF or name=REF', exitCode: 2 });
      // The converter and the registry client load only for a push: naming an image needs neither.
      const { prepareExport } = await import('../image/convert.js');
      const prepared = await prepareExport(store, image, { ...this.options.convert, persist: true, signal: options.signal });
      const { pushImage } = await import('../registry/push.js');
      await pushImage(store, prepared.manifestDigest, names, { signal: options.signal, insecureRegistries: this.options.insecureRegistries, onTransfer: options.onTransfer });
    }
    if (this.options.tag && names.length > 0) tagImage(store, image, names);
  }
}
