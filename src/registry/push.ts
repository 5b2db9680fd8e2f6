import pLimit from 'p-limit';
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Digest, digestOf, parseDigest } from '../../cache/digest.js';
import { KilnError } from '../../cache/errors.js';
import type { Store } from '../../cache/store.js';
import { crashPoint } from '../../cache/trace.js';
import { countTransfer, type TransferSink } from '../../solver/progress.js';
import { type Manifest, MEDIA_TYPE_MANIFEST, documentMediaType } from '../image/oci.js';
import { type Reference, formatReference, parseReference } from '../image/reference.js';
import { type ClientOptions, RegistryClient } from './client.js';
import { RegistryError } from './errors.js';
import { repoScope } from './pull.js';
import { blobSources, recordBlobSources } from './sources.js';
import { discard } from './transport.js';

export type PushEvent =
  | { type: 'blob'; digest: Digest; size: number; status: 'exists' | 'mounted' | 'pushing' | 'pushed' }
  | { type: 'manifest'; name: string; digest: Digest };

export interface PushOptions extends ClientOptions {
  signal?: AbortSignal;
  onEvent?: (e: PushEvent) => void;
  /** Told the bytes of each blob as they go up. */
  onTransfer?: TransferSink;
  /** Blobs uploaded at once (default 3). */
  concurrency?: number;
  /**
   * Blobs up to this size go up in one PUT; larger ones in PATCH chunks of this size
   * (default 16 MiB, or `KILN_PUSH_CHUNK_SIZE`).
   */
  chunkSize?: number;
}

export interface PushResult {
  digest: Digest;
  names: string[];
  uploaded: number;
  mounted: number;
  existing: number;
}

const UPLOAD_ATTEMPTS = 5;

/** Attempts at a manifest PUT that the registry refused over a blob another client was committing. */
const MANIFEST_ATTEMPTS = 4;

/**
 * Blob uploads under way in this process, by registry, repository and digest. Pushes that need
 * the same blob at once (ten clients of one server pushing one name) share one upload: the
 * registry (distribution's filesystem storage) rewrites a repository's link to a blob on every
 * upload of it, and a manifest checked while another upload rewrites that link was refused
 * with DIGEST_INVALID.
 */
const uploading = new Map<string, Promise<'exists' | 'mounted' | 'pushed'>>();

async function pushBlobOnce(store: Store, client: RegistryClient, ref: Reference, blob: { digest: Digest; size: number }, options: PushOptions): Promise<'exists' | 'mounted' | 'pushed'> {
  const key = `${ref.domain}/${ref.path}@${blob.digest}`;
  const running = uploading.get(key);
  if (running) {
    const outcome = await running.then(
      () => true,
      // The other push's failure is reported to its own client; this one tries by itself.
      () => false,
    );
    if (outcome) {
      options.onEvent?.({ type: 'blob', ...blob, status: 'exists' });
      return 'exists';
    }
    return pushBlobOnce(store, client, ref, blob, options);
  }
  const mine = pushBlob(store, client, ref, blob, options);
  uploading.set(key, mine);
  try {
    return await mine;
  } finally {
    if (uploading.get(key) === mine) uploading.delete(key);
  }
}

/**
 * Pushes the image whose manifest is `manifestDigest` (all its blobs in the store) under each of
 * `names`: blobs the repository has are skipped (HEAD), blobs another repository of the same
 * registry has are mounted, the rest uploaded; the manifest goes last, once per tag. A re-run
 * therefore uploads only what is missing.
 */
