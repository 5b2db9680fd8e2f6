import pLimit from 'p-limit';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Digest, digestOf, isDigest, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import { countTransfer, type TransferSink } from '../../solver/progress.js';
import type { Store } from '../../cache/store.js';
import { type LocalImage, recordImage, tagImage } from '../image/local.js';
import {
  type Descriptor,
  type Index,
  type Manifest,
  type Platform,
  INDEX_TYPES,
  MANIFEST_TYPES,
  documentMediaType,
  isIndexType,
  isManifestType,
} from '../image/oci.js';
import { formatPlatform, selectManifest } from '../image/platform.js';
import { type Reference, formatReference, parseReference } from '../image/reference.js';
import { type ClientOptions, RegistryClient } from './client.js';
import { RegistryError, networkError } from './errors.js';
import { recordBlobSources } from './sources.js';
import { discard, followRedirects } from './transport.js';

/** Every manifest kind Kiln reads: distribution 2.8 serves an OCI manifest only when asked for it. */
export const MANIFEST_ACCEPT = [...MANIFEST_TYPES, ...INDEX_TYPES].join(', ');

export type PullEvent =
  | { type: 'resolved'; ref: string; digest: Digest; platform?: string }
  | { type: 'layer'; digest: Digest; size: number; status: 'exists' | 'downloading' | 'done' };

export interface PullOptions extends ClientOptions {
  platform: Platform;
  signal?: AbortSignal;
  onEvent?: (e: PullEvent) => void;
  /** Told the bytes of each layer as they arrive. */
  onTransfer?: TransferSink;
  /** Layers fetched at once (default 3, as docker). */
  concurrency?: number;
  /** Whether to point the reference at the image in the store (default true). */
  tag?: boolean;
}

export interface PullResult {
  image: LocalImage;
  /** The normalised name the image is stored under. */
  name: string;
  /** The digest the reference resolved to (an index's when the registry gave one). */
  digest: Digest;
  /** Bytes actually downloaded. */
  downloaded: number;
}

export function repoScope(ref: Reference, actions = 'pull'): string {
  return `repository:${ref.path}:${actions}`;
}

/** The largest manifest or index Kiln reads: real ones are a few KiB, even indexes of dozens of platforms. */
export const MAX_MANIFEST_SIZE = 4 << 20;

/** Fetches a manifest or index and checks it against the digest asked for or announced. */
export async function fetchManifest(client: RegistryClient, ref: Reference, reference: string, signal?: AbortSignal): Promise<{ bytes: Buffer; digest: Digest; mediaType: string }> {
  const what = `Cannot fetch the manifest of "${formatReference({ ...ref, tag: isDigest(reference) ? undefined : reference, digest: isDigest(reference) ? reference : undefined })}"`;
  const res = await client.fetchBytes({ method: 'GET', path: `/v2/${ref.path}/manifests/${reference}`, headers: { Accept: MANIFEST_ACCEPT }, scopes: [repoScope(ref)], what, signal, maxBytes: MAX_MANIFEST_SIZE, maxBytesHint: 'Kiln reads manifests of at most 4 MiB; the registry is broken or hostile' });
  const digest = digestOf(res.body);
  if (isDigest(reference) && digest !== reference) {
    throw new RegistryError('DIGEST_MISMATCH', `${what}: its content hashes to "${digest}", not "${reference}"`);
  }
  const announced = res.headers['docker-content-digest'];
  if (typeof announced === 'string' && announced.startsWith('sha256:') && announced !== digest) {
    throw new RegistryError('DIGEST_MISMATCH', `${what}: its content hashes to "${digest}", but the registry announced "${announced}"`);
  }
  let doc: { mediaType?: string; manifests?: unknown; config?: unknown; schemaVersion?: number };
  try {
    doc = JSON.parse(res.body.toString('utf8')) as typeof doc;
  } catch {
    throw new RegistryError('MANIFEST_INVALID', `${what}: the answer is not JSON`);
  }
  const contentType = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
  const mediaType = documentMediaType(doc, contentType);
  if (doc.schemaVersion === 1 || !mediaType || (!isIndexType(mediaType) && !isManifestType(mediaType))) {
    throw new RegistryError('MANIFEST_UNSUPPORTED', `${what}: unsupported manifest type "${mediaType ?? contentType}"`, { hint: 'Kiln reads OCI and Docker schema 2 manifests and indexes' });
  }
  return { bytes: res.body, digest, mediaType };
}

/** Resolves a reference to one platform's manifest: an index is narrowed as docker does. */
export async function resolveManifest(client: RegistryClient, ref: Reference, platform: Platform, signal?: AbortSignal): Promise<{ top: Digest; bytes: Buffer; digest: Digest; manifest: Manifest }> {
  const first = await fetchManifest(client, ref, ref.digest ?? ref.tag ?? 'latest', signal);
  let chosen = first;
  if (isIndexType(first.mediaType)) {
    const index = JSON.parse(first.bytes.toString('utf8')) as Index;
    const d = selectManifest(index.manifests ?? [], platform);
    if (!d) {
      const offered = (index.manifests ?? []).flatMap((m) => (m.platform && m.platform.os !== 'unknown' ? [formatPlatform(m.platform)] : []));
      throw new KilnError('NO_MATCHING_PLATFORM', `No manifest for ${formatPlatform(platform)} in the index of "${formatReference(ref)}"`, { hint: offered.length ? `It offers ${offered.join(', ')}; choose one with --platform` : undefined });
    }
    chosen = await fetchManifest(client, ref, parseDigest(d.digest), signal);
    if (!isManifestType(chosen.mediaType)) throw new RegistryError('MANIFEST_UNSUPPORTED', `The index of "${formatReference(ref)}" points to a nested index for ${formatPlatform(platform)}`);
  }
  return { top: first.digest, bytes: chosen.bytes, digest: chosen.digest, manifest: JSON.parse(chosen.bytes.toString('utf8')) as Manifest };
}

