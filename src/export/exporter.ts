import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';

/** An exporter takes a build result somewhere: the store, a file, a directory. */
export interface Exporter {
  export(store: Store, image: LocalImage, signal?: AbortSignal): Promise<void>;
}