export async function pushImage(store: Store, manifestDigest: Digest, names: readonly string[], options: PushOptions = {}): Promise<PushResult> {
  const manifestBytes = await store.blobs.read(manifestDigest);
  const manifest = JSON.parse(manifestBytes.toString('utf8')) as Manifest;
  const mediaType = documentMediaType(manifest) ?? MEDIA_TYPE_MANIFEST;
  const blobs = [manifest.config, ...manifest.layers].map((d) => ({ digest: parseDigest(d.digest), size: d.size }));
  const refs = names.map((n) => parseReference(n));
  const repos = new Map<string, Reference[]>();
  for (const r of refs) {
    const key = `${r.domain}/${r.path}`;
    repos.set(key, [...(repos.get(key) ?? []), r]);
  }
  const clients = new Map<string, RegistryClient>();
  const result: PushResult = { digest: manifestDigest, names: [], uploaded: 0, mounted: 0, existing: 0 };
  for (const group of repos.values()) {
    const ref = group[0]!;
    let client = clients.get(ref.domain);
    if (!client) {
      client = new RegistryClient(ref.domain, options);
      clients.set(ref.domain, client);
    }
    const limit = pLimit(options.concurrency ?? 3);
    const outcomes = await Promise.allSettled(blobs.map((b) => limit(() => pushBlobOnce(store, client!, ref, b, options))));
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw failed.reason;
    for (const o of outcomes) {
      const v = (o as PromiseFulfilledResult<'exists' | 'mounted' | 'pushed'>).value;
      if (v === 'exists') result.existing++;
      else if (v === 'mounted') result.mounted++;
      else result.uploaded++;
    }
    recordBlobSources(store, ref.domain, ref.path, blobs.map((b) => b.digest));
    crashPoint('push-manifest');
    for (const r of group) {
      if (r !== group[0]) crashPoint('push-tag');
      const reference = r.digest ?? r.tag ?? 'latest';
      if (r.digest && r.digest !== manifestDigest) {
        throw new KilnError('DIGEST_MISMATCH', `Cannot push to "${formatReference(r)}": the image's manifest is "${manifestDigest}"`);
      }
      const what = `Cannot push the manifest of "${formatReference(r)}"`;
      const res = await putManifest(client, { path: `/v2/${r.path}/manifests/${reference}`, mediaType, body: manifestBytes, scopes: [repoScope(r, 'pull,push')], what, signal: options.signal });
      const announced = res.headers['docker-content-digest'];
      if (typeof announced === 'string' && announced !== digestOf(manifestBytes)) {
        throw new RegistryError('DIGEST_MISMATCH', `${what}: the registry stored it as "${announced}", not "${manifestDigest}"`);
      }
      const name = formatReference(r);
      result.names.push(name);
      options.onEvent?.({ type: 'manifest', name, digest: manifestDigest });
    }
  }
  return result;
}

/**
 * PUTs a manifest whose blobs are all in the repository. A registry whose blob links another
 * client (another process) is rewriting at that moment answers DIGEST_INVALID or
 * MANIFEST_BLOB_UNKNOWN for a blob it has; the PUT is idempotent and is tried again.
 */
async function putManifest(client: RegistryClient, o: { path: string; mediaType: string; body: Buffer; scopes: string[]; what: string; signal?: AbortSignal }) {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await client.request({ method: 'PUT', path: o.path, headers: { 'Content-Type': o.mediaType }, body: o.body, scopes: o.scopes, expect: [201, 200], what: o.what, signal: o.signal });
      await discard(res);
      return res;
    } catch (err) {
      const racing = err instanceof RegistryError && (err.code === 'DIGEST_INVALID' || err.code === 'MANIFEST_BLOB_UNKNOWN');
      if (!racing || attempt >= MANIFEST_ATTEMPTS || o.signal?.aborted) throw err;
      await sleep((Number(process.env.KILN_REGISTRY_RETRY_MS) || 250) * 2 ** (attempt - 1), undefined, { signal: o.signal });
    }
  }
}

