import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir, type KilnResult } from '../helpers/kiln.js';
import { registryApi, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

/**
 * The image commands with `--host`: the same output and exit code as the same command run
 * locally on the server's store, and no local store opened.
 */
describe('kiln --host: image commands against a build service', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let reg: TestRegistry | undefined;
  let noStore: string;

  const remote = (args: string[]) => kiln(noStore, ['--host', `unix://${served!.socket}`, ...args]);
  const local = (args: string[]) => kiln(store.root, args);
  // Ages are printed relative to now: the two runs may fall on either side of a second.
  const aged = (s: string) => s.replace(/\d+ seconds ago +/g, 'N seconds ago ');
  const same = (r: KilnResult, l: KilnResult) => {
    expect(aged(r.stdout)).toBe(aged(l.stdout));
    expect(r.stderr).toBe(l.stderr);
    expect(r.code).toBe(l.code);
    noStack(r.stderr);
  };

  beforeAll(async () => {
    [store, work, reg] = [await storeWithBase(), tempDir('kiln-serve-cmd-'), await startRegistry()];
    noStore = join(work.path, 'no-store');
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo one > /one\nLABEL app=cmd\n');
    const b = await remote(['build', '-q', '-t', 'cmd/app:1', ctx]);
    if (b.code !== 0) throw new Error(b.stderr);
  });

  afterAll(async () => {
    await served?.stop();
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('tag names an image on the server', async () => {
    const r = await remote(['tag', 'cmd/app:1', 'cmd/app:2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect((await local(['images'])).stdout).toMatch(/^cmd\/app +2 /m);
    same(await remote(['tag', 'cmd/none:1', 'cmd/x:1']), await local(['tag', 'cmd/none:1', 'cmd/x:1']));
    same(await remote(['tag', 'cmd/app:1', 'Bad Name']), await local(['tag', 'cmd/app:1', 'Bad Name']));
  });

  it('inspect and history print what they print locally', async () => {
    for (const args of [
      ['inspect', 'cmd/app:1'],
      ['inspect', '--format', 'json', 'cmd/app:1', 'test/base:1'],
      ['inspect', '-f', '{{.Id}} {{index .Config.Labels "app"}} {{join .RepoTags ","}}', 'cmd/app:1'],
      ['inspect', 'cmd/app:1', 'cmd/none:1'],
      ['inspect', 'cmd/none:1'],
      ['history', 'cmd/app:1'],
      ['history', '--no-trunc', 'cmd/app:1'],
      ['history', '-q', 'cmd/app:1'],
      ['history', 'cmd/none:1'],
    ]) {
      same(await remote(args), await local(args));
    }
  });

  it('version shows the server\'s runtime and store', async () => {
    const r = await remote(['version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(` Store:        ${store.root}\n`);
    expect(r.stdout.replace(/ Store: .*/, '')).toBe((await local(['version'])).stdout.replace(/ Store: .*/, ''));
    const j = JSON.parse((await remote(['version', '--format', 'json'])).stdout) as { engine: { store: string } };
    expect(j.engine.store).toBe(store.root);
  });

  it('push and pull go through the server', async () => {
    const name = `${reg!.host}/cmd/pushed:1`;
    expect((await remote(['tag', 'cmd/app:1', name])).code).toBe(0);
    const p = await remote(['push', '--progress', 'plain', name]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(new RegExp(`^The push refers to repository \\[${reg!.host}/cmd/pushed\\]$`, 'm'));
    expect(p.stdout).toMatch(/^1: digest: sha256:[0-9a-f]{64} size: \d+$/m);
    expect((await registryApi(reg!.host, '/v2/cmd/pushed/manifests/1', { accept: 'application/vnd.oci.image.manifest.v1+json' })).status).toBe(200);
    same(await remote(['push', `${reg!.host}/cmd/none:1`]), await local(['push', `${reg!.host}/cmd/none:1`]));

    expect((await remote(['rmi', name])).code).toBe(0);
    const pl = await remote(['pull', '--progress', 'plain', name]);
    expect(pl.code, pl.stderr).toBe(0);
    expect(pl.stdout).toMatch(/^Digest: sha256:[0-9a-f]{64}$/m);
    expect(pl.stdout.trim().split('\n').at(-1)).toBe(`${reg!.host}/cmd/pushed:1`);
    expect((await local(['images'])).stdout).toContain(`${reg!.host}/cmd/pushed`);
    same(await remote(['pull', '--platform', 'nope', name]), await local(['pull', '--platform', 'nope', name]));
  });

  it('rmi removes on the server and fails as the local command does', async () => {
    const r = await remote(['rmi', 'cmd/app:2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('Untagged: cmd/app:2\n');
    expect((await local(['images'])).stdout).not.toMatch(/^cmd\/app +2 /m);
    same(await remote(['rmi', 'cmd/none:1']), await local(['rmi', 'cmd/none:1']));
    same(await remote(['rmi', 'cmd/none:1', 'cmd/none:2']), await local(['rmi', 'cmd/none:1', 'cmd/none:2']));
  });

  it('opened no store on the client', async () => {
    const { existsSync } = await import('node:fs');
    expect(existsSync(noStore)).toBe(false);
  });
});
