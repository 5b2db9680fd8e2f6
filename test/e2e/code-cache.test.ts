import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, kiln, tempDir } from '../helpers/kiln.js';
// The launcher's own naming, so that the test looks at the file Kiln reads.
import { cacheFile } from '../../bin/code-cache.cjs';

const CACHE = join(REPO, 'dist/bundle/.v8-cache');

/** The code cache file of the bundle's entry as it is now, named as bin/kiln.cjs names it. */
function entryCache(): string {
  const entry = join(REPO, 'dist/bundle/kiln.cjs');
  return cacheFile(join(REPO, 'dist/bundle'), entry, readFileSync(entry, 'utf8'));
}

/** Whether a cache file starts with the SHA-1 of the rest, as bin/kiln.cjs writes it. */
function intact(file: string): boolean {
  const raw = readFileSync(file);
  return raw.length > 20 && createHash('sha1').update(raw.subarray(20)).digest().equals(raw.subarray(0, 20));
}

/**
 * bin/kiln.cjs compiles the bundle's chunks with V8's code cache: made by a first run, checked
 * by its own checksum and by V8, and made again when damaged or refused. Other test files run
 * kiln meanwhile: a damaged cache must cost them a compile too, nothing else.
 */
describe('the code cache of the bundle', () => {
  const t = tempDir('kiln-code-cache-');
  const version = () => kiln(join(t.path, 'root'), ['version']);

  afterAll(() => t.cleanup());

  it('is written by a run and used by the next; a damaged or refused cache costs a compile, not the command', async () => {
    const first = await version();
    expect(first.code, first.stderr).toBe(0);
    const files = [entryCache()];
    expect(existsSync(files[0]!)).toBe(true);
    for (const f of files) expect(intact(f)).toBe(true);

    // A torn file: the checksum no longer matches. The run works and writes it again.
    for (const f of files) {
      const raw = readFileSync(f);
      raw[raw.length - 1] ^= 0xff;
      writeFileSync(f, raw);
    }
    const torn = await version();
    expect(torn.code, torn.stderr).toBe(0);
    expect(torn.stdout).toBe(first.stdout);
    for (const f of files) expect(intact(f)).toBe(true);

    // Whole and checksummed, but V8's data for another script: V8 refuses it, and the run works.
    const other = readdirSync(CACHE).find((n) => n.startsWith('chunk-'));
    expect(other).toBeDefined();
    for (const f of files) writeFileSync(f, readFileSync(join(CACHE, other!)));
    const refused = await version();
    expect(refused.code, refused.stderr).toBe(0);
    expect(refused.stdout).toBe(first.stdout);
    expect(refused.stderr).toBe('');
  });

  it("loads each chunk once, as Node's require would, when reached through a symbolic link", () => {
    // A link to the bundle, as a packaged install may have; the chunks load by real path.
    const link = join(t.path, 'bundle-link');
    symlinkSync(join(REPO, 'dist/bundle'), link);
    const script = `
      const Module = require('node:module');
      require(${JSON.stringify(join(REPO, 'bin/code-cache.cjs'))}).useCodeCache(${JSON.stringify(link)});
      require(${JSON.stringify(join(link, 'kiln.cjs'))}).main(['version']).then(() => {
        const chunks = Object.keys(Module._cache).filter((k) => k.includes('/chunk-'));
        // Required again by its real path from outside: the very module the bundle loaded.
        const same = chunks.every((k) => require(k) === Module._cache[k].exports);
        console.log(JSON.stringify({ chunks, same }));
      });
    `;
    // The entry's cache is made again by this run, so the run must have compiled it with one.
    rmSync(entryCache(), { force: true });
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: '' } });
    expect(r.status, r.stderr).toBe(0);
    const { chunks, same } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { chunks: string[]; same: boolean };
    expect(chunks.length).toBeGreaterThan(5);
    const real = realpathSync(join(REPO, 'dist/bundle'));
    for (const c of chunks) expect(c.startsWith(`${real}/chunk-`), c).toBe(true);
    expect(new Set(chunks).size).toBe(chunks.length);
    expect(same).toBe(true);
    // Each of them compiled with a cache this run wrote or read.
    expect(existsSync(entryCache())).toBe(true);
    for (const c of chunks) {
      if (readFileSync(c, 'utf8').includes('import(')) continue;
      expect(existsSync(cacheFile(real, c, readFileSync(c, 'utf8'))), c).toBe(true);
    }
  });
});
