import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar, tarHeader } from '../helpers/tar.js';
import { type Served, startServe } from './serve-helpers.js';

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.c?js:\d+/m);

/**
 * Sources a hostile client hands a shared `kiln serve`: a COPY glob that a backtracking matcher
 * takes hours over, and broken archives for ADD. Each gets a clear error while another client's
 * build runs to its end on the same server, and the server keeps serving afterwards.
 */
describe('kiln serve: hostile sources', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served;
  let n = 0;

  const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served.socket}`, ...args], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });

  /** A context directory holding `files` (name to content). */
  function context(files: Record<string, string | Buffer>): string {
    const dir = join(work.path, `ctx-${++n}`);
    mkdirSync(dir);
    for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body);
    return dir;
  }

  /** A second client's build that runs for a while: it must finish while the hostile one is handled. */
  function bystander(): Promise<Awaited<ReturnType<typeof kiln>>> {
    const id = ++n;
    // A command of its own each time, so that the step runs rather than comes from the cache.
    const ctx = context({ Dockerfile: `FROM test/base:1\nRUN sleep 2 && echo bystander-${id} > /done\n` });
    return remote(['build', '--progress', 'plain', '-t', `hostile/bystander:${id}`, ctx]);
  }

  /** One request to the server's HTTP API: its status and body. */
  function request(method: string, path: string, body?: Buffer): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: served.socket, method, path }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }
  const post = (path: string, body: Buffer) => request('POST', path, body);

  const storeTmp = () => (existsSync(join(store.root, 'tmp')) ? readdirSync(join(store.root, 'tmp')) : []);

  /** Builds `ADD <name> /x/` from a context holding the archive; returns the client's result. */
  function addArchive(name: string, archive: Buffer) {
    return remote(['build', '--progress', 'plain', context({ Dockerfile: `FROM test/base:1\nADD ${name} /x/\n`, [name]: archive })]);
  }

  async function expectServing(): Promise<void> {
    const r = await remote(['images']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('test/base');
  }

  beforeAll(async () => {
    store = await storeWithBase();
    work = tempDir('kiln-serve-hostile-');
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('answers a COPY glob with many stars at once while another build finishes', async () => {
    const pattern = `${'a*'.repeat(14)}b`;
    const ctx = context({ Dockerfile: `FROM test/base:1\nCOPY ${pattern} /x\n`, ['a'.repeat(40)]: 'data\n' });
    const other = bystander();
    const hostile = await remote(['build', '--progress', 'plain', ctx]);
    expect(hostile.code).not.toBe(0);
    expect(hostile.stderr).toContain(`Source "${pattern}" not found in the build context`);
    noStack(hostile.stderr);
    // The event loop was free: the server answers while the other build is still going.
    await expectServing();
    const done = await other;
    expect(done.code, done.stderr).toBe(0);
    expect(done.stderr).toMatch(/Built sha256:[0-9a-f]{64} as hostile\/bystander:\d+/);
  });

  it('names a malformed COPY glob in its error', async () => {
    const ctx = context({ Dockerfile: 'FROM test/base:1\nCOPY src/[a- /x\n' });
    const r = await remote(['build', '--progress', 'plain', ctx]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Invalid pattern "src/[a-": a character class is not closed');
    noStack(r.stderr);
  });

  it('answers docker images --filter reference= with many stars at once, and refuses a malformed one with 400', async () => {
    const name = 'a'.repeat(40);
    const tag = await kiln(store.root, ['tag', 'test/base:1', `${name}:1`]);
    expect(tag.code, tag.stderr).toBe(0);
    const images = (filter: string) => request('GET', `/v1.43/images/json?filters=${encodeURIComponent(JSON.stringify({ reference: { [filter]: true } }))}`);
    const none = await images(`${'a*'.repeat(14)}b`);
    expect(none.status).toBe(200);
    expect(JSON.parse(none.body)).toEqual([]);
    const some = await images(`${'a*'.repeat(14)}a`);
    expect(JSON.parse(some.body).map((r: { RepoTags: string[] }) => r.RepoTags)).toEqual([[`${name}:1`]]);
    const bad = await images('a[');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).message).toContain('Invalid pattern "a[": a character class is not closed');
  });

  it('fails an ADD of a tar cut inside a file with a clear error while another build finishes', async () => {
    const whole = await packTar([[{ name: 'small' }, 'small\n'], [{ name: 'deep/er/big' }, randomBytes(300_000)], [{ name: 'after' }, 'after\n']]);
    const other = bystander();
    const cut = await addArchive('cut.tar', whole.subarray(0, 512 + 512 + 512 + 150_000));
    expect(cut.code).not.toBe(0);
    expect(cut.stderr).toContain('Cannot unpack "cut.tar": it is cut short in entry "deep/er/big"');
    noStack(cut.stderr);
    const done = await other;
    expect(done.code, done.stderr).toBe(0);
    await expectServing();
    expect(storeTmp()).toEqual([]);
  });

  it('fails an ADD of a cut gzip tar, and of garbage behind a tar header, and goes on serving', async () => {
    const whole = await packTar([[{ name: 'big' }, randomBytes(300_000)]]);
    const gz = gzipSync(whole);
    const cutGz = await addArchive('cut.tar.gz', gz.subarray(0, Math.floor(gz.length / 2)));
    expect(cutGz.code).not.toBe(0);
    expect(cutGz.stderr).toContain('Cannot unpack "cut.tar.gz": its gzip data is cut short');
    noStack(cutGz.stderr);
    const garbage = await addArchive('garbage.tar', Buffer.concat([whole.subarray(0, 512), Buffer.alloc(300_000, 0x41), randomBytes(4096)]));
    expect(garbage.code).not.toBe(0);
    expect(garbage.stderr).toContain('Cannot unpack "garbage.tar": ');
    noStack(garbage.stderr);
    const ok = await bystander();
    expect(ok.code, ok.stderr).toBe(0);
    await expectServing();
    expect(storeTmp()).toEqual([]);
  });

  it('fails an ADD of a tar entry declaring 2 GiB with 3 bytes behind it, and a docker load of one, leaving nothing in tmp/', async () => {
    const huge = Buffer.concat([tarHeader('big', 2 * 1024 ** 3), Buffer.from('abc')]);
    const add = await addArchive('huge.tar', huge);
    expect(add.code).not.toBe(0);
    expect(add.stderr).toContain('Cannot unpack "huge.tar": it is cut short in entry "big"');
    noStack(add.stderr);
    const nested = Buffer.concat([tarHeader('blobs/sha256/aa', 2 * 1024 ** 3), Buffer.from('abc')]);
    for (const body of [huge, nested]) {
      const load = await post('/v1.43/images/load', body);
      expect(load.status).toBe(400);
      expect(JSON.parse(load.body).message).toBe('Cannot read the archive: it is cut short');
    }
    await expectServing();
    expect(storeTmp()).toEqual([]);
    const verify = await remote(['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it('unpacks 250 nested directories at once, and refuses a tar nested up to PATH_MAX with a clear error that leaves the store clean', async () => {
    const nested = (depth: number) => {
      const dirs = Array.from({ length: depth }, (_, i) => 'd/'.repeat(i + 1).slice(0, -1));
      return packTar([...dirs.map((name): [{ name: string; type: 'directory' }] => [{ name, type: 'directory' }]), [{ name: `${dirs.at(-1)}/f` }, 'deepest\n']]);
    };
    const ctx = context({ Dockerfile: `FROM test/base:1\nADD d250.tar /x/\nRUN cat /x/${'d/'.repeat(250)}f\n`, 'd250.tar': await nested(250) });
    const started = Date.now();
    const ok = await remote(['build', '--progress', 'plain', ctx]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toContain('deepest');
    // Was 46 s on a 2-core machine; a generous bound that still catches the quadratic walk.
    expect(Date.now() - started).toBeLessThan(20_000);

    const deep = await addArchive('dmax.tar', await nested(2100));
    expect(deep.code).not.toBe(0);
    expect(deep.stderr).toMatch(/Cannot unpack "dmax\.tar": entry "d\/d\/.*" is nested too deeply \(a path of \d+ bytes\)/);
    noStack(deep.stderr);
    await expectServing();
    expect(storeTmp()).toEqual([]);
    expect(readdirSync(join(store.root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
    // The next command on the same store, without the server, and the store's own check.
    const images = await kiln(store.root, ['images']);
    expect(images.code, images.stderr).toBe(0);
    const verify = await kiln(store.root, ['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(verify.stdout).toContain('no problems');
  });
});
