import { spawn } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DANGLING_GRACE_MS, prune } from '../../cache/gc.js';
import { processStart } from '../../cache/lease.js';
import { Store } from '../../cache/store.js';
import { kiln, stepCached, stepNumber, stepRan, storeAndContext } from '../helpers/kiln.js';

const DOCKERFILE = `FROM test/base:1 AS build
COPY app.txt /app.txt
RUN --mount=type=cache,target=/cache echo built >> /cache/n; cat /app.txt > /out; head -c 200000 /dev/urandom > /big

FROM test/base:1
COPY --from=build /out /out
`;

describe('du, prune, store verify and --explain, end to end', () => {
  let root: string, ctx: string, cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-gc-'));
    writeFileSync(join(ctx, 'app.txt'), 'v1\n');
    writeFileSync(join(ctx, 'Dockerfile'), DOCKERFILE);
    const r = await kiln(root, ['build', '-q', '-t', 'test/gc:1', ctx]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(() => cleanup?.());

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

  it('names SOURCE_DATE_EPOCH on the miss line when it is set or changed, and takes it as consumed', async () => {
    expect((await kiln(root, ['build', '-q', ctx])).code).toBe(0);
    const first = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'SOURCE_DATE_EPOCH=1000', ctx]);
    expect(first.code, first.stderr).toBe(0);
    const copy = stepNumber(first.stderr, 'COPY app.txt');
    expect(first.stderr).toContain(`#${copy} cache miss: SOURCE_DATE_EPOCH changed (unset → 1000)\n`);
    expect(first.stderr).not.toContain('not consumed');
    const second = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'SOURCE_DATE_EPOCH=2000', ctx]);
    expect(second.stderr).toContain(`#${stepNumber(second.stderr, 'COPY app.txt')} cache miss: SOURCE_DATE_EPOCH changed (1000 → 2000)\n`);
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

describe('untagged images and unpacked sizes in GC', () => {
  let root: string, ctx: string, cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, cleanup } = await storeAndContext('kiln-gc-dangling-'));
  });

  afterAll(() => cleanup?.());

  /** Builds `RUN echo NAME > /NAME` plus a compressible 3 MB file; returns the image ID. */
  async function build(name: string, tags: string[] = []): Promise<string> {
    writeFileSync(join(ctx, 'Dockerfile'), `FROM test/base:1\nRUN echo ${name} > /${name} && head -c 3000000 /dev/zero > /zeros-${name}\n`);
    const r = await kiln(root, ['build', '-q', ...tags.flatMap((t) => ['-t', t]), ctx]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout.trim();
  }

  const imageIds = async () => (await kiln(root, ['images', '-q', '--no-trunc'])).stdout.split('\n').filter(Boolean);

  /** Runs `fn` with the store opened in this process. */
  async function withStore<T>(fn: (store: Store) => Promise<T>): Promise<T> {
    const store = await Store.open(root);
    try {
      return await fn(store);
    } finally {
      store.close();
    }
  }

  it('records the unpacked size of a layer it makes, and --keep-storage counts it', async () => {
    await build('sized', ['test/sized:1']);
    const rows = await withStore(async (store) => store.db.db.prepare('SELECT blob_size AS blob, unpacked_size AS unpacked FROM layers WHERE unpacked_size > 3000000').all() as { blob: number; unpacked: number }[]);
    // The 3 MB of zeros compress to a few kilobytes: only the unpacked size tells what the layer takes.
    expect(rows).toHaveLength(1);
    expect(rows[0]!.blob).toBeLessThan(100_000);
    // Untagged, the record's layer is build cache: 2 MB of room is too little for its 3 MB.
    expect((await kiln(root, ['rmi', 'test/sized:1'])).code).toBe(0);
    const r = await kiln(root, ['prune', '-f', '--keep-storage', '2MB']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('RUN echo sized');
    expect(r.stdout).toMatch(/Total reclaimed space: [3-9]\.\d+MB/);
  });

  it('an untagged image is kept for an hour, then collected with what only it needs; tagged images never', async () => {
    const untagged = await build('untagged');
    const old = await build('moved', ['test/moving:1']);
    const current = await build('current', ['test/moving:1']);
    expect(new Set([untagged, old, current]).size).toBe(3);
    expect(await imageIds()).toEqual(expect.arrayContaining([untagged, old, current]));

    // Within the grace period a plain prune keeps them: `ID=$(kiln build -q .)` must stay usable.
    expect((await kiln(root, ['prune', '-f'])).code).toBe(0);
    expect(await imageIds()).toEqual(expect.arrayContaining([untagged, old]));
    expect((await kiln(root, ['run', '--rm', untagged, 'cat', '/untagged'])).stdout).toBe('untagged\n');

    // While another live process holds a lease, nothing untagged goes, however old.
    const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      const later = Date.now() + DANGLING_GRACE_MS + 60_000;
      await withStore(async (store) => {
        store.db.addLease({ id: 'test-live', pid: sleeper.pid!, pidStart: processStart(sleeper.pid!)!, kind: 'dir', target: join(root, 'tmp', 'nothing') });
        const busy = await prune(store, { now: later });
        expect(busy.images).toBe(0);
        store.db.removeLease('test-live');
      });
    } finally {
      sleeper.kill('SIGKILL');
    }

    const layersBefore = readdirSync(join(root, 'layers')).filter((n) => /^[a-f0-9]{64}$/.test(n)).length;
    const result = await withStore((store) => prune(store, { now: Date.now() + DANGLING_GRACE_MS + 60_000 }));
    expect(result.images).toBe(2);
    expect(result.removed).toEqual(expect.arrayContaining([`${untagged.slice(7, 19)}  untagged image`, `${old.slice(7, 19)}  untagged image`]));
    // Their RUN records and layers (blob and directory) went with them; the tagged image's stayed.
    expect(result.records).toBeGreaterThanOrEqual(2);
    expect(readdirSync(join(root, 'layers')).filter((n) => /^[a-f0-9]{64}$/.test(n)).length).toBe(layersBefore - 2);
    expect(result.freed).toBeGreaterThan(6_000_000);
    const ids = await imageIds();
    expect(ids).not.toContain(untagged);
    expect(ids).not.toContain(old);
    expect(ids).toContain(current);
    expect(existsSync(join(root, 'blobs', 'sha256', untagged.slice(7)))).toBe(false);
    expect((await kiln(root, ['run', '--rm', 'test/moving:1', 'cat', '/current'])).stdout).toBe('current\n');
    expect((await kiln(root, ['run', '--rm', 'test/base:1', 'true'])).code).toBe(0);
    const verify = await kiln(root, ['store', 'verify']);
    expect(verify.code, verify.stdout).toBe(0);
  });
});
