import { createHash } from 'node:crypto';
import { chmod, open, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import type { HttpOp } from '../../solver/graph.js';
import { secureJoin } from '../fsutil/securejoin.js';
import type { HttpRequest, HttpResponse } from '../registry/transport.js';

/** Downloaded files get this mode unless ADD --chmod says otherwise, as in Docker. */
const DOWNLOAD_MODE = 0o600;

/**
 * GET through the registry client's transport: its connect and idle timeouts, its redirect
 * rules and its TLS settings (the extra certificate authorities of src/registry/ca.ts).
 */
export interface DownloadOptions {
  signal: AbortSignal;
  /** A build service's download: the server's own host is out of reach (src/sources/egress.ts). */
  service?: boolean;
}

async function get(url: string, { signal, service }: DownloadOptions): Promise<HttpResponse> {
  const what = `Cannot download "${url}"`;
  // Loaded here, not with this module: every build loads this module, few download anything.
  const { discard, followRedirects, send } = await import('../registry/transport.js');
  let res: HttpResponse;
  try {
    const req: HttpRequest = { method: 'GET', url: new URL(url), signal, ...(service ? { egress: (await import('./egress.js')).SERVICE_EGRESS } : {}) };
    res = await followRedirects(await send(req), req, { what });
  } catch (err) {
    if (signal.aborted || err instanceof KilnError) throw err;
    throw new KilnError('HTTP_ERROR', `${what}: ${(err as Error).message}`, { cause: err });
  }
  if (res.status < 200 || res.status > 299) {
    await discard(res);
    throw new KilnError('HTTP_ERROR', `${what}: the server answered ${res.status} ${res.body.statusMessage ?? ''}`.trim());
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
export async function httpContentKey(op: HttpOp, o: DownloadOptions): Promise<{ key: string }> {
  if (op.checksum) return { key: op.checksum };
  const res = await get(op.url, o);
  const hash = createHash('sha256');
  for await (const chunk of res.body) hash.update(chunk as Buffer);
  return { key: `sha256:${hash.digest('hex')}` };
}

/** Downloads `op.url` to `/<filename>` in `root`, verifying the checksum when one is given. */
export async function downloadInto(root: string, op: HttpOp, o: DownloadOptions): Promise<void> {
  const res = await get(op.url, o);
  const name = op.filename ?? (posix.basename(new URL(op.url).pathname) || 'index.html');
  const target = await secureJoin(root, `/${name}`);
  const algorithm = algorithmOf(op.checksum);
  const hash = createHash(algorithm);
  const fh = await open(target, 'w', DOWNLOAD_MODE);
  try {
    for await (const chunk of res.body) {
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
  const modified = res.headers['last-modified'];
  const time = modified ? new Date(modified) : undefined;
  if (time && !Number.isNaN(time.getTime())) await utimes(target, time, time);
}
