/**
 * The tar header format of OCI layers: POSIX ustar blocks with PAX extended headers.
 *
 * Kept here rather than taken from tar-stream because layers carry binary xattrs
 * (`security.capability`) in `SCHILY.xattr.*` records, and tar-stream's PAX code treats record
 * values as UTF-8 text, which corrupts any byte sequence that is not valid UTF-8.
 */
import { KilnError } from './errors.js';

export const BLOCK_SIZE = 512;

export type TarEntryType =
  | 'file'
  | 'link'
  | 'symlink'
  | 'character-device'
  | 'block-device'
  | 'directory'
  | 'fifo';

export interface TarHeader {
  /** Entry name as stored: relative, `/`-separated, directories ending in `/`. */
  name: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (`mode & 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Body length; non-zero only for regular files. */
  size: number;
  /** Seconds since the epoch; whole seconds when writing, possibly fractional when read. */
  mtime: number;
  /** Target of a symlink, or the earlier entry a hard link names. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as PAX `SCHILY.xattr.NAME` records in the order given. */
  xattrs?: ReadonlyMap<string, Buffer>;
}

/** A header as read from an archive: every optional field filled, plus what only readers see. */
export interface DecodedTarHeader extends TarHeader {
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
  /** Seconds since the epoch, from a PAX `atime` record when there is one. */
  atime: number | undefined;
}

const TYPE_FLAGS: Record<TarEntryType, string> = {
  file: '0',
  link: '1',
  symlink: '2',
  'character-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
};

/** Type flags of entries that describe the next entry rather than a file. */
export const PAX_FLAG = 'x';
export const PAX_GLOBAL_FLAG = 'g';
export const GNU_LONG_NAME_FLAG = 'L';
export const GNU_LONG_LINK_FLAG = 'K';

const XATTR_PREFIX = 'SCHILY.xattr.';
const MAX_UINT21 = 0o7777777;
const MAX_UINT33 = 0o77777777777;

/** Zero bytes that pad a body of `size` bytes to a whole block. */
export function paddingFor(size: number): number {
  const rest = size % BLOCK_SIZE;
  return rest === 0 ? 0 : BLOCK_SIZE - rest;
}

/** Two zero blocks end an archive. */
export function endOfArchive(): Buffer {
  return Buffer.alloc(2 * BLOCK_SIZE);
}

/**
 * The blocks that introduce an entry: a PAX extended header when some field does not fit ustar
 * (long or non-ASCII names, large ids or sizes, xattrs), then the ustar header. The body and its
 * padding are the caller's to write.
 */
export function encodeTarHeader(header: TarHeader): Buffer {
  const records: Buffer[] = [];
  const linkname = header.linkname ?? '';
  const split = isAscii(header.name) ? splitUstarName(header.name) : undefined;
  if (split === undefined) records.push(paxRecord('path', header.name));
  const linkFits = isAscii(linkname) && Buffer.byteLength(linkname) <= 100;
  if (!linkFits) records.push(paxRecord('linkpath', linkname));
  if (header.uid > MAX_UINT21) records.push(paxRecord('uid', String(header.uid)));
  if (header.gid > MAX_UINT21) records.push(paxRecord('gid', String(header.gid)));
  if (header.size > MAX_UINT33) records.push(paxRecord('size', String(header.size)));
  if (header.mtime < 0 || header.mtime > MAX_UINT33) records.push(paxRecord('mtime', String(header.mtime)));
  for (const [key, value] of header.xattrs ?? []) records.push(paxRecord(XATTR_PREFIX + key, value));

  const ustar = encodeUstar({
    name: split?.name ?? fallbackName(header.name),
    prefix: split?.prefix ?? '',
    typeflag: TYPE_FLAGS[header.type],
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    size: header.size,
    mtime: header.mtime,
    linkname: linkFits ? linkname : fallbackName(linkname),
    devmajor: header.devmajor ?? 0,
    devminor: header.devminor ?? 0,
  });
  if (records.length === 0) return ustar;

  const body = Buffer.concat(records);
  const paxHeader = encodeUstar({
    name: fallbackName(`PaxHeaders/${header.name.replace(/\/$/, '').split('/').pop() ?? ''}`),
    prefix: '',
    typeflag: PAX_FLAG,
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: Math.max(0, Math.min(header.mtime, MAX_UINT33)),
    linkname: '',
    devmajor: 0,
    devminor: 0,
  });
  return Buffer.concat([paxHeader, body, Buffer.alloc(paddingFor(body.length)), ustar]);
}

interface UstarFields {
  name: string;
  prefix: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
}

function encodeUstar(f: UstarFields): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE);
  const nameBytes = block.write(f.name, 0, 100, 'utf8');
  writeNumber(block, 100, 8, f.mode);
  writeNumber(block, 108, 8, f.uid);
  writeNumber(block, 116, 8, f.gid);
  writeNumber(block, 124, 12, f.size);
  writeNumber(block, 136, 12, Math.max(0, Math.min(f.mtime, MAX_UINT33)));
  block.write(f.typeflag, 156, 1, 'ascii');
  const linkBytes = block.write(f.linkname, 157, 100, 'utf8');
  block.write('ustar\u000000', 257, 8, 'ascii');
  writeNumber(block, 329, 8, f.devmajor);
  writeNumber(block, 337, 8, f.devminor);
  const prefixBytes = block.write(f.prefix, 345, 155, 'utf8');
  block.fill(0x20, 148, 156);
  // The sum of the block's bytes: only what was written above can be other than zero.
  const sum =
    sumBytes(block, 0, nameBytes) +
    sumBytes(block, 100, 157) +
    sumBytes(block, 157, 157 + linkBytes) +
    sumBytes(block, 257, 265) +
    sumBytes(block, 329, 345 + prefixBytes);
  writeNumber(block, 148, 7, sum);
  block[155] = 0x20;
  return block;
}

/** The largest value each width of octal field holds as digits and a NUL. */
const OCTAL_LIMIT: Record<number, number> = { 7: 8 ** 6, 8: 8 ** 7, 12: 8 ** 11 };

/**
 * Octal as ustar wants it (digits then NUL); values too large for the field go in GNU base-256,
 * which every current reader accepts, while PAX carries the same value for strict POSIX readers.
 */
function writeNumber(block: Buffer, offset: number, width: number, value: number): void {
  let rest = Math.floor(value);
  if (rest >= 0 && rest < OCTAL_LIMIT[width]!) {
    for (let i = offset + width - 2; i >= offset; i--) {
      block[i] = 0x30 + (rest % 8);
      rest = Math.floor(rest / 8);
    }
    block[offset + width - 1] = 0;
    return;
  }
  if (rest < 0 && rest.toString(8).length < width) {
    // Never written by Kiln's own callers; kept as the text form always wrote it.
    block.write(`${rest.toString(8).padStart(width - 1, '0')}\u0000`, offset, width, 'ascii');
    return;
  }
  for (let i = offset + width - 1; i > offset; i--) {
    block[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  block[offset] = 0x80;
}

function sumBytes(block: Buffer, from: number, to: number): number {
  let sum = 0;
  for (let i = from; i < to; i++) sum += block[i]!;
  return sum;
}

/** A name that fits ustar as `prefix/name` (≤155 / ≤100 bytes), or undefined when none does. */
function splitUstarName(name: string): { prefix: string; name: string } | undefined {
  if (name.length <= 100) return { prefix: '', name };
  if (name.length > 256) return undefined;
  for (let i = name.indexOf('/'); i !== -1 && i <= 155; i = name.indexOf('/', i + 1)) {
    const tail = name.slice(i + 1);
    if (tail.length <= 100 && tail !== '' && tail !== '/') return { prefix: name.slice(0, i), name: tail };
  }
  return undefined;
}

/** What a reader without PAX support sees when the real name lives in a PAX record. */
function fallbackName(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]/g, '_');
  return ascii.length <= 100 ? ascii : ascii.slice(ascii.length - 100);
}

function isAscii(text: string): boolean {
  return /^[\x01-\x7f]*$/.test(text);
}

/** `"<length> <key>=<value>\n"`, where length counts the whole record including its own digits. */
function paxRecord(key: string, value: string | Buffer): Buffer {
  const valueBytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const keyPart = Buffer.from(` ${key}=`, 'utf8');
  const base = keyPart.length + valueBytes.length + 1;
  let length = base + String(base).length;
  if (String(length).length !== String(base).length) length = base + String(length).length;
  return Buffer.concat([Buffer.from(String(length), 'ascii'), keyPart, valueBytes, Buffer.from('\n')]);
}

/** The fields of one ustar block, before PAX and GNU long-name records are applied. */
export interface RawHeader {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}

/**
 * Decodes one header block; `null` for a zero block (the end of the archive). Accepts POSIX
 * ustar, GNU and old v7 headers; throws CORRUPT_ARCHIVE when the checksum does not match.
 */
export function decodeTarHeader(block: Buffer, offset: number): RawHeader | null {
  if (block.every((b) => b === 0)) return null;
  const stored = readNumber(block, 148, 8, offset);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK_SIZE; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has a bad header checksum at byte ${offset}`, {
      hint: offset === 0 ? compressionHint(block) : undefined,
    });
  }
  const posix = block.toString('latin1', 257, 263) === 'ustar\u0000';
  let name = readString(block, 0, 100);
  if (posix && block[345] !== 0) name = `${readString(block, 345, 155)}/${name}`;
  let typeflag = block[156] === 0 ? '0' : String.fromCharCode(block[156]!);
  // Pre-POSIX archives mark directories only by the trailing slash.
  if (typeflag === '0' && name.endsWith('/')) typeflag = '5';
  return {
    name,
    typeflag,
    mode: readNumber(block, 100, 8, offset) & 0o7777,
    uid: readNumber(block, 108, 8, offset),
    gid: readNumber(block, 116, 8, offset),
    size: readNumber(block, 124, 12, offset),
    mtime: readNumber(block, 136, 12, offset),
    linkname: readString(block, 157, 100),
    uname: readString(block, 265, 32),
    gname: readString(block, 297, 32),
    devmajor: posix || block[329] !== 0 ? readNumber(block, 329, 8, offset) : 0,
    devminor: posix || block[337] !== 0 ? readNumber(block, 337, 8, offset) : 0,
  };
}

