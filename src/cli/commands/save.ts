import { resolve } from 'node:path';
import { Engine } from '../../engine.js';
import { writeDockerArchive } from '../../export/docker.js';
import { writeTarFile } from '../../export/layout.js';
import { type ExportImage, prepareExport } from '../../image/convert.js';
import { getImage } from '../../image/local.js';
import { normalizeName } from '../../image/reference.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import type { Store } from '../../../cache/store.js';

const spec: CommandSpec = {
  name: 'save',
  usage: 'kiln save [OPTIONS] IMAGE...',
  description: 'Write images to an archive that both "docker load" and OCI tools read (docker 25\'s format).',
  minPositionals: 1,
  maxPositionals: Infinity,
  options: [{ name: 'output', short: 'o', type: 'string', placeholder: 'FILE', description: 'Write to FILE instead of standard output' }],
};

export const saveCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const dest = (options.output as string | undefined) ?? '-';
    if (dest === '-' && process.stdout.isTTY) throw usageError('Refusing to write an archive to a terminal: give -o FILE or redirect standard output', spec);
    if (io.host) {
      const { KilnClient, receiveFile } = await import('../../daemon/client.js');
      const res = await new KilnClient(io.host).request('POST', '/save', { json: { images: positionals }, signal: io.signal });
      await receiveFile(res, dest === '-' ? '-' : resolve(dest), io.signal);
      return 0;
    }
    const engine = await Engine.open();
    const prepared = await prepareSave(engine.store, positionals, io.signal).catch((err: unknown) => {
      engine.close();
      throw err;
    });
    try {
      await writeTarFile(dest === '-' ? '-' : resolve(dest), (pack) => writeDockerArchive(pack, prepared, io.signal), io.signal);
      return 0;
    } finally {
      for (const p of prepared) await p.image.dispose();
      engine.close();
    }
  },
};

/** The images to save, each once with the names it was asked by, in the form the archive holds. */
export async function prepareSave(store: Store, refs: readonly string[], signal?: AbortSignal): Promise<{ image: ExportImage; names: string[] }[]> {
  const prepared: { image: ExportImage; names: string[] }[] = [];
  try {
    const byManifest = new Map<string, { image: Awaited<ReturnType<typeof getImage>>; names: string[] }>();
    for (const ref of refs) {
      const image = await getImage(store, ref);
      const entry = byManifest.get(image.manifestDigest) ?? { image, names: [] };
      // An image named by ID is saved without a name, as docker does.
      if (!/^(sha256:)?[a-f0-9]{12,64}$/.test(ref)) entry.names.push(normalizeName(ref));
      byManifest.set(image.manifestDigest, entry);
    }
    for (const { image, names } of byManifest.values()) {
      prepared.push({ image: await prepareExport(store, image, { compression: 'uncompressed', ociMediaTypes: false, signal }), names });
    }
    return prepared;
  } catch (err) {
    for (const p of prepared) await p.image.dispose();
    throw err;
  }
}
