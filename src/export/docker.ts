import type tar from 'tar-stream';
import { digestHex } from '../../cache/digest.js';
import type { Store } from '../../cache/store.js';
import { type ConvertOptions, type ExportImage, prepareExport } from '../image/convert.js';
import type { LocalImage } from '../image/local.js';
import type { TransferSink } from '../../solver/progress.js';
import { familiarName, parseReference } from '../image/reference.js';
import type { ExportOptions, Exporter } from './exporter.js';
import { TarSink, writeLayout, writeTarFile } from './layout.js';

/**
 * Writes a `docker load` archive the way docker 25 saves one: an OCI layout whose blobs also
 * serve `manifest.json` (config and layer paths, RepoTags) and the legacy `repositories` file,
 * so docker, skopeo's docker-archive and OCI tools all read it. Layers are uncompressed unless a
 * compression is asked for, as `docker save` writes them.
 */
export async function writeDockerArchive(pack: tar.Pack, images: readonly { image: ExportImage; names: readonly string[] }[], signal?: AbortSignal, options: { onTransfer?: TransferSink } = {}): Promise<void> {
  const sink = new TarSink(pack, options);
  await writeLayout(sink, images, signal);
  const blobPath = (d: string) => `blobs/sha256/${digestHex(d as never)}`;
  const manifest = images.map(({ image, names }) => ({
    Config: blobPath(image.configDigest),
    RepoTags: repoTags(names),
    Layers: image.manifest.layers.map((l) => blobPath(l.digest)),
  }));
  const repositories: Record<string, Record<string, string>> = {};
  for (const { image, names } of images) {
    const top = image.manifest.layers.at(-1);
    if (!top) continue;
    for (const t of repoTags(names)) {
      const colon = t.lastIndexOf(':');
      (repositories[t.slice(0, colon)] ??= {})[t.slice(colon + 1)] = digestHex(top.digest);
    }
  }
  await sink.file('manifest.json', Buffer.from(JSON.stringify(manifest)));
  await sink.file('repositories', Buffer.from(JSON.stringify(repositories)));
}

/** Familiar `repo:tag` names; a reference by digest alone has no place in RepoTags. */
function repoTags(names: readonly string[]): string[] {
  return names.filter((n) => parseReference(n).tag !== undefined).map((n) => familiarName(parseReference(n).digest ? n.replace(/@.*$/, '') : n));
}

/** `-o type=docker,dest=FILE`. */
export class DockerExporter implements Exporter {
  constructor(
    private readonly dest: string,
    private readonly options: { names?: readonly string[]; convert?: ConvertOptions } = {},
  ) {}

  async export(store: Store, image: LocalImage, options: ExportOptions = {}): Promise<void> {
    const names = this.options.names?.length ? this.options.names : (options.tags ?? []);
    const convert: ConvertOptions = { ociMediaTypes: false, compression: 'uncompressed', ...this.options.convert };
    const prepared = await prepareExport(store, image, { ...convert, signal: options.signal });
    try {
      await writeTarFile(this.dest, (pack) => writeDockerArchive(pack, [{ image: prepared, names }], options.signal, { onTransfer: options.onTransfer }), options.signal);
    } finally {
      await prepared.dispose();
    }
  }
}
