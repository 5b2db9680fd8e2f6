import type { Store } from '../../cache/store.js';
import { KilnError } from '../../cache/errors.js';
import type { ImageResolver } from '../../frontend/index.js';
import { findImage } from '../image/local.js';
import { familiarName, parseReference } from '../image/reference.js';
import type { ProgressNumbers, ProgressSink } from '../../solver/progress.js';
import type { PullEvent } from '../registry/pull.js';

export interface ResolverOptions {
  /** Registries named with --insecure-registry. */
  insecureRegistries?: readonly string[];
  /** Told about each image pulled, for progress. */
  onPull?: (ref: string, event: PullEvent) => void;
  /** Pull every registry reference even when the store has it (`kiln build --pull`). */
  alwaysPull?: boolean;
  /** The build's progress: each pull is a step of its own whose layers' bytes show as `kiln pull` shows them. */
  progress?: ProgressSink;
  numbers?: ProgressNumbers;
}

/**
 * Resolves base images: from the local store when it has the reference (by name or ID), else by
 * pulling it from its registry. Concurrent requests for one reference share one pull.
 */
export function storeResolver(store: Store, options: ResolverOptions = {}): ImageResolver {
  const pulls = new Map<string, ReturnType<typeof pull>>();
  const pull = async (ref: string, platform: Parameters<ImageResolver['resolve']>[1]['platform'], signal?: AbortSignal) => {
    // The registry client loads only when a build needs an image the store lacks.
    const { pullImage } = await import('../registry/pull.js');
    const { progress, numbers } = options;
    const id = numbers?.id(`internal:pull:${ref}`) ?? 0;
    const start = Date.now();
    progress?.({ type: 'vertex.start', id, name: `pulling ${ref}`, time: start });
    try {
      const pulled = await pullImage(store, ref, {
        platform,
        signal,
        insecureRegistries: options.insecureRegistries,
        onEvent: (e) => options.onPull?.(ref, e),
        onTransfer: progress && ((t) => progress({ type: 'transfer', id, ...t, time: Date.now() })),
      });
      progress?.({ type: 'vertex.done', id, time: Date.now(), duration: Date.now() - start });
      return pulled;
    } catch (err) {
      progress?.({ type: 'vertex.error', id, time: Date.now(), duration: Date.now() - start, message: err instanceof Error ? err.message : String(err) });
      throw err;
    }
  };
  return {
    async resolve(ref, { platform, signal }) {
      let img = options.alwaysPull && isRegistryReference(ref) ? undefined : await findImage(store, ref);
      if (!img) {
        if (!isRegistryReference(ref)) {
          throw new KilnError('IMAGE_UNKNOWN', `No such image "${ref}" in the store`, { hint: 'List images with "kiln images"' });
        }
        let pending = pulls.get(ref);
        if (!pending) {
          pending = pull(ref, platform, signal);
          pulls.set(ref, pending);
        }
        try {
          img = (await pending).image;
        } catch (err) {
          // The reference may be a local name that was never there: say so first, and why pulling did not help.
          if (!(err instanceof KilnError) || err.code === 'CANCELLED' || signal?.aborted || options.alwaysPull) throw err;
          throw new KilnError(err.code, `No such image "${ref}" in the store`, { hint: `Pulling it failed: ${err.message}`, cause: err });
        }
      }
      let display = ref;
      try {
        display = familiarName(ref);
      } catch (err) {
        // An image ID is shown as given.
        if (!(err instanceof KilnError)) throw err;
      }
      return { ref: display, manifest: img.manifestDigest, config: img.config };
    },
  };
}

/** A name a registry could serve, rather than an image ID or an ID prefix. */
function isRegistryReference(ref: string): boolean {
  if (/^(sha256:)?[a-f0-9]{12,64}$/.test(ref)) return false;
  try {
    parseReference(ref);
    return true;
  } catch (err) {
    if (err instanceof KilnError) return false;
    throw err;
  }
}