/** A hint for a stream that starts like a compressed one, which is the usual reason it is no tar. */
export function compressionHint(start: Buffer): string | undefined {
  if (start[0] === 0x1f && start[1] === 0x8b) return 'The stream is gzip-compressed: decompress it before unpacking';
  if (start.readUInt32LE(0) === 0xfd2fb528) return 'The stream is zstd-compressed: decompress it before unpacking';
  return undefined;
}

function readString(block: Buffer, start: number, width: number): string {
  const end = block.indexOf(0, start);
  return block.toString('utf8', start, end === -1 || end > start + width ? start + width : end);
}

function readNumber(block: Buffer, start: number, width: number, offset: number): number {
  if (block[start]! & 0x80) {
    if (block[start] === 0xff) throw corruptNumber(offset);
    let value = block[start]! & 0x7f;
    for (let i = start + 1; i < start + width; i++) value = value * 256 + block[i]!;
    if (!Number.isSafeInteger(value)) throw corruptNumber(offset);
    return value;
  }
  const text = block.toString('latin1', start, start + width).replace(/^[ \u0000]+/, '');
  const digits = text.split(/[ \u0000]/, 1)[0]!;
  if (digits === '') return 0;
  if (!/^[0-7]+$/.test(digits)) throw corruptNumber(offset);
  return parseInt(digits, 8);
}

