import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, REPO, storeWithBase, tempDir } from '../helpers/kiln.js';

describe('layers a build makes', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let out: ReturnType<typeof tempDir>;
  let config: { rootfs: { diff_ids: string[] }; history: { created_by: string; empty_layer?: boolean }[] };
  let log: string;

  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
    out = tempDir();
    const tar = join(out.path, 'img.tar');
    const r = await kiln(root, ['build', '--progress', 'plain', '-o', `type=oci,dest=${tar}`, join(REPO, 'fixtures/layers')]);
    log = r.stderr;
    expect(r.code, r.stderr).toBe(0);
    config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${tar}`], { encoding: 'utf8' }));
  });
  afterAll(async () => {
    await out.cleanup();
    await cleanup();
  });

  it('a step that changes nothing adds no layer: mount points made for the run are not changes', () => {
    const runTrue = config.history.find((h) => h.created_by.startsWith('RUN /bin/sh -c true'));
    expect(runTrue?.empty_layer).toBe(true);
    const runCat = config.history.find((h) => h.created_by.startsWith('RUN /bin/sh -c cat /f'));
    expect(runCat?.empty_layer).toBe(true);
  });

  it('the same layer twice in a chain mounts and runs (overlayfs refuses a repeated lowerdir)', () => {
    // base + echo + rm + echo again: the two echo layers are identical.
    expect(config.rootfs.diff_ids).toHaveLength(4);
    expect(config.rootfs.diff_ids[1]).toBe(config.rootfs.diff_ids[3]);
    expect(log).toMatch(/^#\d+ \d+\.\d+ same$/m);
  });
});

/**
 * A stage that other stages only copy from: its layers are kept as directories, not compressed
 * into blobs, until an image or an exported cache needs them; then the blob is made from the
 * directory and gives the same diff id.
 */
describe('layers of stages no image holds', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let ctx: string;
  const query = <T>(sql: string, ...args: unknown[]): T | undefined => {
    const db = new Database(join(root, 'kiln.db'), { readonly: true });
    try {
      return db.prepare(sql).get(...args) as T | undefined;
    } finally {
      db.close();
    }
  };
  const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
  /** The layer the builder stage's RUN made, by its cache record. */
  const builderLayer = () => query<{ diffId: string }>("SELECT diff_id AS diffId FROM cache WHERE description LIKE '[builder 2/2] RUN %'")!.diffId;
  const layerRow = (diffId: string) => query<{ blob: string; size: number }>('SELECT blob, blob_size AS size FROM layers WHERE diff_id = ?', diffId);

  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
    work = tempDir();
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1 AS builder\nRUN mkdir /out && echo built > /out/app && echo scratch > /junk\nFROM test/base:1\nCOPY --from=builder /out /out\n');
    const r = await kiln(root, ['build', '-t', 'stages/final:1', ctx]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await work?.cleanup();
    await cleanup?.();
  });

  it('the builder stage made its layer without a blob, and the image built on it is whole', async () => {
    // NO_BLOB in cache/db.ts: a digest no content has, never '' (an older Kiln's GC would take
    // the path of '' for the blob directory).
    expect(layerRow(builderLayer())).toEqual({ blob: `sha256:${'0'.repeat(64)}`, size: 0 });
    expect(existsSync(join(root, 'blobs/sha256', '0'.repeat(64)))).toBe(false);
    const run = await kiln(root, ['run', '--rm', 'stages/final:1', 'cat', '/out/app']);
    expect(run.stdout).toBe('built\n');
    expect((await kiln(root, ['store', 'verify'])).stdout).toContain('no problems');
  });

  it('an image of that stage gets the blob, made from the directory with the same diff id', async () => {
    const tar = join(work.path, 'builder.tar');
    const r = await kiln(root, ['build', '--progress', 'plain', '--target', 'builder', '-t', 'stages/builder:1', '-o', `type=oci,dest=${tar}`, ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/RUN mkdir \/out.*\n#\d+ CACHED/);
    const config = JSON.parse(sh('skopeo', ['inspect', '--config', `oci-archive:${tar}`])) as { rootfs: { diff_ids: string[] } };
    expect(config.rootfs.diff_ids.at(-1)).toBe(builderLayer());
    const row = layerRow(builderLayer());
    expect(row?.blob).toMatch(/^sha256:[0-9a-f]{64}$/);
    const blob = readFileSync(join(root, 'blobs/sha256', row!.blob.slice(7)));
    expect(`sha256:${createHash('sha256').update(gunzipSync(blob)).digest('hex')}`).toBe(builderLayer());
    expect(row!.size).toBe(blob.length);
    // The exported image unpacks to the stage's files (umoci checks every digest it reads).
    const layout = join(work.path, 'layout');
    mkdirSync(layout);
    sh('tar', ['-xf', tar, '-C', layout]);
    sh('umoci', ['unpack', '--image', `${layout}:1`, join(work.path, 'bundle')]);
    expect(readFileSync(join(work.path, 'bundle/rootfs/junk'), 'utf8')).toBe('scratch\n');
    expect((await kiln(root, ['store', 'verify'])).stdout).toContain('no problems');
  });

  it('GC removes such a layer with its directory, and no blob with it', async () => {
    const other = await storeWithBase();
    try {
      const r = await kiln(other.root, ['build', '-q', ctx]);
      expect(r.code, r.stderr).toBe(0);
      const blobs = () => readdirSync(join(other.root, 'blobs/sha256')).sort();
      const before = blobs();
      const prune = await kiln(other.root, ['prune', '-a', '-f']);
      expect(prune.code, prune.stderr).toBe(0);
      expect(existsSync(join(other.root, 'blobs/sha256'))).toBe(true);
      expect(blobs().every((b) => before.includes(b))).toBe(true);
      expect((await kiln(other.root, ['store', 'verify'])).stdout).toContain('no problems');
      expect((await kiln(other.root, ['run', '--rm', 'test/base:1', 'true'])).code).toBe(0);
    } finally {
      await other.cleanup();
    }
  });
});
