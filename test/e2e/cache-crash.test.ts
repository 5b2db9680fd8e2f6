import { execFileSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, stepCached, storeAndContext, type TempDir } from '../helpers/kiln.js';

/**
 * kill -9 at chosen instants (KILN_CRASH_AT makes the process kill itself there), then the next
 * command: the store verifies, nothing of the dead build is left, and everything committed
 * before the kill is whole and still a cache hit.
 */
describe('crash safety and concurrent builds', () => {
  let root: string, ctx: string, work: TempDir, cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ root, ctx, work, cleanup } = await storeAndContext('kiln-crash-'));
    writeFileSync(join(ctx, 'data.txt'), 'data\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nCOPY data.txt /data.txt\nRUN echo committed > /c\n');
    const ok = await kiln(root, ['build', '-q', '-t', 'test/committed:1', ctx]);
    expect(ok.code, ok.stderr).toBe(0);
  });

  afterAll(() => cleanup?.());

  const crashFile = (n: string) => {
    const f = join(work.path, `Dockerfile.${n}`);
    writeFileSync(f, `FROM test/base:1\nCOPY data.txt /data.txt\nRUN echo started; echo ${n} > /crash-${n}\n`);
    return f;
  };

  for (const point of ['run', 'blob-write', 'snapshot', 'index-commit']) {
    it(`a build killed at "${point}" leaves a store that verifies, with committed work intact`, async () => {
      const dead = await kiln(root, ['build', '--progress', 'plain', '-f', crashFile(point), ctx], { env: { KILN_CRASH_AT: point } });
      expect(dead.code, dead.stderr).toBe(128);
      const verify = await kiln(root, ['store', 'verify']);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      expect(verify.stdout).toContain('no problems');
      expect(mountsUnder(root)).toEqual([]);
      expect(ourContainers(root)).toEqual([]);
      expect(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
      expect(readdirSync(join(root, 'tmp'))).toEqual([]);
      const run = await kiln(root, ['run', '--rm', 'test/committed:1', 'cat', '/c', '/data.txt']);
      expect(run.stdout).toBe('committed\ndata\n');
      const again = await kiln(root, ['build', '--progress', 'plain', ctx]);
      expect(again.code).toBe(0);
      expect(stepCached(again.stderr, 'RUN echo committed')).toBe(true);
      // And the step that was killed simply runs again.
      const redo = await kiln(root, ['build', '--progress', 'plain', '-f', crashFile(point), ctx]);
      expect(redo.code, redo.stderr).toBe(0);
    });
  }

  // A stage other stages only copy from keeps its layer as a directory, without a blob: killed
  // before the directory is in place, or after it but before its index row.
  for (const point of ['snapshot', 'layer-row']) {
    it(`a build killed at "${point}" of a stage no image holds leaves a store that verifies`, async () => {
      const f = join(work.path, `Dockerfile.stage-${point}`);
      writeFileSync(f, `FROM test/base:1 AS s\nRUN echo ${point} > /only-${point}\nFROM test/base:1\nCOPY --from=s /only-${point} /copied\n`);
      const dead = await kiln(root, ['build', '--progress', 'plain', '-f', f, ctx], { env: { KILN_CRASH_AT: point } });
      expect(dead.code, dead.stderr).toBe(128);
      const verify = await kiln(root, ['store', 'verify']);
      expect(verify.code, verify.stdout + verify.stderr).toBe(0);
      expect(verify.stdout).toContain('no problems');
      expect(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
      // Recovery sweeps a layer directory the dead build left without a row (after the grace
      // period only while other work is live; none is).
      const prune = await kiln(root, ['prune', '-f']);
      expect(prune.code, prune.stderr).toBe(0);
      const redo = await kiln(root, ['build', '--progress', 'plain', '-t', `test/stage-${point}:1`, '-f', f, ctx]);
      expect(redo.code, redo.stderr).toBe(0);
      const run = await kiln(root, ['run', '--rm', `test/stage-${point}:1`, 'cat', '/copied']);
      expect(run.stdout).toBe(`${point}\n`);
      expect((await kiln(root, ['store', 'verify'])).stdout).toContain('no problems');
    });
  }

  it('two builds on one store at once both succeed, and a third reuses what they made', async () => {
    const df = join(work.path, 'Dockerfile.both');
    writeFileSync(df, 'FROM test/base:1\nCOPY data.txt /d\nRUN sleep 0.5; echo both > /both\nRUN --mount=type=cache,target=/cache,sharing=locked echo x >> /cache/log\n');
    const [a, b] = await Promise.all([
      kiln(root, ['build', '--progress', 'plain', '-t', 'test/both:a', '-f', df, ctx]),
      kiln(root, ['build', '--progress', 'plain', '-t', 'test/both:b', '-f', df, ctx]),
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const third = await kiln(root, ['build', '--progress', 'plain', '-f', df, ctx]);
    expect(stepCached(third.stderr, 'RUN sleep 0.5')).toBe(true);
    for (const tag of ['test/both:a', 'test/both:b']) {
      expect((await kiln(root, ['run', '--rm', tag, 'cat', '/both'])).stdout).toBe('both\n');
    }
    expect((await kiln(root, ['store', 'verify'])).code).toBe(0);
  });
});

function ourContainers(root: string): string[] {
  const list = JSON.parse(execFileSync('runc', ['list', '-f', 'json'], { encoding: 'utf8' }) || '[]') as { id: string; bundle: string }[] | null;
  return (list ?? []).filter((c) => c.bundle.startsWith(root)).map((c) => c.id);
}
