import { chmodSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeAndContext } from '../helpers/kiln.js';

/**
 * A blob damaged on disk is written again when the same content is made again, as pnpm's store
 * verifies a file that already exists instead of trusting its name.
 */
describe('the blob store repairs what it makes again', () => {
  let root: string;
  let ctx: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-blob-repair-'));
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo repaired > /r\n');
  });

  afterAll(async () => {
    await cleanup?.();
  });

  const blobs = () => readdirSync(join(root, 'blobs', 'sha256'));
  // SOURCE_DATE_EPOCH makes the layer, its config and manifest the same bytes on every build.
  const build = () => kiln(root, ['build', '-q', '--no-cache', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', '-t', 'repair/app:1', ctx]);

  it('corrupts the blobs of a build, builds the same content again, and the store verifies clean', async () => {
    const before = new Set(blobs());
    const first = await build();
    expect(first.code, first.stderr).toBe(0);
    const made = blobs().filter((b) => !before.has(b));
    expect(made.length).toBeGreaterThanOrEqual(2);
    for (const b of made) {
      const path = join(root, 'blobs', 'sha256', b);
      chmodSync(path, 0o644);
      writeFileSync(path, Buffer.alloc(statSync(path).size, 0x5a));
      chmodSync(path, 0o444);
    }
    const damaged = await kiln(root, ['store', 'verify']);
    expect(damaged.code).not.toBe(0);
    const again = await build();
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe(first.stdout);
    const verify = await kiln(root, ['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const run = await kiln(root, ['run', '--rm', 'repair/app:1', 'cat', '/r']);
    expect(run.stdout).toBe('repaired\n');
  });
});
