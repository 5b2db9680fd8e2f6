/**
 * Reads a tar stream entry by entry. Bodies are handed out as they arrive and the next chunk is
 * pulled only when the consumer asks for it, so memory stays bounded and a slow consumer slows
 * the producer instead of filling a buffer.
 */
import { Transform } from 'node:stream';
import { KilnError } from './errors.js';
import {
  BLOCK_SIZE,
  GNU_LONG_LINK_FLAG,
  GNU_LONG_NAME_FLAG,
  PAX_FLAG,
  PAX_GLOBAL_FLAG,
  completeHeader,
  compressionHint,
  decodeTarHeader,
  paddingFor,
  parsePaxRecords,
  type DecodedTarHeader,
} from './tarheader.js';

export interface TarEntry {
  header: DecodedTarHeader;
  /**
   * The entry's content. Read it before asking for the next entry; whatever is left unread is
   * skipped when the next entry is requested.
   */
  body: AsyncIterable<Buffer>;
}

/** Extended headers larger than this are taken for corruption rather than buffered. */
const MAX_META_SIZE = 4 * 1024 * 1024;

const DEFAULT_MAX_UNPACKED = 64 * 1024 ** 3;

/**
 * The most bytes one archive may unpack to: `KILN_MAX_UNPACKED_SIZE`, in bytes or with a K, M, G
 * or T suffix (powers of 1024), default 64 GiB. A few KiB of gzip can expand to terabytes, and
 * nothing in a compressed tar says how large it gets before it has been read.
 */
export function maxUnpackedSize(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.KILN_MAX_UNPACKED_SIZE;
  if (text === undefined || text === '') return DEFAULT_MAX_UNPACKED;
  const m = /^\s*(\d+)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) {
    throw new KilnError('CONFIG_INVALID', `KILN_MAX_UNPACKED_SIZE="${text}" is not a size`, { hint: 'Give bytes, or a number with K, M, G or T: "512M", "100G"' });
  }
  return Number(m[1]) * 1024 ** ' kmgt'.indexOf(m[2]!.toLowerCase() || ' ');
}

export function unpackedTooLarge(limit: number, what = 'Archive'): KilnError {
  return new KilnError('ARCHIVE_TOO_LARGE', `${what} unpacks to more than ${limit} bytes`, {
    hint: 'It may be a decompression bomb; if it is genuine, raise KILN_MAX_UNPACKED_SIZE',
  });
}

/** A stream stage that fails with ARCHIVE_TOO_LARGE once more than `limit` bytes went through. */
export function limitUnpacked(limit: number, what?: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) done(unpackedTooLarge(limit, what));
      else done(null, chunk);
    },
  });
}

/**
 * Yields the entries of an uncompressed tar stream. Throws CORRUPT_ARCHIVE when the stream is
 * cut inside an entry or a header is damaged; a stream that stops cleanly between entries, or in
 * the padding after the last one, ends the archive, as Go's reader allows. Whatever follows the
 * end-of-archive blocks is read and dropped, so a producer piping into this never stalls.
 */
