import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type TestRegistry, startRegistry, tempDocker } from '../helpers/registry.js';

interface Blob {
  digest: string;
  size: number;
}

/** BuildKit's plain lines for a blob: one when it starts, one when it is done. */
const trim = (x: number) => x.toPrecision(3).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
const human = (n: number) => (n < 1000 ? `${n}B` : n < 1e6 ? `${trim(n / 1000)}kB` : `${trim(n / 1e6)}MB`);
const blobLines = (id: number, b: Blob) => [`#${id} ${b.digest} 0B / ${human(b.size)}`, expect.stringMatching(new RegExp(`^#${id} ${b.digest} ${human(b.size)} / ${human(b.size)} \\d+\\.\\ds done$`))];

describe('bytes of pulls, pushes and exports as progress', () => {
  let regA: TestRegistry;
  let regB: TestRegistry;
  let base: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let docker: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;
  let ctx: string;
  let layers: Blob[];

  beforeAll(async () => {
    work = tempDir('kiln-transfer-');
    docker = tempDocker();
    env = { DOCKER_CONFIG: docker.dir, KILN_REGISTRY_RETRY_MS: '10' };
    [regA, regB, base] = await Promise.all([startRegistry(), startRegistry(), storeWithBase()]);
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN head -c 300000 /dev/urandom > /big\n');
    const r = await kiln(base.root, ['build', '-q', '-t', `${regA.host}/acc/app:1`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    expect((await kiln(base.root, ['tag', `${regA.host}/acc/app:1`, `${regB.host}/acc/app:1`])).code).toBe(0);
    const inspect = await kiln(base.root, ['inspect', '--format', '{{json .Manifest}}', `${regA.host}/acc/app:1`]);
    layers = (JSON.parse(inspect.stdout) as { layers: Blob[] }).layers.map(({ digest, size }) => ({ digest, size }));
    expect(layers).toHaveLength(2);
  });

  afterAll(async () => {
    await regA?.stop();
    await regB?.stop();
    await base?.cleanup();
    await work?.cleanup();
    docker?.cleanup();
  });

  it('push --progress rawjson: transfer events per layer, growing to done, then the result', async () => {
    // 64 kB chunks: the 300 kB layer reports its bytes as each chunk goes up.
    const r = await kiln(base.root, ['push', '--progress', 'rawjson', `${regA.host}/acc/app:1`], { env: { ...env, KILN_PUSH_CHUNK_SIZE: '65536' } });
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events[0]).toMatchObject({ type: 'vertex.start', id: 1, name: `pushing ${regA.host}/acc/app:1` });
    expect(events.at(-2)).toMatchObject({ type: 'vertex.done', id: 1 });
    expect(events.at(-1)).toMatchObject({ type: 'result', tags: [`${regA.host}/acc/app:1`] });
    for (const layer of layers) {
      const mine = events.filter((e) => e.type === 'transfer' && e.name === layer.digest);
      expect(mine[0]).toMatchObject({ id: 1, current: 0, total: layer.size });
      expect(mine.at(-1)).toMatchObject({ id: 1, current: layer.size, total: layer.size, done: true });
      expect(mine.filter((e) => e.done)).toHaveLength(1);
      const currents = mine.map((e) => e.current as number);
      expect(currents).toEqual([...currents].sort((a, b) => a - b));
      for (const e of mine) expect(typeof e.time).toBe('number');
    }
    const big = layers.reduce((a, b) => (a.size > b.size ? a : b));
    expect(events.filter((e) => e.type === 'transfer' && e.name === big.digest).length).toBeGreaterThanOrEqual(2);
    // The docker-style lines stay on stdout.
    expect(r.stdout).toMatch(/: Pushed$/m);
  });

  it('push --progress plain: a line when each layer starts and one when it is done', async () => {
    const r = await kiln(base.root, ['push', '--progress', 'plain', `${regB.host}/acc/app:1`], { env });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toBe(`#1 pushing ${regB.host}/acc/app:1`);
    for (const layer of layers) {
      const mine = lines.filter((l) => l.includes(layer.digest));
      expect(mine).toEqual(blobLines(1, layer));
    }
    expect(lines.at(-3)).toMatch(/^#1 DONE \d+\.\ds$/);
    expect(lines.slice(-2)).toEqual(['', `Pushed ${regB.host}/acc/app:1`]);
    // A second push moves nothing, so it reports no bytes.
    const again = await kiln(base.root, ['push', '--progress', 'plain', `${regB.host}/acc/app:1`], { env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/sha256:/);
  });

  it('pull --progress plain and rawjson into empty stores', async () => {
    const empty = tempDir('kiln-store-');
    const other = tempDir('kiln-store-');
    try {
      const plain = await kiln(empty.path, ['pull', '--progress', 'plain', `${regA.host}/acc/app:1`], { env });
      expect(plain.code, plain.stderr).toBe(0);
      const lines = plain.stderr.trimEnd().split('\n');
      expect(lines[0]).toBe(`#1 pulling ${regA.host}/acc/app:1`);
      for (const layer of layers) expect(lines.filter((l) => l.includes(layer.digest))).toEqual(blobLines(1, layer));
      expect(lines.slice(-2)).toEqual(['', `Pulled ${regA.host}/acc/app:1`]);
      expect(plain.stdout).toMatch(/Pull complete/);
      expect(plain.stdout.trimEnd().split('\n').at(-1)).toBe(`${regA.host}/acc/app:1`);

      const raw = await kiln(other.path, ['pull', '--progress', 'rawjson', `${regA.host}/acc/app:1`], { env });
      expect(raw.code, raw.stderr).toBe(0);
      const events = raw.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events[0]).toMatchObject({ type: 'vertex.start', id: 1, name: `pulling ${regA.host}/acc/app:1` });
      for (const layer of layers) {
        const mine = events.filter((e) => e.type === 'transfer' && e.name === layer.digest);
        expect(mine[0]).toMatchObject({ current: 0, total: layer.size });
        expect(mine.at(-1)).toMatchObject({ current: layer.size, total: layer.size, done: true });
      }
      expect(events.at(-1)).toMatchObject({ type: 'result', tags: [`${regA.host}/acc/app:1`] });

      // Nothing to fetch: no bytes, and -q keeps stderr empty.
      const quiet = await kiln(other.path, ['pull', '-q', `${regA.host}/acc/app:1`], { env });
      expect(quiet.code, quiet.stderr).toBe(0);
      expect(quiet.stderr).toBe('');
    } finally {
      await empty.cleanup();
      await other.cleanup();
    }
  });

  it('a failed pull reports in the chosen mode', async () => {
    const empty = tempDir('kiln-store-');
    try {
      const r = await kiln(empty.path, ['pull', '--progress', 'rawjson', `${regA.host}/acc/absent:1`], { env });
      expect(r.code).toBe(1);
      const events = r.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events.at(-2)).toMatchObject({ type: 'vertex.error', id: 1 });
      expect(events.at(-1)).toMatchObject({ type: 'error' });
    } finally {
      await empty.cleanup();
    }
  });

  it('an export to an OCI archive reports each blob under "exporting to image"', async () => {
    const dest = join(work.path, 'out.tar');
    const r = await kiln(base.root, ['build', '--progress', 'plain', '-o', `type=oci,dest=${dest}`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    const id = Number(/^#(\d+) exporting to image$/m.exec(r.stderr)![1]);
    const lines = r.stderr.split('\n');
    for (const layer of layers) expect(lines.filter((l) => l.includes(layer.digest))).toEqual(blobLines(id, layer));
  });
});
