import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { type Digest, digestHex } from '../../cache/digest.js';
import { fsyncDir, randomId } from '../../cache/fsutil.js';
import type { Store } from '../../cache/store.js';
import type { LocalImage } from '../image/local.js';
import { MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST, type Index } from '../image/oci.js';
import { familiarName } from '../image/reference.js';
import type { Exporter } from './exporter.js';

/** Writes an OCI image layout as a tar file (`-o type=oci,dest=FILE`). */
export class OciArchiveExporter implements Exporter {
  constructor(
    private readonly dest: string,
    private readonly names: readonly string[] = [],
  ) {}

  async export(store: Store, image: LocalImage, signal?: AbortSignal): Promise<void> {
    const pack = tar.pack();
    const tmp = join(dirname(this.dest), `.${basename(this.dest)}.${randomId(4)}.tmp`);
    const writing = pipeline(pack, createWriteStream(tmp), { signal });
    try {
      await writeLayout(pack, store, image, this.names, signal);
      pack.finalize();
      await writing;
      await rename(tmp, this.dest);
      await fsyncDir(dirname(this.dest));
    } catch (err) {
      pack.destroy();
      await writing.catch(() => {
        // The write failed with the same cause, or was destroyed because of it.
      });
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

const MTIME = new Date(0);

async function writeLayout(pack: tar.Pack, store: Store, image: LocalImage, names: readonly string[], signal?: AbortSignal): Promise<void> {
  const manifestBytes = await store.blobs.read(image.manifestDigest);
  const index: Index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_INDEX,
    manifests: (names.length > 0 ? names : [undefined]).map((name) => ({
      mediaType: MEDIA_TYPE_MANIFEST,
      digest: image.manifestDigest,
      size: manifestBytes.byteLength,
      ...(name ? { annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': refName(name) } } : {}),
    })),
  };
  await addBuffer(pack, 'oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await addBuffer(pack, 'index.json', Buffer.from(JSON.stringify(index)));
  pack.entry({ name: 'blobs/', type: 'directory', mode: 0o755, mtime: MTIME });
  pack.entry({ name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime: MTIME });
  const blobs: Digest[] = [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.blob)];
  const seen = new Set<Digest>();
  for (const d of blobs) {
    if (seen.has(d)) continue;
    seen.add(d);
    signal?.throwIfAborted();
    await addBlob(pack, store, d);
  }
}

/** The tag part of a name, as OCI layouts annotate it (`1` for `acc/app:1`). */
function refName(name: string): string {
  const familiar = familiarName(name);
  const colon = familiar.lastIndexOf(':');
  return colon > familiar.lastIndexOf('/') ? familiar.slice(colon + 1) : 'latest';
}

function addBuffer(pack: tar.Pack, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, mode: 0o644, mtime: MTIME }, data, (err) => (err ? reject(err) : resolve()));
  });
}

async function addBlob(pack: tar.Pack, store: Store, d: Digest): Promise<void> {
  const size = await store.blobs.size(d);
  await new Promise<void>((resolve, reject) => {
    const entry = pack.entry({ name: `blobs/sha256/${digestHex(d)}`, size, mode: 0o444, mtime: MTIME }, (err) => (err ? reject(err) : resolve()));
    pipeline(store.blobs.open(d), entry).catch(reject);
  });
}
