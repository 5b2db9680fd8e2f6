import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar } from '../helpers/tar.js';
import type { Served } from './serve-helpers.js';
import { buildEvents, send, startHostileServe, type Target } from './serve-hostile.js';

/**
 * Outputs a client asks a build service for: each `-o` value is one output, parsed once, and
 * the server runs only image and registry outputs. Whatever a value hides behind a second
 * `type=`, nothing is written at a path the client chose.
 */
describe('kiln serve: outputs a client asks for', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let targets: Target[];
  let context: Buffer;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-outputs-')];
    const s = await startHostileServe(store.root, work.path);
    served = s.served;
    targets = [s.unix, s.tcp];
    context = await packTar([[{ name: 'Dockerfile', mode: 0o644 }, 'FROM test/base:1\nRUN echo out > /out\n']]);
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  const build = (t: Target, options: object) => send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from(`${JSON.stringify(options)}\n`), context]));

  it('refuses a value with several outputs, or one the server would write, with a 400 and writes nothing', async () => {
    for (const t of targets) {
      const dest = join(work.path, `dest-${t.name}`);
      const cases: [string, RegExp][] = [
        [`type=image, type=local,dest=${dest}`, /it names more than one type=/],
        [`type=image,name=acc/x:1,"type=tar",dest=${dest}`, /it names more than one type=/],
        [`type=registry,name=localhost:1/x,type=oci,dest=${dest}`, /it names more than one type=/],
        [`type=image,dest=${dest},dest=${dest}/b`, /it gives "dest" more than once/],
        [`type=local,dest=${dest}`, /would be written on the server/],
        [`type=tar,dest=${dest}`, /would be written on the server/],
        [dest, /would be written on the server/],
      ];
      for (const [output, message] of cases) {
        const r = await build(t, { outputs: [output] });
        expect(r.status, `${t.name} ${output}: ${r.body}`).toBe(400);
        const error = buildEvents(r).error!;
        expect(error.code).toBe('INVALID_OUTPUT');
        expect(error.message).toMatch(message);
        expect(error.message).toContain(output);
      }
      expect(existsSync(dest), dest).toBe(false);
    }
    expect(served!.log()).not.toMatch(/^error /m);
  });

  it('still runs an image output, and exports only to the client', async () => {
    const t = targets[0]!;
    const r = await build(t, { outputs: ['type=image,name=acc/out:1'] });
    const { events, error } = buildEvents(r);
    expect(error, r.body).toBeUndefined();
    const manifest = (events.at(-1) as { manifest?: string }).manifest;
    expect((await send(t, 'GET', '/v1/images/acc%2Fout:1')).status).toBe(200);
    const dest = join(work.path, 'export-dest');
    for (const output of [`type=tar,dest=${dest}`, `type=tar,type=local,dest=${dest}`, 'type=tar,type=local', 'type=image']) {
      const e = await send(t, 'POST', '/v1/export', JSON.stringify({ image: manifest, output }));
      expect(e.status, `${output}: ${e.body}`).toBe(400);
      expect((JSON.parse(e.body) as { error: { code: string } }).error.code).toBe('INVALID_OUTPUT');
    }
    expect(existsSync(dest)).toBe(false);
    const ok = await send(t, 'POST', '/v1/export', JSON.stringify({ image: manifest, output: 'type=tar' }));
    expect(ok.status).toBe(200);
  });

  it('kiln --host refuses a value with two types before sending anything', async () => {
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx, { recursive: true });
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\n');
    const dest = join(work.path, 'cli-dest');
    const r = await kiln(join(work.path, 'no-store'), ['--host', `unix://${targets[0]!.socket}`, '--token-file', join(work.path, 'tokens'), 'build', '-o', `type=image, type=local,dest=${dest}`, ctx], {
      env: { XDG_CACHE_HOME: join(work.path, 'cache') },
    });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/names more than one type=/);
    expect(existsSync(dest)).toBe(false);
  });
});
