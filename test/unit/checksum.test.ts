import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import Database from 'better-sqlite3';
import { parseDigest } from '../../cache/digest.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StoreDb } from '../../cache/db.js';
import { checksumSelections, RACY_MS } from '../../src/sources/checksum.js';
import { exclusionFor } from '../../src/sources/exclusion.js';
import { selectSources } from '../../src/sources/select.js';

let tmp: string;
let db: StoreDb;

beforeEach(() => {
  tmp = mkdtempSync('/dev/shm/kiln-checksum-');
  db = new StoreDb(join(tmp, 'kiln.db'));
});

afterEach(() => {
  db.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function sum(ctx: string, patterns: string[], ignore: string[] = [], files?: Record<string, string>): Promise<string> {
  const exclusion = exclusionFor(ignore);
  // Measured from ten seconds ahead, the files the test just wrote count as settled (RACY_MS).
  const checksum = await checksumSelections(db, await selectSources(ctx, patterns, exclusion, 'the build context'), exclusion, ctx, Date.now() + 10_000);
  if (files) Object.assign(files, checksum.files());
  return checksum.sum;
}

function makeContext(): string {
  const ctx = join(tmp, 'ctx');
  for (let d = 0; d < 10; d++) {
    mkdirSync(join(ctx, `d${d}`), { recursive: true });
    for (let f = 0; f < 30; f++) writeFileSync(join(ctx, `d${d}/f${f}`), `${d} ${f}\n`);
  }
  writeFileSync(join(ctx, 'debug.log'), 'log\n');
  return ctx;
}

describe('checksumSelections', () => {
  it('changes with content and mode, not with times, and leaves out ignored files', async () => {
    const ctx = makeContext();
    const files: Record<string, string> = {};
    const first = await sum(ctx, ['.'], ['*.log'], files);
    expect(Object.keys(files)).toHaveLength(1 + 10 + 10 * 30);
    expect(files['d3/f7']).toBe(`file 644 0:0 4 sha256:${createHash('sha256').update('3 7\n').digest('hex')}`);
    expect(await sum(ctx, ['.'], ['*.log'])).toBe(first);

    utimesSync(join(ctx, 'd3/f7'), 5, 5);
    writeFileSync(join(ctx, 'debug.log'), 'more log\n');
    expect(await sum(ctx, ['.'], ['*.log'])).toBe(first);

    writeFileSync(join(ctx, 'd3/f7'), '3 8\n\n');
    const edited = await sum(ctx, ['.'], ['*.log']);
    expect(edited).not.toBe(first);
    writeFileSync(join(ctx, 'd3/f7'), '3 7\n');
    expect(await sum(ctx, ['.'], ['*.log'])).toBe(first);

    chmodSync(join(ctx, 'd9/f0'), 0o600);
    expect(await sum(ctx, ['.'], ['*.log'])).not.toBe(first);
  });

  it('keeps a streamed large file in its place among the small ones, hashed or from the memo', async () => {
    const ctx = makeContext();
    const big = Buffer.alloc(3 * 1024 * 1024, 7);
    writeFileSync(join(ctx, 'd5/f10big'), big);
    const fresh: Record<string, string> = {};
    const first = await sum(ctx, ['.'], [], fresh);
    const memo: Record<string, string> = {};
    expect(await sum(ctx, ['.'], [], memo)).toBe(first);
    expect(memo).toEqual(fresh);
    expect(fresh['d5/f10big']).toBe(`file 644 0:0 ${big.length} sha256:${createHash('sha256').update(big).digest('hex')}`);
    // The order of the entries is the order of the names, whether or not a file was streamed.
    const names = Object.keys(fresh).filter((k) => k.startsWith('d5/'));
    expect(names).toEqual([...names].sort());
    expect(names.indexOf('d5/f10big')).toBe(names.indexOf('d5/f10') + 1);
  });

  it('takes an unchanged directory whole from its memo, and the files of a changed one from theirs', async () => {
    const ctx = makeContext();
    const first = await sum(ctx, ['.']);
    const d4 = join(ctx, 'd4');
    expect((JSON.parse(db.getChecksumDir(d4, 'd4')!.pieces) as string[])[0]).toContain('["d4/f4","file",420,0,0,4,"sha256:');
    // A file memo that still matches the file's stat is believed, but only read for a directory
    // whose stamp changed: until then the directory's memo speaks for it.
    const path = join(d4, 'f4');
    const memo = db.checksumsIn(d4).get(path)!;
    db.putChecksums([{ path, ...memo, sum: `sha256:${'0'.repeat(64)}` }]);
    expect(await sum(ctx, ['.'])).toBe(first);
    // A new time on a sibling changes the stamp (not the checksum): the file memos are read.
    utimesSync(join(d4, 'f5'), 5, 5);
    const files: Record<string, string> = {};
    expect(await sum(ctx, ['.'], [], files)).not.toBe(first);
    expect(files['d4/f4']).toContain(`sha256:${'0'.repeat(64)}`);
    // Once the file is written again, its stat no longer matches and it is hashed afresh.
    writeFileSync(path, '4 4\n');
    expect(await sum(ctx, ['.'])).toBe(first);
    // A directory memo whose stamp matches is believed too: proof that it is what the walk used.
    const d7 = db.getChecksumDir(join(ctx, 'd7'), 'd7')!;
    const pieces = (JSON.parse(d7.pieces) as string[]).map((p) => p.replace('"d7/f3"', '"d7/f3-not"'));
    db.putChecksums([], [{ ...d7, pieces: JSON.stringify(pieces) }]);
    const believed: Record<string, string> = {};
    await sum(ctx, ['.'], [], believed);
    expect(believed['d7/f3-not']).toBeDefined();
    // Added and removed files change the stamp; so does an exclusion that leaves a file out.
    writeFileSync(join(ctx, 'd7/new'), 'new\n');
    const added: Record<string, string> = {};
    await sum(ctx, ['.'], [], added);
    expect(added['d7/f3']).toBeDefined();
    expect(added['d7/new']).toBeDefined();
    rmSync(join(ctx, 'd7/new'));
    expect(await sum(ctx, ['.'])).toBe(first);
    const ignoring = await sum(ctx, ['.'], ['d2/f1*']);
    expect(ignoring).not.toBe(first);
    expect(await sum(ctx, ['.'])).toBe(first);
    expect(await sum(ctx, ['.'], ['d2/f1*'])).toBe(ignoring);
  });

  it('reads the file memos of one directory, not those below it or of a sibling sharing its name as a prefix', () => {
    const row = (path: string) => ({ path, dev: 1, ino: 2, size: 3, mtimeNs: '4', ctimeNs: '5', sum: `sha256:${'1'.repeat(64)}` });
    db.putChecksums([row('/c/ctx/a'), row('/c/ctx/sub'), row('/c/ctx/sub/b'), row('/c/ctx-b/a'), row('/c/ctx0/a'), row('/c/ctx'), row('/c/ctxa/a'), row('/c/ct/x')]);
    expect([...db.checksumsIn('/c/ctx').keys()].sort()).toEqual(['/c/ctx/a', '/c/ctx/sub']);
    expect([...db.checksumsIn('/c/ctx/').keys()].sort()).toEqual(['/c/ctx/a', '/c/ctx/sub']);
    expect([...db.checksumsIn('/c/ctx/sub').keys()]).toEqual(['/c/ctx/sub/b']);
    expect(db.checksumsIn('/c/none').size).toBe(0);
  });

  it('covers extended attributes of files and directories, also when the rest comes from the memo', async () => {
    const ctx = makeContext();
    const files: Record<string, string> = {};
    const first = await sum(ctx, ['.'], [], files);
    const plain = files['d3/f7']!;
    setAttributeSync(join(ctx, 'd3/f7'), 'user.note', 'a');
    const withFile = await sum(ctx, ['.'], [], files);
    expect(withFile).not.toBe(first);
    expect(files['d3/f7']).toMatch(new RegExp(`^${plain} xattrs:sha256:[0-9a-f]{64}$`));
    expect(await sum(ctx, ['.'])).toBe(withFile);
    setAttributeSync(join(ctx, 'd3/f7'), 'user.note', 'b');
    const changed = await sum(ctx, ['.']);
    expect(changed).not.toBe(withFile);
    removeAttributeSync(join(ctx, 'd3/f7'), 'user.note');
    expect(await sum(ctx, ['.'])).toBe(first);
    setAttributeSync(join(ctx, 'd6'), 'user.dir', 'x');
    const withDir = await sum(ctx, ['.'], [], files);
    expect(withDir).not.toBe(first);
    expect(files['d6']).toMatch(/^dir 755 0:0 0 xattrs:sha256:[0-9a-f]{64}$/);
    // The same directory as the selection itself (its memo read on its own).
    const alone = await sum(ctx, ['d6']);
    removeAttributeSync(join(ctx, 'd6'), 'user.dir');
    expect(await sum(ctx, ['d6'])).not.toBe(alone);
    expect(await sum(ctx, ['.'])).toBe(first);
  });

  it('memoises nothing changed within RACY_MS: such a file is hashed again, its directory walked again', async () => {
    const ctx = makeContext();
    const exclusion = exclusionFor([]);
    const now = async (at: number) => (await checksumSelections(db, await selectSources(ctx, ['.'], exclusion, 'the build context'), exclusion, ctx, at)).sum;
    const first = await now(Date.now());
    expect(db.getChecksum(join(ctx, 'd3/f7'))).toBeUndefined();
    expect(db.getChecksumDir(join(ctx, 'd3'), 'd3')).toBeUndefined();
    // A change within the same timestamp tick would keep the stat: nothing was kept to trust.
    expect(await now(Date.now())).toBe(first);
    // Old enough: memoised, file and directory.
    expect(await now(Date.now() + RACY_MS + 1000)).toBe(first);
    expect(db.getChecksum(join(ctx, 'd3/f7'))).toBeDefined();
    expect(db.getChecksumDir(join(ctx, 'd3'), 'd3')).toBeDefined();
    // A recent edit replaces neither the file's memo nor its directory's stamp.
    const keptStamp = db.getChecksumDir(join(ctx, 'd3'), 'd3')!.stamp;
    const keptRow = db.getChecksum(join(ctx, 'd3/f8'))!;
    writeFileSync(join(ctx, 'd3/f8'), 'eight\n');
    const edited = await now(Date.now());
    expect(edited).not.toBe(first);
    expect(db.getChecksum(join(ctx, 'd3/f8'))).toEqual(keptRow);
    expect(db.getChecksumDir(join(ctx, 'd3'), 'd3')!.stamp).toBe(keptStamp);
    // Settled, the edit is memoised.
    expect(await now(Date.now() + RACY_MS + 1000)).toBe(edited);
    expect(db.getChecksum(join(ctx, 'd3/f8'))).not.toEqual(keptRow);
    expect(db.getChecksumDir(join(ctx, 'd3'), 'd3')!.stamp).not.toBe(keptStamp);
  });

  it('forgets the memo of a store from before attributes were covered', () => {
    const path = join(tmp, 'kiln.db');
    db.putChecksums([{ path: '/c/f', dev: 1, ino: 2, size: 3, mtimeNs: '4', ctimeNs: '5', sum: `sha256:${'1'.repeat(64)}` }]);
    db.close();
    db = new StoreDb(path);
    expect(db.getChecksum('/c/f')).toBeDefined();
    db.close();
    const raw = new Database(path);
    raw.pragma('user_version = 4');
    raw.close();
    db = new StoreDb(path);
    expect(db.getChecksum('/c/f')).toBeUndefined();
  });
});

describe('layer rows without a blob', () => {
  const d = (c: string) => parseDigest(`sha256:${c.repeat(64)}`);
  const raw = (diffId: string) => {
    const r = new Database(join(tmp, 'kiln.db'), { readonly: true });
    try {
      return (r.prepare('SELECT blob FROM layers WHERE diff_id = ?').get(diffId) as { blob: string }).blob;
    } finally {
      r.close();
    }
  };

  it('are stored as a digest no content has, filled in by a blob, never emptied by another', () => {
    db.putLayer({ diffId: d('a'), blob: null, blobSize: 0, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    expect(db.getLayer(d('a'))?.blob).toBeNull();
    expect(raw(d('a'))).toBe(d('0'));
    db.putLayer({ diffId: d('a'), blob: d('b'), blobSize: 5, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    db.putLayer({ diffId: d('a'), blob: null, blobSize: 0, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    expect(db.getLayer(d('a'))).toMatchObject({ blob: d('b'), blobSize: 5 });
    expect(db.allLayers().map((l) => l.blob)).toEqual([d('b')]);
  });

  it("of a version-7 store, written '', are converted (an older GC takes '' for the blob directory)", () => {
    db.close();
    const w = new Database(join(tmp, 'kiln.db'));
    w.prepare("INSERT INTO layers (diff_id, blob, blob_size, media_type, created) VALUES (?, '', 0, 'x', 0)").run(d('c'));
    w.pragma('user_version = 7');
    w.close();
    db = new StoreDb(join(tmp, 'kiln.db'));
    expect(db.getLayer(d('c'))?.blob).toBeNull();
    expect(raw(d('c'))).toBe(d('0'));
  });
});
