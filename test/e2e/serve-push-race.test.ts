import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { registryApi, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

/**
 * Ten clients of one `kiln serve` push the same name to a registry while another client moves
 * that name between two images. One push used to fail with DIGEST_INVALID: every push uploaded
 * the same layers at once, and the registry rewrote its link to a layer on each upload while it
 * checked another push's manifest against it.
 */
describe('kiln serve: concurrent pushes of one name while it is retagged', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let reg: TestRegistry;
  let served: Served;

  const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served.socket}`, ...args], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });

  beforeAll(async () => {
    [store, reg] = await Promise.all([storeWithBase(), startRegistry()]);
    work = tempDir('kiln-push-race-');
    // Two images with layers large enough (20 MB of noise) that uploads overlap.
    for (const tag of ['a', 'b']) {
      const ctx = join(work.path, tag);
      mkdirSync(ctx);
      writeFileSync(join(ctx, 'Dockerfile'), `FROM test/base:1\nRUN head -c 20000000 /dev/urandom > /big-${tag}\n`);
      const r = await kiln(store.root, ['build', '-q', '-t', `${reg.host}/race/app:${tag}`, ctx]);
      expect(r.code, r.stderr).toBe(0);
    }
    const tag = await kiln(store.root, ['tag', `${reg.host}/race/app:a`, `${reg.host}/race/app:1`]);
    expect(tag.code, tag.stderr).toBe(0);
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
  }, 120_000);

  afterAll(async () => {
    await served?.stop();
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('pushes every time, each layer uploaded once, and the registry holds a whole image under the name', async () => {
    const name = `${reg.host}/race/app:1`;
    let retagging = true;
    const retagger = (async () => {
      let moves = 0;
      for (let i = 0; retagging || moves < 2; i++, moves++) {
        const r = await remote(['tag', `${reg.host}/race/app:${i % 2 === 0 ? 'b' : 'a'}`, name]);
        expect(r.code, r.stderr).toBe(0);
      }
      return moves;
    })();
    const pushes = await Promise.all(Array.from({ length: 10 }, () => remote(['push', '--insecure-registry', reg.host, '--progress', 'plain', name])));
    retagging = false;
    expect(await retagger).toBeGreaterThanOrEqual(2);

    for (const p of pushes) expect(p.code, p.stdout + p.stderr).toBe(0);
    // Shared uploads: a layer is pushed by one client, the others find it there or wait for it.
    const pushed = pushes.flatMap((p) => [...p.stdout.matchAll(/^([0-9a-f]{12}): Pushed$/gm)].map((m) => m[1]!));
    expect(pushed.length).toBeGreaterThan(0);
    expect(new Set(pushed).size).toBe(pushed.length);

    const digests = pushes.map((p) => /^1: digest: (sha256:[0-9a-f]{64}) size: \d+$/m.exec(p.stdout)?.[1]);
    expect(digests.every((d) => d !== undefined)).toBe(true);
    const head = await registryApi(reg.host, '/v2/race/app/manifests/1', { accept: 'application/vnd.oci.image.manifest.v1+json' });
    expect(head.status).toBe(200);
    const final = head.headers['docker-content-digest'] as string;
    expect(digests).toContain(final);
    const manifest = JSON.parse(head.body) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const blob = await registryApi(reg.host, `/v2/race/app/blobs/${d}`, { method: 'HEAD' });
      expect(blob.status, d).toBe(200);
    }
  });
});
