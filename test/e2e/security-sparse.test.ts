import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, storeWithBase, tempDir } from '../helpers/kiln.js';

/**
 * Huge sparse files. An archive entry that GNU tar stored sparse (`-S`: the old GNU 'S' type and
 * the PAX formats 0.0, 0.1 and 1.0) of 20 GiB apparent size takes 10 KiB: its holes would have
 * to be written out in full, and the PAX formats were unpacked wrongly (a `GNUSparseFile.N/`
 * directory holding the map, or the data without its holes). Such entries are refused, by ADD
 * and by the layer reader, before anything is written. A sparse file in the build context is
 * copied as docker copies it, every byte, with memory that does not grow with its size.
 */
const SPARSE_FORMATS = [
  ['gnu', ['--format=gnu']],
  ['pax-0.0', ['--format=pax', '--sparse-version=0.0']],
  ['pax-0.1', ['--format=pax', '--sparse-version=0.1']],
  ['pax-1.0', ['--format=pax', '--sparse-version=1.0']],
] as const;

describe('huge sparse files', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let ctx: string;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-sec-sparse-')];
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    const src = join(work.path, 'src');
    mkdirSync(src);
    const big = join(src, 'big');
    writeFileSync(big, '');
    truncateSync(big, 20 * 1024 ** 3);
    appendFileSync(big, 'tail');
    for (const [name, flags] of SPARSE_FORMATS) execFileSync('tar', ['-S', ...flags, '-C', src, '-cf', join(ctx, `${name}.tar`), 'big']);
    execFileSync('rm', [big]);
  });

  afterAll(async () => {
    await store?.cleanup();
    await work?.cleanup();
  });

  const storeClean = async () => {
    const verify = await kiln(store.root, ['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(readdirSync(join(store.root, 'tmp'))).toEqual([]);
  };

  for (const [name] of SPARSE_FORMATS) {
    it(`ADD of a ${name} sparse entry of 20 GiB is refused, naming the entry and the archive`, async () => {
      const df = join(work.path, `Dockerfile.${name}`);
      writeFileSync(df, `FROM test/base:1\nADD ${name}.tar /out/\n`);
      const r = await kiln(store.root, ['build', '--progress', 'plain', '-f', df, ctx]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain(`Cannot unpack "big" of "${name}.tar": it is a sparse file (GNU tar --sparse)`);
      expect(r.stderr).toMatch(/^hint: Make the archive without --sparse \(-S\)/m);
      await storeClean();
    });

    it(`kiln import of a ${name} sparse layer is refused, and stores nothing`, async () => {
      const r = await kiln(store.root, ['import', join(ctx, `${name}.tar`), `sparse/${name}:1`]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toContain('Layer archive entry "big" is a sparse file (GNU tar --sparse)');
      expect((await kiln(store.root, ['inspect', `sparse/${name}:1`])).code).toBe(1);
      await storeClean();
    });
  }

  it('COPY of a sparse 1 GiB context file copies every byte, in memory that does not grow with it', async () => {
    const dir = join(work.path, 'ctx-huge');
    mkdirSync(dir);
    const huge = join(dir, 'huge');
    writeFileSync(huge, '');
    truncateSync(huge, 1024 ** 3);
    appendFileSync(huge, 'end\n');
    writeFileSync(join(dir, 'Dockerfile'), 'FROM test/base:1\nCOPY huge /huge\n');
    const child = spawn(KILN, ['build', '-q', '-t', 'sparse/copy:1', dir], { env: { ...process.env, KILN_ROOT: store.root }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // The peak resident size of the kiln process, read while it runs (VmHWM only grows).
    let peakKb = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKb = Math.max(peakKb, Number(m[1]));
      } catch {
        // The process has just exited: its last reading stands.
      }
    }, 50);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearInterval(poll);
    expect(code, stderr).toBe(0);
    expect(peakKb).toBeGreaterThan(0);
    expect(peakKb).toBeLessThan(400 * 1024);
    const size = await kiln(store.root, ['run', '--rm', 'sparse/copy:1', 'sh', '-c', 'wc -c < /huge; tail -c 4 /huge; head -c 1048576 /huge | tr -d "\\0" | wc -c']);
    expect(size.stdout).toBe(`${1024 ** 3 + 4}\nend\n0\n`);
    await storeClean();
  }, 300_000);
});