/** Downloads one blob into the store, verified against its digest; a broken transfer starts over. */
async function fetchBlob(store: Store, client: RegistryClient, ref: Reference, desc: Descriptor, options: { signal?: AbortSignal; onTransfer?: TransferSink }): Promise<number> {
  const { signal, onTransfer } = options;
  const digest = parseDigest(desc.digest);
  const what = `Cannot fetch blob "${digest}" of "${ref.domain}/${ref.path}"`;
  for (let attempt = 1; ; attempt++) {
    const res = await client.request({ method: 'GET', path: `/v2/${ref.path}/blobs/${digest}`, scopes: [repoScope(ref)], what, signal, expect: [200, 301, 302, 303, 307, 308] });
    let body = res.body;
    if (res.status !== 200) {
      // Storage behind a redirect (S3, a CDN) gets no registry credentials, on any hop.
      const base = await client.baseUrl(signal);
      const redirected = await followRedirects(res, { method: 'GET', url: new URL(`/v2/${ref.path}/blobs/${digest}`, base), insecureTls: client.insecure, signal }, { what });
      if (redirected.status !== 200) {
        await discard(redirected);
        throw new RegistryError('BLOB_UNKNOWN', `${what}: the storage it redirected to answered ${redirected.status}`, { temporary: redirected.status >= 500 });
      }
      body = redirected.body;
    }
    try {
      const counted = countTransfer(atMost(body, desc.size, what), onTransfer, { name: digest, total: desc.size });
      const info = await store.blobs.writeStream(counted, { expected: digest, signal });
      if (desc.size !== undefined && info.size !== desc.size) {
        throw new RegistryError('SIZE_INVALID', `${what}: got ${info.size} bytes, the manifest says ${desc.size}`);
      }
      store.db.putBlob(digest, info.size, desc.mediaType);
      return info.size;
    } catch (err) {
      if (err instanceof KilnError && err.code === 'DIGEST_MISMATCH') {
        throw new RegistryError('DIGEST_MISMATCH', `${what}: the content the registry sent does not match: ${err.message}`, { hint: 'The registry, or something between it and Kiln, altered the blob; nothing of it was kept', cause: err });
      }
      if (signal?.aborted || err instanceof KilnError) throw err;
      const failure = networkError(err, what);
      if (attempt >= 5) throw failure;
      await sleep((Number(process.env.KILN_REGISTRY_RETRY_MS) || 250) * 2 ** (attempt - 1), undefined, { signal });
    }
  }
}

/** Ends a blob at the size its descriptor gives: a registry sending more is lying, and could fill the disk. */
async function* atMost(body: AsyncIterable<Uint8Array>, size: number | undefined, what: string): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const chunk of body) {
    seen += chunk.byteLength;
    if (size !== undefined && seen > size) throw new RegistryError('SIZE_INVALID', `${what}: the registry sent more than the ${size} bytes the manifest gives`);
    yield chunk;
  }
}

/**
 * Pulls an image into the store: manifest (narrowed to one platform), config and layers, each
 * verified against its digest; blobs the store has are not fetched again. Layers are only stored
 * as blobs: a step unpacks one the first time it needs its files. The name moves last.
 */
export async function pullImage(store: Store, input: string, options: PullOptions): Promise<PullResult> {
  const ref = parseReference(input);
  const client = new RegistryClient(ref.domain, options);
  const signal = options.signal;
  const resolved = await resolveManifest(client, ref, options.platform, signal);
  options.onEvent?.({ type: 'resolved', ref: formatReference(ref), digest: resolved.top });
  const { manifest } = resolved;
  const limit = pLimit(options.concurrency ?? 3);
  let downloaded = 0;
  const configDigest = parseDigest(manifest.config.digest);
  const jobs = [manifest.config, ...manifest.layers].map((desc, i) =>
    limit(async () => {
      const d = parseDigest(desc.digest);
      if (await store.blobs.has(d)) {
        if (i > 0) options.onEvent?.({ type: 'layer', digest: d, size: desc.size, status: 'exists' });
        return;
      }
      if (i > 0) options.onEvent?.({ type: 'layer', digest: d, size: desc.size, status: 'downloading' });
      downloaded += await fetchBlob(store, client, ref, desc, { signal, onTransfer: i > 0 ? options.onTransfer : undefined });
      if (i > 0) options.onEvent?.({ type: 'layer', digest: d, size: desc.size, status: 'done' });
    }),
  );
  const settled = await Promise.allSettled(jobs);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  if (!(await store.blobs.has(configDigest))) throw new KilnError('BLOB_UNKNOWN', `The config "${configDigest}" was not stored`);
  const image = await recordImage(store, resolved.bytes, { expected: resolved.digest });
  recordBlobSources(store, ref.domain, ref.path, [configDigest, ...manifest.layers.map((l) => parseDigest(l.digest))]);
  const name = formatReference(ref);
  if (options.tag !== false) tagImage(store, image, [name]);
  return { image, name, digest: resolved.top, downloaded };
}