export async function* readTar(source: AsyncIterable<Uint8Array>, options: { maxSize?: number } = {}): AsyncGenerator<TarEntry, void, undefined> {
  const input = new ByteReader(source[Symbol.asyncIterator](), options.maxSize ?? maxUnpackedSize());
  let globalPax = new Map<string, Buffer>();
  let localPax: Map<string, Buffer> | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  let unread = 0;
  let unreadOf = '';
  let padding = 0;
  try {
    for (;;) {
      await input.skip(unread, unreadOf);
      unread = 0;
      // The padding after an entry's content may be missing at the very end: the docker client
      // ends a context whose Dockerfile came from standard input (`docker build -f- .`) right
      // after its last entry's bytes, and Go's reader takes that for the archive's end.
      const cutInPadding = padding > 0 && (await input.read(padding)).length < padding;
      padding = 0;
      const offset = input.consumed;
      const block = cutInPadding ? Buffer.alloc(0) : await input.read(BLOCK_SIZE);
      if (block.length === 0 && offset > 0 && localPax === undefined && longName === undefined && longLink === undefined) {
        // Some producers (umoci, for one) end a layer without the two zero blocks. Go's reader,
        // and so Docker and BuildKit, accept a stream that stops cleanly between entries; a
        // layer cut short there still fails its diff id or blob digest check.
        return;
      }
      if (block.length < BLOCK_SIZE) {
        const what = offset === 0 && block.length === 0 ? 'is empty' : `ends without an end-of-archive marker at byte ${offset}`;
        const compressed = offset === 0 && block.length >= 4 ? compressionHint(block) : undefined;
        throw new KilnError('CORRUPT_ARCHIVE', `Layer archive ${what}`, {
          hint: compressed ?? 'The stream was probably cut short: fetch or rebuild the layer again',
        });
      }
      const raw = decodeTarHeader(block, offset);
      if (raw === null) {
        await input.drain();
        return;
      }
      const padded = raw.size + paddingFor(raw.size);
      switch (raw.typeflag) {
        case PAX_FLAG:
        case PAX_GLOBAL_FLAG:
        case GNU_LONG_NAME_FLAG:
        case GNU_LONG_LINK_FLAG: {
          if (raw.size > MAX_META_SIZE) {
            throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has a ${raw.size}-byte extended header at byte ${offset}`);
          }
          const body = await input.read(padded);
          if (body.length < padded) throw truncated(input.consumed, raw.name);
          const data = body.subarray(0, raw.size);
          if (raw.typeflag === PAX_FLAG) localPax = mergePax(localPax ?? new Map(), data, offset);
          else if (raw.typeflag === PAX_GLOBAL_FLAG) globalPax = mergePax(globalPax, data, offset);
          else if (raw.typeflag === GNU_LONG_NAME_FLAG) longName = cString(data);
          else longLink = cString(data);
          continue;
        }
      }
      if (longName !== undefined) raw.name = longName;
      if (longLink !== undefined) raw.linkname = longLink;
      const records = localPax === undefined ? globalPax : overlay(globalPax, localPax);
      const header = completeHeader(raw, records, offset);
      longName = longLink = localPax = undefined;
      // Only regular files have content; other types may still declare a size, which is skipped.
      let remaining = header.type === 'file' ? header.size : 0;
      unread = header.size - remaining;
      padding = paddingFor(header.size);
      const name = header.name;
      const body: AsyncIterable<Buffer> = {
        async *[Symbol.asyncIterator]() {
          while (remaining > 0) {
            const chunk = await input.readSome(remaining);
            if (chunk.length === 0) throw truncated(input.consumed, name);
            remaining -= chunk.length;
            yield chunk;
          }
        },
      };
      yield { header, body };
      unread += remaining;
      unreadOf = name;
      remaining = 0;
    }
  } finally {
    await input.close();
  }
}

function truncated(at: number, name: string): KilnError {
  return new KilnError('CORRUPT_ARCHIVE', `Layer archive is truncated at byte ${at} in entry "${name}"`, {
    hint: 'The stream was probably cut short: fetch or rebuild the layer again',
  });
}

/** PAX semantics: a record with an empty value removes the key. */
function mergePax(into: Map<string, Buffer>, body: Buffer, offset: number): Map<string, Buffer> {
  const merged = new Map(into);
  for (const [key, value] of parsePaxRecords(body, offset)) {
    if (value.length === 0) merged.delete(key);
    else merged.set(key, value);
  }
  return merged;
}

function overlay(base: Map<string, Buffer>, top: Map<string, Buffer>): Map<string, Buffer> {
  if (base.size === 0) return top;
  const merged = new Map(base);
  for (const [key, value] of top) merged.set(key, value);
  return merged;
}

function cString(data: Buffer): string {
  const end = data.indexOf(0);
  return data.toString('utf8', 0, end === -1 ? data.length : end);
}

/** Pulls bytes from an async iterator of chunks, slicing without copying where it can. */
class ByteReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  consumed = 0;
  private pulled = 0;

  constructor(
    private readonly source: AsyncIterator<Uint8Array>,
    private readonly limit: number,
  ) {}

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.source.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    const chunk = Buffer.isBuffer(next.value)
      ? next.value
      : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
    this.pulled += chunk.length;
    if (this.pulled > this.limit) throw unpackedTooLarge(this.limit, 'Layer archive');
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }

  /** Up to `max` bytes that are already here (or the next chunk); empty only at the end. */
  async readSome(max: number): Promise<Buffer> {
    while (this.buffered === 0) {
      if (!(await this.fill())) return Buffer.alloc(0);
    }
    const first = this.chunks[0]!;
    if (first.length <= max) {
      this.chunks.shift();
      this.take(first.length);
      return first;
    }
    this.chunks[0] = first.subarray(max);
    this.take(max);
    return first.subarray(0, max);
  }

  /** Exactly `n` bytes, or fewer only when the stream ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (!(await this.fill())) break;
    }
    if (this.chunks.length > 0 && this.chunks[0]!.length >= n) return this.readSome(n);
    const parts: Buffer[] = [];
    let left = Math.min(n, this.buffered);
    while (left > 0) {
      const part = await this.readSome(left);
      parts.push(part);
      left -= part.length;
    }
    return Buffer.concat(parts);
  }

  async skip(n: number, name: string): Promise<void> {
    let left = n;
    while (left > 0) {
      const part = await this.readSome(left);
      if (part.length === 0) throw truncated(this.consumed, name);
      left -= part.length;
    }
  }

  async drain(): Promise<void> {
    while (await this.fill()) {
      this.consumed += this.buffered;
      this.chunks.length = 0;
      this.buffered = 0;
    }
  }

  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.source.return?.();
    }
  }

  private take(n: number): void {
    this.buffered -= n;
    this.consumed += n;
  }
}
