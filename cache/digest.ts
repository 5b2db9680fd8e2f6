import { createHash, type Hash } from 'node:crypto';

declare const digestBrand: unique symbol;
/** A content digest `sha256:<64 hex>`. Made only by parseDigest() or digestOf(). */
export type Digest = string & { readonly [digestBrand]: true };

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: string): value is Digest {
  return DIGEST_RE.test(value);
}

export function parseDigest(value: string): Digest {
  if (!DIGEST_RE.test(value)) {
    throw new TypeError(`Invalid digest "${value}": expected "sha256:" and 64 lowercase hex digits`);
  }
  return value as Digest;
}

export function digestOf(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/** The hex part of a digest, used as a file name in the store. */
export function digestHex(d: Digest): string {
  return d.slice(7);
}

/** An incremental hasher that ends in a Digest. */
export class Hasher {
  private readonly hash: Hash = createHash('sha256');
  size = 0;

  update(chunk: Uint8Array | string): this {
    this.hash.update(chunk);
    this.size += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.byteLength;
    return this;
  }

  digest(): Digest {
    return `sha256:${this.hash.digest('hex')}` as Digest;
  }
}

/** Canonical JSON: sorted keys, no undefined members, so equal values hash equally. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortValue(value));
}

function sortValue(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => (v === undefined ? null : sortValue(v)));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortValue(v);
    }
    return out;
  }
  return value;
}
