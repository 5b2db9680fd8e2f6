import { createWriteStream } from 'node:fs';
import type { Readable } from 'streamx';
import { pipeline } from 'node:stream/promises';

/**
 * Writes the content of one tar-stream entry to `path` (created exclusively with `wx`).
 *
 * tar-stream's entries are streamx streams: when the archive is cut inside an entry, the entry
 * is destroyed with the extractor's error, and a Node pipeline started on it after that never
 * settles. A consumer that was still making the entry's directories then waited forever, with
 * its file open. An entry already destroyed is refused at once; one destroyed later fails the
 * pipeline, which sees its close.
 */
export async function writeTarEntry(entry: Readable, path: string, options: { mode?: number; flags?: string } = {}): Promise<void> {
  if (entry.destroyed) throw new Error('Unexpected end of data');
  await pipeline(entry, createWriteStream(path, { mode: options.mode, flags: options.flags ?? 'w' }));
}
