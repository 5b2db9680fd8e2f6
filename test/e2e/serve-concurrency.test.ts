import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GATEWAY } from '../../src/executor/network.js';
import { KILN, kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type Served, startServe } from './serve-helpers.js';

const CLIENTS = 20;

/**
 * Every RUN step reports itself to a counter on the host, at the address the host has on the
 * steps' bridge, on a port the server opens to them (--allow-host-port), so the test counts real
 * executions, not progress lines.
 */
describe('kiln serve: concurrent builds from separate clients', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let counter: http.Server;
  const hits = new Map<string, number>();
  let port = 0;
  // The clients keep their context memo under XDG_CACHE_HOME: in the test's directory, not the user's.
  const clientEnv = () => ({ XDG_CACHE_HOME: join(work.path, 'cache') });

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-')];
    counter = http.createServer((req, res) => {
      hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
      res.end('ok');
    });
    await new Promise<void>((r) => counter.listen(0, '0.0.0.0', r));
    port = (counter.address() as AddressInfo).port;
    served = await startServe(store.root, join(work.path, 'kiln.sock'), ['--max-concurrent-builds', String(CLIENTS), '--allow-host-port', String(port)]);
  });

  afterAll(async () => {
    await served?.stop();
    await new Promise((r) => counter?.close(r));
    await store?.cleanup();
    await work?.cleanup();
  });

  it('runs the shared steps once and each build\'s own steps once, and every build succeeds', async () => {
    const hit = (name: string) => `wget -q -O /dev/null http://${GATEWAY}:${port}/${name}`;
    const builds = Array.from({ length: CLIENTS }, (_, i) => {
      const ctx = join(work.path, `ctx${i}`);
      mkdirSync(ctx);
      writeFileSync(
        join(ctx, 'Dockerfile'),
        ['FROM test/base:1', `RUN ${hit('shared-1')} && sleep 1`, `RUN ${hit('shared-2')}`, `RUN ${hit(`own-${i}`)} && echo ${i} > /own`, `RUN ${hit(`own2-${i}`)}`, ''].join('\n'),
      );
      return kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'build', '--progress', 'plain', '-t', `acc/c${i}:1`, ctx], { env: clientEnv() });
    });
    const results = await Promise.all(builds);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    expect(hits.get('/shared-1')).toBe(1);
    expect(hits.get('/shared-2')).toBe(1);
    for (let i = 0; i < CLIENTS; i++) {
      expect(hits.get(`/own-${i}`)).toBe(1);
      expect(hits.get(`/own2-${i}`)).toBe(1);
    }
    const images = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'images'], { env: clientEnv() });
    for (let i = 0; i < CLIENTS; i++) expect(images.stdout).toMatch(new RegExp(`^acc/c${i} +1 `, 'm'));
    // The server is idle now: its store must hold together after twenty builds wrote into it at once.
    const v = await kiln(store.root, ['store', 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/Checked \d+ blobs, \d+ layers, [1-9]\d* images, \d+ cache records, [1-9]\d* uploaded context files: no problems\n$/);
  });

  it('queues builds beyond the limit and tells the client', async () => {
    const limited = await startServe(store.root, join(work.path, 'one.sock'), ['--max-concurrent-builds', '1']);
    try {
      const runs = [0, 1, 2].map((i) => {
        const ctx = join(work.path, `q${i}`);
        mkdirSync(ctx);
        writeFileSync(join(ctx, 'Dockerfile'), `FROM test/base:1\nRUN sleep 1 && echo queued-${i} > /q\n`);
        return kiln(join(work.path, 'no-store'), ['--host', `unix://${limited.socket}`, 'build', '--progress', 'plain', ctx], { env: clientEnv() });
      });
      const results = await Promise.all(runs);
      for (const r of results) expect(r.code, r.stderr).toBe(0);
      expect(results.some((r) => /Waiting for a build slot on the build service: number 1 in the queue/.test(r.stderr))).toBe(true);
    } finally {
      await limited.stop();
    }
  });

  it('cancels a build whose client goes away, and leaves nothing running or mounted', async () => {
    const ctx = join(work.path, 'cancel');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM test/base:1\nRUN ${hit('cancel-start')} && sleep 30\n`);
    function hit(name: string) {
      return `wget -q -O /dev/null http://${GATEWAY}:${port}/${name}`;
    }
    const client = spawn(KILN, ['--host', `unix://${served!.socket}`, 'build', ctx], { stdio: 'ignore', env: { ...process.env, ...clientEnv() } });
    const exited = new Promise((r) => client.once('exit', r));
    for (let i = 0; i < 100 && !hits.has('/cancel-start'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(hits.has('/cancel-start')).toBe(true);
    // Containers of other test files may run meanwhile: only the ones there now must go.
    const running = kilnContainers(store.root);
    expect(running.length).toBeGreaterThan(0);
    // Killed the hard way, as a lost connection would end it.
    client.kill('SIGKILL');
    await exited;
    const left = () => kilnContainers(store.root).filter((c) => running.includes(c));
    for (let i = 0; i < 100 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(left()).toEqual([]);
    for (let i = 0; i < 50 && mountsUnder(store.root).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(mountsUnder(store.root)).toEqual([]);
  });

  it('stops on SIGTERM with nothing left, and the store verifies', async () => {
    expect(await served!.stop()).toBe(0);
    served = undefined;
    expect(mountsUnder(store.root)).toEqual([]);
    const v = await kiln(store.root, ['store', 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toMatch(/: no problems\n$/);
  });
});
