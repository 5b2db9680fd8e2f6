import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { type Digest, digestHex } from '../../cache/digest.js';
import { fsyncDir, fsyncPath, isErrno, randomId, writeFileAtomic } from '../../cache/fsutil.js';
import { type ExportBlob, type ExportImage, openBlob } from '../image/convert.js';
import { type Index, MEDIA_TYPE_INDEX } from '../image/oci.js';
import { familiarName } from '../image/reference.js';
import { countTransfer, type TransferSink } from '../../solver/progress.js';

/** Where an archive's entries go: a tar stream or a directory. Small files last, so readers see a whole layout. */
export interface LayoutSink {
  file(name: string, data: Buffer): Promise<void>;
  blob(blob: ExportBlob): Promise<void>;
}

/** Entries in a tar have fixed times, so the same image gives the same archive. */
const MTIME = new Date(0);

export class TarSink implements LayoutSink {
  private readonly written = new Set<Digest>();
  private dirsDone = false;

  constructor(
    private readonly pack: tar.Pack,
    private readonly options: { onTransfer?: TransferSink } = {},
  ) {}

  file(name: string, data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pack.entry({ name, mode: 0o644, mtime: MTIME }, data, (err) => (err ? reject(err) : resolve()));
    });
  }

  async blob(b: ExportBlob): Promise<void> {
    if (this.written.has(b.digest)) return;
    this.written.add(b.digest);
    if (!this.dirsDone) {
      this.pack.entry({ name: 'blobs/', type: 'directory', mode: 0o755, mtime: MTIME });
      this.pack.entry({ name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime: MTIME });
      this.dirsDone = true;
    }
    await new Promise<void>((resolve, reject) => {
      const entry = this.pack.entry({ name: `blobs/sha256/${digestHex(b.digest)}`, size: b.size, mode: 0o444, mtime: MTIME }, (err) => (err ? reject(err) : resolve()));
      pipeline(openBlob(b), (src: AsyncIterable<Buffer>) => countTransfer(src, this.options.onTransfer, { name: b.digest, total: b.size }), entry).catch(reject);
    });
  }
}

/** An OCI layout directory: blobs are written beside their place and renamed in; index.json last. */
export class DirSink implements LayoutSink {
  constructor(
    private readonly dir: string,
    private readonly options: { onTransfer?: TransferSink } = {},
  ) {}

  async file(name: string, data: Buffer): Promise<void> {
    await writeFileAtomic(join(this.dir, name), data);
  }

  async blob(b: ExportBlob): Promise<void> {
    const dir = join(this.dir, 'blobs', 'sha256');
    const target = join(dir, digestHex(b.digest));
    try {
      if ((await stat(target)).size === b.size) return;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    await mkdir(dir, { recursive: true });
    const tmp = `${target}.tmp-${randomId(4)}`;
    try {
      await pipeline(openBlob(b), (src: AsyncIterable<Buffer>) => countTransfer(src, this.options.onTransfer, { name: b.digest, total: b.size }), createWriteStream(tmp, { mode: 0o444 }));
      await fsyncPath(tmp);
      await rename(tmp, target);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

/** The tag part of a name, as OCI layouts annotate it (`1` for `acc/app:1`). */
export function refName(name: string): string {
  const familiar = familiarName(name);
  const colon = familiar.lastIndexOf(':');
  return colon > familiar.lastIndexOf('/') ? familiar.slice(colon + 1) : 'latest';
}

/** The index of a layout holding `images`, each under its names (or none), annotated as containerd and BuildKit do. */
export function layoutIndex(images: readonly { image: ExportImage; names: readonly string[] }[]): Index {
  return {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_INDEX,
    manifests: images.flatMap(({ image, names }) =>
      (names.length > 0 ? names : [undefined]).map((name) => ({
        mediaType: image.mediaType,
        digest: image.manifestDigest,
        size: image.manifestBytes.byteLength,
        ...(name ? { annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': refName(name) } } : {}),
      })),
    ),
  };
}

/** Writes the blobs of each image and then `oci-layout` and `index.json`. */
export async function writeLayout(sink: LayoutSink, images: readonly { image: ExportImage; names: readonly string[] }[], signal?: AbortSignal): Promise<void> {
  for (const { image } of images) {
    for (const b of image.blobs) {
      signal?.throwIfAborted();
      await sink.blob(b);
    }
    await sink.blob(image.manifestBlob);
  }
  await sink.file('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await sink.file('index.json', Buffer.from(JSON.stringify(layoutIndex(images))));
}

/**
 * Writes a tar archive to `dest` through a temporary file beside it, renamed in place once whole;
 * `-` writes to standard output.
 */
export async function writeTarFile(dest: string, fill: (pack: tar.Pack) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const pack = tar.pack();
  if (dest === '-') {
    const writing = pipeline(pack, process.stdout, { signal });
    await fill(pack);
    pack.finalize();
    await writing;
    return;
  }
  const tmp = join(dirname(dest), `.${basename(dest)}.${randomId(4)}.tmp`);
  const writing = pipeline(pack, createWriteStream(tmp), { signal });
  try {
    await fill(pack);
    pack.finalize();
    await writing;
    await fsyncPath(tmp);
    await rename(tmp, dest);
    await fsyncDir(dirname(dest));
  } catch (err) {
    pack.destroy();
    await writing.catch(() => {
      // The write failed with the same cause, or was destroyed because of it.
    });
    await rm(tmp, { force: true });
    throw err;
  }
}
