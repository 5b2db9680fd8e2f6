import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/**
 * Two `kiln build` processes on one store share a step while it runs: the second waits for the
 * first's result instead of running it again. Every RUN step reports itself to a counter on the
 * host's loopback (the steps run with --network=host, which a local build may), so the test counts
 * real executions.
 */
describe('kiln build processes on one store share a running step', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let counter: http.Server;
  const hits = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  let port = 0;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-shared-run-')];
    counter = http.createServer((req, res) => {
      const name = req.url ?? '';
      hits.set(name, (hits.get(name) ?? 0) + 1);
      waiters.get(name)?.();
      // A script for steps that fetch one: the first run of /doomed hangs (until it is killed).
      res.end(name === '/doomed' && hits.get(name) === 1 ? 'sleep 60\n' : 'true\n');
    });
    await new Promise<void>((r) => counter.listen(0, '127.0.0.1', r));
    port = (counter.address() as AddressInfo).port;
  });

  afterEach(() => {
    expect(mountsUnder(store.root)).toEqual([]);
    expect(kilnContainers(store.root)).toEqual([]);
  });

  afterAll(async () => {
    await new Promise((r) => counter?.close(r));
    await store?.cleanup();
    await work?.cleanup();
  });

  const hit = (name: string) => `wget -q -O /dev/null http://127.0.0.1:${port}/${name}`;
  const hitOnce = (name: string) => new Promise<void>((r) => waiters.set(`/${name}`, r));

  function context(name: string, lines: string[]): string {
    const ctx = join(work.path, name);
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), ['FROM test/base:1', ...lines, ''].join('\n'));
    return ctx;
  }

  it('runs a step once when two processes build it at the same time, and both get the same image', async () => {
    // Two contexts with the same Dockerfile: the same steps, whatever the directory.
    const lines = [`RUN --network=host ${hit('slow')} && sleep 2 && echo slow > /slow`, `RUN --network=host ${hit('after')}`];
    const [a, b] = [context('a', lines), context('b', lines)];
    const first = kiln(store.root, ['build', '--progress', 'plain', a]);
    // The second starts once the first is inside the slow step.
    await hitOnce('slow');
    const second = await kiln(store.root, ['build', '--progress', 'plain', b]);
    const one = await first;
    expect(one.code, one.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    expect(hits.get('/slow')).toBe(1);
    expect(hits.get('/after')).toBe(1);
    expect(second.stderr).toMatch(/^#\d+ \d+\.\d+ waiting for kiln process \d+, which is running this step$/m);
    const id = (r: { stdout: string; stderr: string }) => /^Built (sha256:[a-f0-9]{64})$/m.exec(r.stdout + r.stderr)?.[1];
    expect(id(second)).toBeDefined();
    expect(id(second)).toBe(id(one));
  });

  it('takes over a step whose process died while running it, and builds', async () => {
    const ctx = context('killed', [`RUN --network=host wget -q -O /tmp/script http://127.0.0.1:${port}/doomed && sh /tmp/script && echo done > /done`]);
    const victim = spawn(KILN, ['build', '-q', ctx], { env: { ...process.env, KILN_ROOT: store.root }, stdio: 'ignore' });
    const exited = new Promise((r) => victim.on('close', r));
    await hitOnce('doomed');
    victim.kill('SIGKILL');
    await exited;
    // Its container keeps running without it: the next process cleans up and takes the step over.
    const r = await kiln(store.root, ['build', '--progress', 'plain', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(hits.get('/doomed')).toBe(2);
    expect(r.stderr).not.toContain('waiting for kiln process');
  });
});
