import { KilnError } from '../../cache/errors.js';
import { parseDigest } from '../../cache/digest.js';
import type { ImageResolver } from '../../frontend/index.js';
import type { ContainerConfig, ImageConfig } from '../../solver/graph.js';

/**
 * A resolver over made-up images: `base:1` (and any `base:*`) and those given. The frontend never
 * reads the store, so its tests need neither a store nor runc.
 */
export function fakeResolver(extra: Record<string, ContainerConfig> = {}): ImageResolver & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async resolve(ref) {
      asked.push(ref);
      const config = Object.hasOwn(extra, ref) ? extra[ref]! : ref.startsWith('base:') ? { Env: ['PATH=/usr/bin:/bin'], Cmd: ['sh'] } : undefined;
      if (!config) throw new KilnError('IMAGE_NOT_FOUND', `Image "${ref}" not found in the store`, { hint: 'Import or pull it first' });
      const image: ImageConfig = { architecture: 'amd64', os: 'linux', config, rootfs: { type: 'layers', diff_ids: [] }, history: [] };
      return { ref, manifest: parseDigest(`sha256:${Buffer.from(ref).toString('hex').padEnd(64, '0').slice(0, 64)}`), config: image };
    },
  };
}
