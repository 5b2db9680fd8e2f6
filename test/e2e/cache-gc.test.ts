import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, stepCached, stepNumber, stepRan, storeWithBase, tempDir } from '../helpers/kiln.js';

const DOCKERFILE = `FROM test/base:1 AS build
COPY app.txt /app.txt
RUN --mount=type=cache,target=/cache echo built >> /cache/n; cat /app.txt > /out; head -c 200000 /dev/urandom > /big

FROM test/base:1
COPY --from=build /out /out
`;

describe('du, prune, store verify and --explain, end to end', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let ctx: string;

  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
    work = tempDir('kiln-gc-');
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'app.txt'), 'v1\n');
    writeFileSync(join(ctx, 'Dockerfile'), DOCKERFILE);
    const r = await kiln(root, ['build', '-q', '-t', 'test/gc:1', ctx]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    await work?.cleanup();
    await cleanup();
  });

  it('du lists records, shared or not, the cache mount, and the totals', async () => {
    const du = await kiln(root, ['du']);
    expect(du.code, du.stderr).toBe(0);
    const line = (pattern: string) => du.stdout.split('\n').find((l) => l.includes(pattern)) ?? '';
    // The build stage's RUN layer is in no image: reclaimable. The final COPY's layer is the image's.
    expect(line('[build 3/3] RUN')).toMatch(/\bcache\s+\S+\s+.*\bfalse\s+true\s+/);
    expect(line('[stage-1 2/2] COPY')).toMatch(/\btrue\s+false\s+/);
    expect(line('cache mount id=/cache')).toMatch(/^\S+\s+cache-mount\s+/);
    expect(du.stdout).toMatch(/^Reclaimable:\s+\d/m);
    expect(du.stdout).toMatch(/^Total:\s+\d/m);
  });

  it('prune asks unless -f, removes only what no image needs, and the image still runs', async () => {
    const refused = await kiln(root, ['prune']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('Refusing to prune without confirmation');
    const recent = await kiln(root, ['prune', '-f', '--filter', 'until=1h']);
    expect(recent.stdout).not.toContain('Deleted');
    const pruned = await kiln(root, ['prune', '-f']);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain('[build 3/3] RUN');
    expect(pruned.stdout).not.toContain('COPY --from=build');
    expect(pruned.stdout).toMatch(/Total reclaimed space: [1-9]/);
    expect((await kiln(root, ['run', '--rm', 'test/gc:1', 'cat', '/out'])).stdout).toBe('v1\n');
    expect((await kiln(root, ['store', 'verify'])).code).toBe(0);
    // The pruned step runs again and says why; the step after it keeps its cache.
    const again = await kiln(root, ['build', '--progress', 'plain', ctx]);
    const n = stepNumber(again.stderr, 'RUN --mount');
    expect(again.stderr).toContain(`#${n} cache miss: the cached result was pruned`);
    expect(stepCached(again.stderr, 'COPY --from=build')).toBe(true);
  });

  it('--explain reports every step; a changed file is named on the miss line', async () => {
    writeFileSync(join(ctx, 'app.txt'), 'v2\n');
    try {
      const r = await kiln(root, ['build', '--progress', 'plain', '--explain', ctx]);
      expect(r.code, r.stderr).toBe(0);
      const copy = stepNumber(r.stderr, 'COPY app.txt');
      const run = stepNumber(r.stderr, 'RUN --mount');
      expect(r.stderr).toContain(`#${copy} cache miss: file "app.txt" changed\n`);
      expect(r.stderr).toContain(`#${run} cache miss: input step #${copy} changed\n`);
      expect(r.stderr).toMatch(/^Cache report:$/m);
      expect(r.stderr).toContain(`#${copy} [build 2/3] COPY app.txt /app.txt: ran\n    - file "app.txt" changed\n`);
      expect(stepRan(r.stderr, 'COPY --from=build')).toBe(true);
    } finally {
      writeFileSync(join(ctx, 'app.txt'), 'v1\n');
    }
  });

  it('prune --all removes cache mounts and every record; --keep-storage keeps the newest', async () => {
    await kiln(root, ['build', '-q', ctx]);
    const keep = await kiln(root, ['prune', '-f', '--keep-storage', '100GB']);
    expect(keep.stdout).not.toContain('Deleted');
    const all = await kiln(root, ['prune', '-a', '-f']);
    expect(all.stdout).toContain('cache mount id=/cache');
    const du = await kiln(root, ['du']);
    expect(du.stdout).toMatch(/^Records:\s+0$/m);
    expect(readdirSync(join(root, 'cache-mounts'))).toEqual([]);
    expect((await kiln(root, ['run', '--rm', 'test/gc:1', 'cat', '/out'])).stdout).toBe('v1\n');
    expect((await kiln(root, ['store', 'verify'])).code).toBe(0);
  });

  it('after a build, the automatic collection keeps the build cache under KILN_GC_KEEP_STORAGE', async () => {
    writeFileSync(join(ctx, 'app.txt'), 'v3\n');
    try {
      const r = await kiln(root, ['build', '--progress', 'plain', '-t', 'test/gc:3', ctx], { env: { KILN_GC_KEEP_STORAGE: '1kB' } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/^Removed [1-9]\d* cache records and \d+ cache mounts to keep the build cache within its limit$/m);
      expect((await kiln(root, ['du'])).stdout).not.toContain('[build 3/3] RUN');
      expect((await kiln(root, ['run', '--rm', 'test/gc:3', 'cat', '/out'])).stdout).toBe('v3\n');
    } finally {
      writeFileSync(join(ctx, 'app.txt'), 'v1\n');
    }
  });

  it('store verify reports a corrupt blob and a missing one, and exits 1', async () => {
    const r = await kiln(root, ['build', '-q', '-t', 'test/gc:2', ctx]);
    expect(r.code).toBe(0);
    const blobs = join(root, 'blobs', 'sha256');
    const names = readdirSync(blobs);
    const victim = join(blobs, names[0]!);
    chmodSync(victim, 0o644);
    writeFileSync(victim, 'not what it was');
    rmSync(join(blobs, names[1]!));
    const v = await kiln(root, ['store', 'verify']);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain(`problem: Blob "sha256:${names[0]}" has 15 bytes`);
    expect(v.stdout).toContain(`problem: Blob "sha256:${names[1]}" is recorded but its file is missing`);
    expect(v.stderr).toMatch(/^error: The store at ".*" has \d+ problems$/m);
  });
});