function corruptNumber(offset: number): KilnError {
  return new KilnError('CORRUPT_ARCHIVE', `Layer archive has an invalid number in the header at byte ${offset}`);
}

/**
 * Splits a PAX extended header into its records, keeping values as bytes: `SCHILY.xattr.*`
 * values are binary.
 */
export function parsePaxRecords(body: Buffer, offset: number): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let pos = 0;
  while (pos < body.length) {
    // Some writers pad the extended header with NULs after the last record.
    if (body[pos] === 0) break;
    const space = body.indexOf(0x20, pos);
    const length = space === -1 ? NaN : Number(body.toString('latin1', pos, space));
    const end = pos + length;
    if (!Number.isInteger(length) || length <= 0 || end > body.length || body[end - 1] !== 0x0a) {
      throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has a malformed PAX record at byte ${offset + pos}`);
    }
    const equals = body.indexOf(0x3d, space + 1);
    if (equals === -1 || equals >= end) {
      throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has a malformed PAX record at byte ${offset + pos}`);
    }
    records.set(body.toString('utf8', space + 1, equals), body.subarray(equals + 1, end - 1));
    pos = end;
  }
  return records;
}

/** Applies PAX records and GNU long names to a raw header, giving the entry as a reader sees it. */
export function completeHeader(
  raw: RawHeader,
  pax: ReadonlyMap<string, Buffer>,
  offset: number,
): DecodedTarHeader {
  const text = (key: string): string | undefined => pax.get(key)?.toString('utf8');
  const number = (key: string, fallback: number, integer: boolean): number => {
    const value = text(key);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (value === '' || !Number.isFinite(parsed) || (integer && (!Number.isSafeInteger(parsed) || parsed < 0))) {
      throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has an invalid PAX "${key}" value at byte ${offset}`);
    }
    return parsed;
  };
  const name = text('path') ?? raw.name;
  const linkname = text('linkpath') ?? raw.linkname;
  if (name.includes('\u0000') || linkname.includes('\u0000')) {
    throw new KilnError('CORRUPT_ARCHIVE', `Layer archive has a name with a NUL byte at byte ${offset}`);
  }
  const type = typeOfFlag(raw.typeflag);
  if (raw.typeflag === 'S' || [...pax.keys()].some((key) => key.startsWith('GNU.sparse.'))) {
    throw new KilnError('UNSUPPORTED_ARCHIVE', `Layer archive entry "${text('GNU.sparse.name') ?? name}" is a sparse file (GNU tar --sparse), which layers cannot hold`, {
      hint: 'Make the archive without --sparse (-S): image layers are plain tar, as docker writes them',
    });
  }
  if (type === undefined) {
    throw new KilnError('UNSUPPORTED_ARCHIVE', `Layer archive entry "${name}" has an unsupported type "${raw.typeflag}"`, {
      hint: 'Layers may hold regular files, directories, links, devices and FIFOs; sparse and multi-volume entries are not supported',
    });
  }
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of pax) {
    if (key.startsWith(XATTR_PREFIX)) xattrs.set(key.slice(XATTR_PREFIX.length), value);
  }
  const atime = pax.has('atime') ? number('atime', 0, false) : undefined;
  return {
    name,
    type,
    mode: raw.mode,
    uid: number('uid', raw.uid, true),
    gid: number('gid', raw.gid, true),
    size: number('size', raw.size, true),
    mtime: number('mtime', raw.mtime, false),
    linkname,
    devmajor: raw.devmajor,
    devminor: raw.devminor,
    xattrs,
    atime,
  };
}

function typeOfFlag(flag: string): TarEntryType | undefined {
  switch (flag) {
    case '0':
    case '7': // contiguous file: a regular file everywhere that matters
      return 'file';
    case '1':
      return 'link';
    case '2':
      return 'symlink';
    case '3':
      return 'character-device';
    case '4':
      return 'block-device';
    case '5':
      return 'directory';
    case '6':
      return 'fifo';
    default:
      return undefined;
  }
}
