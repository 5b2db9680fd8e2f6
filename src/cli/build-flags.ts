import { writeFile } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import type { LocalImage } from '../image/local.js';
import { normalizeName } from '../image/reference.js';
import { formatPlatform, parsePlatform } from '../image/platform.js';
import { usageError, type CommandSpec } from './args.js';

/**
 * The docker/buildx build flags whose value Kiln checks itself: what the engine supports is
 * returned for the build request, what it does not is refused before any work, by name.
 */
export interface ExtraBuildFlags {
  labels: Record<string, string>;
  pull: boolean;
}

export function parseExtraBuildFlags(options: Record<string, unknown>, spec: CommandSpec): ExtraBuildFlags {
  const list = (name: string) => (options[name] as string[] | undefined) ?? [];
  const labels: Record<string, string> = {};
  for (const l of list('label')) {
    const eq = l.indexOf('=');
    if (eq === 0) throw usageError(`Invalid --label "${l}": the name is empty`, spec);
    // As docker does, `--label NAME` is the label with an empty value.
    labels[eq < 0 ? l : l.slice(0, eq)] = eq < 0 ? '' : l.slice(eq + 1);
  }
  const platform = options.platform as string | undefined;
  if (platform !== undefined) {
    for (const p of platform.split(',')) {
      let parsed;
      try {
        parsed = parsePlatform(p);
      } catch (err) {
        if (err instanceof KilnError) throw usageError(err.message, spec);
        throw err;
      }
      if (formatPlatform(parsed) !== 'linux/amd64') {
        throw new KilnError('PLATFORM_UNSUPPORTED', `Cannot build for platform "${p}": Kiln builds for linux/amd64 only`, {
          hint: 'Leave --platform out, or pass --platform linux/amd64',
        });
      }
    }
  }
  const network = options.network as string | undefined;
  if (network !== undefined && network !== 'default' && network !== 'host') {
    if (network === 'none') {
      throw new KilnError('UNSUPPORTED', 'Cannot use --network none as the default of every RUN yet', { hint: 'Write RUN --network=none on the steps that must run without a network' });
    }
    throw usageError(`Invalid --network "${network}": expected default, host or none`, spec);
  }
  for (const h of list('add-host')) {
    if (!/^[^:=\s]+[:=][0-9a-fA-F.:]+$/.test(h)) throw usageError(`Invalid --add-host "${h}": expected HOST:IP`, spec);
  }
  if (list('add-host').length > 0) {
    throw new KilnError('UNSUPPORTED', 'Cannot add entries to /etc/hosts of RUN steps: the executor writes a fixed hosts file', { hint: 'Leave --add-host out' });
  }
  const shm = options['shm-size'] as string | undefined;
  if (shm !== undefined) {
    const bytes = parseBytes(shm);
    if (bytes === undefined) throw usageError(`Invalid --shm-size "${shm}": expected a size such as 64m or 1g`, spec);
    // Every RUN step gets Docker's default /dev/shm of 64 MiB; only that size can be honoured.
    if (bytes !== 64 * 1024 * 1024) {
      throw new KilnError('UNSUPPORTED', `Cannot size /dev/shm as "${shm}": RUN steps have a 64m /dev/shm`, { hint: 'Leave --shm-size out, or pass --shm-size 64m' });
    }
  }
  for (const u of list('ulimit')) {
    if (!/^[a-z]+=-?\d+(:-?\d+)?$/.test(u)) throw usageError(`Invalid --ulimit "${u}": expected NAME=SOFT[:HARD], such as nofile=1024:2048`, spec);
  }
  if (list('ulimit').length > 0) {
    throw new KilnError('UNSUPPORTED', 'Cannot set resource limits of RUN steps: they run with the limits of the kiln process', { hint: 'Leave --ulimit out, or set the limit with ulimit before running kiln' });
  }
  return { labels, pull: options.pull === true };
}

/** `64m`, `1g`, `65536k`, `1048576` (bytes), as docker reads them: binary units. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmg]?)i?b?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase()]!;
  return Math.round(Number(m[1]) * unit);
}

/** The JSON `docker buildx build --metadata-file` writes, for the keys Kiln can fill. */
export async function writeMetadataFile(path: string, image: LocalImage, options: { tags: readonly string[]; manifestSize: number }): Promise<void> {
  const { tags, manifestSize } = options;
  const metadata: Record<string, unknown> = {
    'containerimage.config.digest': image.configDigest,
    'containerimage.descriptor': { mediaType: image.manifest.mediaType, digest: image.manifestDigest, size: manifestSize },
    'containerimage.digest': image.manifestDigest,
  };
  if (tags.length > 0) metadata['image.name'] = tags.map(normalizeName).join(',');
  try {
    await writeFile(path, `${JSON.stringify(metadata, null, 2)}\n`);
  } catch (err) {
    throw new KilnError('METADATA_WRITE', `Cannot write the metadata file "${path}": ${(err as Error).message}`, { cause: err });
  }
}
