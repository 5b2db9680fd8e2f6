import type { Store } from '../../cache/store.js';
import type { ImageResolver } from '../../frontend/index.js';
import { getImage } from '../image/local.js';
import { familiarName } from '../image/reference.js';

/** Resolves base images from the local store (registries come with their own issue). */
export function storeResolver(store: Store): ImageResolver {
  return {
    async resolve(ref) {
      const img = await getImage(store, ref);
      let display = ref;
      try {
        display = familiarName(ref);
      } catch {
        // An image ID is shown as given.
      }
      return { ref: display, manifest: img.manifestDigest, config: img.config };
    },
  };
}
