import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';
import type { TransferSink } from '../../solver/progress.js';

export interface ExportOptions {
  signal?: AbortSignal;
  /** The build's `-t` names, for outputs given no `name=` of their own. */
  tags?: readonly string[];
  /** Told the bytes of each blob written or pushed, for progress. */
  onTransfer?: TransferSink;
}

/** An exporter takes a build result somewhere: the store, a file, a directory, a registry. */
export interface Exporter {
  export(store: Store, image: LocalImage, options?: ExportOptions): Promise<void>;
}
