import { createHash } from 'node:crypto';
import { chmod, open, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { KilnError } from '../../cache/errors.js';
import type { HttpOp } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';

/** Downloaded files get this mode unless ADD --chmod says otherwise, as in Docker. */
const DOWNLOAD_MODE = 0o600;

async function get(url: string, signal: AbortSignal): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (err) {
    if (signal.aborted) throw err;
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new KilnError('HTTP_ERROR', `Cannot download "${url}": ${cause}`, { cause: err });
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new KilnError('HTTP_ERROR', `Cannot download "${url}": the server answered ${res.status} ${res.statusText}`.trim());
  }
  return res;
}

function algorithmOf(checksum: string | undefined): string {
  return checksum ? checksum.slice(0, checksum.indexOf(':')) : 'sha256';
}

/**
 * The content part of a download's cache key. A pinned checksum is the key, without a request;
 * otherwise the file is fetched and hashed, so that a changed file is fetched again.
 */
export async function httpContentKey(op: HttpOp, signal: AbortSignal): Promise<{ key: string }> {
  if (op.checksum) return { key: op.checksum };
  const res = await get(op.url, signal);
  const hash = createHash('sha256');
  for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) hash.update(chunk as Buffer);
  return { key: `sha256:${hash.digest('hex')}` };
}

/** Downloads `op.url` to `/<filename>` in `root`, verifying the checksum when one is given. */
export async function downloadInto(root: string, op: HttpOp, signal: AbortSignal): Promise<void> {
  const res = await get(op.url, signal);
  const name = op.filename ?? (posix.basename(new URL(op.url).pathname) || 'index.html');
  const target = await secureJoin(root, `/${name}`);
  const algorithm = algorithmOf(op.checksum);
  const hash = createHash(algorithm);
  const fh = await open(target, 'w', DOWNLOAD_MODE);
  try {
    for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) {
      hash.update(chunk as Buffer);
      await fh.write(chunk as Buffer);
    }
  } finally {
    await fh.close();
  }
  const digest = `${algorithm}:${hash.digest('hex')}`;
  if (op.checksum && digest !== op.checksum) {
    throw new KilnError('CHECKSUM_MISMATCH', `The download of "${op.url}" has checksum ${digest}, but ADD --checksum expects ${op.checksum}`, {
      hint: 'Update --checksum if the file changed on purpose',
    });
  }
  await chmod(target, DOWNLOAD_MODE);
  const modified = res.headers.get('last-modified');
  const time = modified ? new Date(modified) : undefined;
  if (time && !Number.isNaN(time.getTime())) await utimes(target, time, time);
}