async function pushBlob(store: Store, client: RegistryClient, ref: Reference, blob: { digest: Digest; size: number }, options: PushOptions): Promise<'exists' | 'mounted' | 'pushed'> {
  const signal = options.signal;
  const scopes = [repoScope(ref, 'pull,push')];
  const head = await client.request({ method: 'HEAD', path: `/v2/${ref.path}/blobs/${blob.digest}`, scopes, expect: [200, 404], what: `Cannot check blob "${blob.digest}" in "${ref.domain}/${ref.path}"`, signal });
  await discard(head);
  if (head.status === 200) {
    options.onEvent?.({ type: 'blob', ...blob, status: 'exists' });
    return 'exists';
  }
  if (!(await store.blobs.has(blob.digest))) {
    throw new KilnError('BLOB_UNKNOWN', `Cannot push blob "${blob.digest}": it is not in the store`, { hint: 'Pull the image again to fetch its layers' });
  }
  const what = `Cannot upload blob "${blob.digest}" to "${ref.domain}/${ref.path}"`;
  for (let attempt = 1; ; attempt++) {
    try {
      let location: string | undefined;
      for (const from of blobSources(store, client.registry, blob.digest, ref.path).slice(0, 3)) {
        const res = await client.request({
          method: 'POST',
          path: `/v2/${ref.path}/blobs/uploads/?mount=${blob.digest}&from=${encodeURIComponent(from)}`,
          scopes: [...scopes, `repository:${from}:pull`],
          expect: [201, 202],
          what,
          signal,
        });
        await discard(res);
        if (res.status === 201) {
          options.onEvent?.({ type: 'blob', ...blob, status: 'mounted' });
          return 'mounted';
        }
        // 202: the registry could not mount and opened an upload session instead.
        location = headerLocation(res.headers.location, what);
        break;
      }
      if (!location) {
        const res = await client.request({ method: 'POST', path: `/v2/${ref.path}/blobs/uploads/`, scopes, expect: [202], what, signal });
        await discard(res);
        location = headerLocation(res.headers.location, what);
      }
      options.onEvent?.({ type: 'blob', ...blob, status: 'pushing' });
      await upload(store, client, location, blob, scopes, what, options);
      options.onEvent?.({ type: 'blob', ...blob, status: 'pushed' });
      crashPoint('push-blob');
      return 'pushed';
    } catch (err) {
      // A session that failed part way cannot be trusted: a new one starts from the first byte.
      const restart = err instanceof RegistryError && (err.temporary || err.code === 'BLOB_UPLOAD_UNKNOWN' || err.code === 'BLOB_UPLOAD_INVALID');
      if (!restart || attempt >= UPLOAD_ATTEMPTS || signal?.aborted) throw err;
      await sleep((Number(process.env.KILN_REGISTRY_RETRY_MS) || 250) * 2 ** (attempt - 1), undefined, { signal });
    }
  }
}

function headerLocation(value: string | undefined, what: string): string {
  if (!value) throw new RegistryError('BLOB_UPLOAD_INVALID', `${what}: the registry gave no upload location`);
  return value;
}

function withDigest(location: string, base: string, digest: Digest): string {
  const url = new URL(location, base);
  url.searchParams.set('digest', digest);
  return url.toString();
}

/** Monolithic PUT for small blobs; PATCH chunks with Content-Range, then PUT, for large ones. */
async function upload(store: Store, client: RegistryClient, location: string, blob: { digest: Digest; size: number }, scopes: string[], what: string, options: PushOptions): Promise<void> {
  const signal = options.signal;
  const path = store.blobs.path(blob.digest);
  const chunk = options.chunkSize ?? (Number(process.env.KILN_PUSH_CHUNK_SIZE) || 16 << 20);
  const base = await client.baseUrl(signal);
  if (blob.size <= chunk) {
    const res = await client.request({
      method: 'PUT',
      path: withDigest(location, base, blob.digest),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.size) },
      body: () => Readable.from(countTransfer(createReadStream(path), options.onTransfer, { name: blob.digest, total: blob.size })),
      scopes,
      expect: [201],
      what,
      retry: false,
      signal,
    });
    await discard(res);
    return;
  }
  let url = location;
  for (let start = 0; start < blob.size; start += chunk) {
    const end = Math.min(start + chunk, blob.size) - 1;
    const res = await client.request({
      method: 'PATCH',
      path: url,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(end - start + 1), 'Content-Range': `${start}-${end}` },
      body: () => Readable.from(countTransfer(createReadStream(path, { start, end }), options.onTransfer, { name: blob.digest, total: blob.size, offset: start, last: end === blob.size - 1 })),
      scopes,
      expect: [202],
      what,
      retry: false,
      signal,
    });
    await discard(res);
    url = headerLocation(res.headers.location, what);
  }
  const res = await client.request({ method: 'PUT', path: withDigest(url, base, blob.digest), headers: { 'Content-Length': '0' }, scopes, expect: [201], what, retry: false, signal });
  await discard(res);
}
