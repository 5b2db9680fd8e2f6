import { Readable } from 'node:stream';
import type { LayerRow } from '../../cache/db.js';
import { KilnError } from '../../cache/errors.js';
import { decompressed, storeLayerTar } from '../../cache/layers.js';
import type { Store } from '../../cache/store.js';
import { encodeTarHeader, endOfArchive, paddingFor } from '../../cache/tarheader.js';
import { readTar } from '../../cache/tarreader.js';
import type { ImageConfig } from '../../solver/graph.js';

/** `SOURCE_DATE_EPOCH` from the build args, else the environment; seconds since the epoch. */
export function sourceDateEpoch(buildArgs: Readonly<Record<string, string>>, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const value = buildArgs.SOURCE_DATE_EPOCH ?? env.SOURCE_DATE_EPOCH;
  if (value === undefined || value === '') return undefined;
  if (!/^\d+$/.test(value)) throw new KilnError('INVALID_SOURCE_DATE_EPOCH', `Invalid SOURCE_DATE_EPOCH "${value}": expected whole seconds since 1970`, { exitCode: 2 });
  return Number(value);
}

function clampTime(iso: string | undefined, epoch: number): string {
  const limit = new Date(epoch * 1000).toISOString();
  if (iso === undefined) return limit;
  const t = Date.parse(iso);
  return Number.isNaN(t) || t > epoch * 1000 ? limit : iso;
}

async function* clampedTar(source: Readable, epoch: number): AsyncGenerator<Buffer> {
  for await (const entry of readTar(source)) {
    const mtime = Math.floor(entry.header.mtime);
    yield encodeTarHeader({ ...entry.header, mtime: mtime > epoch ? epoch : mtime });
    for await (const chunk of entry.body) yield chunk;
    const pad = paddingFor(entry.header.size);
    if (pad > 0) yield Buffer.alloc(pad);
  }
  yield endOfArchive();
}

/**
 * Makes a build's image reproducible as BuildKit does with SOURCE_DATE_EPOCH and
 * rewrite-timestamp: times in the config and history no later than the epoch, and the
 * modification times in the layers this build made (`from` onwards; base layers stay as
 * pulled) clamped to it. Rewritten layers are new layers, stored and recorded like any other.
 */
export async function clampImage(store: Store, config: ImageConfig, layers: readonly LayerRow[], options: { epoch: number; from: number; signal?: AbortSignal }): Promise<{ config: ImageConfig; layers: LayerRow[] }> {
  const out: LayerRow[] = [];
  for (const [i, l] of layers.entries()) {
    if (i < options.from) {
      out.push(l);
      continue;
    }
    options.signal?.throwIfAborted();
    const tar = Readable.from(clampedTar(decompressed(store.blobs.open(l.blob), l.mediaType), options.epoch));
    out.push(await storeLayerTar(store, tar, options.signal));
  }
  return {
    config: {
      ...config,
      created: clampTime(config.created, options.epoch),
      history: config.history?.map((h) => ({ ...h, created: clampTime(h.created, options.epoch) })),
      rootfs: { type: 'layers', diff_ids: out.map((l) => l.diffId) },
    },
    layers: out,
  };
}
