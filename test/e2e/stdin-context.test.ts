import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, stepCached, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type Served, startServe } from './serve-helpers.js';

type Entry = { name: string; body?: string; type?: 'file' | 'directory' };

async function tarOf(entries: readonly Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mode: 0o755 });
    else pack.entry({ name: e.name, mode: 0o644 }, e.body ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * `kiln build -` as `docker build -` takes it: standard input is a context archive (its
 * Dockerfile inside, `-f` a path in it) or a Dockerfile with no context, locally and with --host.
 */
describe('kiln build -: the context or the Dockerfile on standard input', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let archive: Buffer;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-stdin-')];
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
    archive = await tarOf([
      { name: 'Dockerfile', body: 'FROM test/base:1\nCOPY app.txt /app.txt\nRUN cat /app.txt > /seen\n' },
      { name: 'app.txt', body: 'from the archive\n' },
      { name: 'docker', type: 'directory' },
      { name: 'docker/Other', body: 'FROM test/base:1\nCOPY . /all\n' },
      { name: '.dockerignore', body: 'secret.txt\n' },
      { name: 'secret.txt', body: 'left out\n' },
    ]);
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  const local = (args: string[], input: string | Buffer) => kiln(store.root, ['build', ...args, '-'], { input });
  const remote = (args: string[], input: string | Buffer) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'build', ...args, '-'], { input });
  const cat = async (image: string, ...paths: string[]) => (await kiln(store.root, ['run', '--rm', image, 'cat', ...paths])).stdout;
  /**
   * Context directories left in the store. The server removes an upload's just after it has sent
   * the result (so the client is not kept waiting for it): give that a few seconds to happen.
   */
  const leftovers = async () => {
    const list = () => readdirSync(join(store.root, 'tmp')).filter((n) => n.startsWith('context-'));
    for (let i = 0; i < 50 && list().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    return list();
  };

  it('builds a tar on standard input with its Dockerfile, plain or gzip, and reuses its cache', async () => {
    const r = await local(['-q'], archive);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(await cat(id, '/seen')).toBe('from the archive\n');
    const again = await local(['--progress', 'plain'], gzipSync(archive));
    expect(again.code, again.stderr).toBe(0);
    expect(stepCached(again.stderr, 'COPY app.txt /app.txt'), again.stderr).toBe(true);
    // Through a build service: the archive goes as it is, and the image is the same one.
    const served = await remote(['-q'], archive);
    expect(served.code, served.stderr).toBe(0);
    expect(served.stdout.trim()).toBe(id);
    expect(await leftovers()).toEqual([]);
  });

  it('takes -f as a path inside the archive, and applies the archive’s .dockerignore', async () => {
    const r = await local(['-q', '-f', 'docker/Other'], archive);
    expect(r.code, r.stderr).toBe(0);
    const listing = (await kiln(store.root, ['run', '--rm', r.stdout.trim(), 'ls', '-a', '/all'])).stdout.split('\n');
    expect(listing).toContain('app.txt');
    expect(listing).not.toContain('secret.txt');
    const remoteId = await remote(['-q', '-f', 'docker/Other'], archive);
    expect(remoteId.stdout.trim(), remoteId.stderr).toBe(r.stdout.trim());
    for (const run of [local, remote]) {
      const out = await run(['-q', '-f', '../Dockerfile'], archive);
      expect(out.code).toBe(1);
      expect(out.stderr).toContain('"-f ../Dockerfile" must name a file inside the context archive on standard input');
    }
  });

  it('builds a Dockerfile on standard input with an empty context', async () => {
    for (const run of [local, remote]) {
      const r = await run(['-q'], 'FROM test/base:1\nRUN echo no context > /n\n');
      expect(r.code, r.stderr).toBe(0);
      expect(await cat(r.stdout.trim(), '/n')).toBe('no context\n');
      const copy = await run(['-q'], 'FROM test/base:1\nCOPY app.txt /app.txt\n');
      expect(copy.code).toBe(1);
      expect(copy.stderr).toContain('Source "app.txt" not found in the build context');
      const named = await run(['-q', '-f', 'Dockerfile'], 'FROM test/base:1\n');
      expect(named.code).toBe(2);
      expect(named.stderr).toContain('"-f Dockerfile" names a Dockerfile inside a context archive, but standard input held a Dockerfile');
    }
    expect(await leftovers()).toEqual([]);
  });

  it('refuses both from standard input, other compressions and archives that climb out', async () => {
    for (const run of [local, remote]) {
      const both = await run(['-f', '-'], 'FROM test/base:1\n');
      expect(both.code).toBe(2);
      expect(both.stderr).toContain('The context ("-") and the Dockerfile ("-f -") cannot both come from standard input');
      // An xz stream's magic, then anything: the first bytes tell.
      const xz = await run(['-q'], Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), archive]));
      expect(xz.code).toBe(1);
      expect(xz.stderr).toContain('The build context on standard input is compressed with xz');
      // Cut inside the first file's content: the context, not a layer, is named.
      const cut = await run(['-q'], archive.subarray(0, 512 + 20));
      expect(cut.code).toBe(1);
      expect(cut.stderr).toContain('The build context archive is truncated at byte');
      expect(cut.stderr).toContain('Send the context again as a tar');
      const escape = await run(['-q'], await tarOf([{ name: 'Dockerfile', body: 'FROM test/base:1\n' }, { name: '../escape', body: 'x' }]));
      expect(escape.code).toBe(1);
      expect(escape.stderr).toContain('a path that climbs out of the context with ".."');
    }
    expect(await leftovers()).toEqual([]);
  });
});
