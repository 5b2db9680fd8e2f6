import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar } from '../helpers/tar.js';
import { type Served, startServe } from './serve-helpers.js';
import { buildEvents, contextLeftovers, send, startHostileServe, type Target } from './serve-hostile.js';

const DOCKERFILE = 'FROM test/base:1\nRUN echo limits > /limits\n';

/** A build through the list upload, which the fault point of the tar upload does not touch. */
async function listBuild(t: Target): Promise<ReturnType<typeof buildEvents>> {
  const checksum = `sha256:${createHash('sha256').update(DOCKERFILE).digest('hex')}`;
  const entries = [
    { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
    { path: 'Dockerfile', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: DOCKERFILE.length, checksum },
  ];
  const contents = await packTar([[{ name: checksum.slice(7), mode: 0o644 }, DOCKERFILE]]);
  return buildEvents(await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from(`{"context":"list"}\n${JSON.stringify({ entries })}\n`), contents])));
}

/** An upload that promises `declared` bytes and sends `head`: it stays in progress until dropped. */
function openUpload(t: Target, path: string, head: Buffer, declared: number): { req: http.ClientRequest; answer: Promise<{ status: number; body: string } | undefined> } {
  const where = t.socket ? { socketPath: t.socket } : { host: '127.0.0.1', port: t.port };
  const req = http.request({ ...where, method: 'POST', path, headers: { 'Content-Length': String(declared), ...(t.token ? { Authorization: `Bearer ${t.token}` } : {}) } });
  const answer = new Promise<{ status: number; body: string } | undefined>((resolve) => {
    req.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve(undefined));
  });
  req.write(head);
  return { req, answer };
}

describe('kiln serve: unexpected failures', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-faults-id-')];
  });

  afterAll(async () => {
    await store?.cleanup();
    await work?.cleanup();
  });

  it('answers an unexpected error with a 500 and an id the log shows with its stack, and keeps building', async () => {
    const served = await startServe(store.root, join(work.path, 'throw.sock'), [], { env: { KILN_FAULT_AT: 'context-upload=throw' } });
    try {
      const t = { name: 'unix', socket: served.socket };
      const context = await packTar([[{ name: 'Dockerfile', mode: 0o644 }, DOCKERFILE]]);
      const k = await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from('{}\n'), context]));
      expect(k.status).toBe(500);
      const error = (JSON.parse(k.body) as { error: { code: string; message: string; hint: string } }).error;
      expect(error.code).toBe('INTERNAL');
      const id = /\(error ([0-9a-f]{12})\)/.exec(error.message)?.[1];
      expect(id, error.message).toBeDefined();
      expect(error.hint).toContain(`"error ${id}"`);
      expect(k.body).not.toContain('Injected fault');
      const d = await send(t, 'POST', '/build', context);
      const dockerId = /\(error ([0-9a-f]{12})\)/.exec(d.body)?.[1];
      expect(dockerId, d.body).toBeDefined();
      for (const i of [id, dockerId]) expect(served.log()).toMatch(new RegExp(`^error ${i}: POST /(v1/)?build: TypeError: Injected fault at context-upload\\n\\s+at `, 'm'));
      const after = await listBuild(t);
      expect(after.error).toBeUndefined();
      expect(after.events.at(-1)?.type).toBe('result');
      expect(await contextLeftovers(store.root)).toEqual([]);
    } finally {
      expect(await served.stop()).toBe(0);
    }
  });

  for (const kind of ['reject', 'uncaught'] as const) {
    it(`logs ${kind === 'reject' ? 'an unhandled rejection' : 'an uncaught exception'} with an id and keeps serving`, async () => {
      const served = await startServe(store.root, join(work.path, `${kind}.sock`), [], { env: { KILN_FAULT_AT: `context-upload=${kind}` } });
      try {
        const t = { name: 'unix', socket: served.socket };
        const context = await packTar([[{ name: 'Dockerfile', mode: 0o644 }, DOCKERFILE]]);
        for (let i = 0; i < 3; i++) {
          const { error, events } = buildEvents(await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from('{}\n'), context])));
          expect(error).toBeUndefined();
          expect(events.at(-1)?.type).toBe('result');
        }
        const what = kind === 'reject' ? 'unhandled rejection: Error: Injected unhandled rejection' : 'uncaught exception: Error: Injected uncaught exception';
        for (let i = 0; i < 20 && (served.log().match(/^error [0-9a-f]{12}: /gm) ?? []).length < 3; i++) await new Promise((r) => setTimeout(r, 100));
        expect(served.log().match(new RegExp(`^error [0-9a-f]{12}: ${what} at context-upload\\n\\s+at `, 'gm'))?.length, served.log()).toBe(3);
        expect((await listBuild(t)).error).toBeUndefined();
      } finally {
        expect(await served.stop()).toBe(0);
      }
    });
  }
});

describe('kiln serve: limits', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let unix: Target;
  let tcp: Target;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-limits-')];
    // A second client of the TCP listener has a token of its own.
    const s = await startHostileServe(store.root, work.path, ['--headers-timeout', '1', '--request-timeout', '2', '--max-uploads-per-client', '2', '--max-json-size', '1000'], { otherTokens: ['second-client'] });
    [served, unix, tcp] = [s.served, s.unix, s.tcp];
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('closes a connection whose headers trickle in, and answers others meanwhile', async () => {
    const start = Date.now();
    const socket = net.connect(tcp.port!, '127.0.0.1');
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString()));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write('POST /v1/build HTTP/1.1\r\nHost: kiln\r\n');
    const trickle = setInterval(() => socket.write('X-Slow: 1\r\n'), 200);
    expect((await send(unix, 'GET', '/_ping')).status).toBe(200);
    await closed;
    clearInterval(trickle);
    const took = Date.now() - start;
    expect(received).toMatch(/^HTTP\/1\.1 408/);
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(4000);
  });

  it('gives a JSON body a deadline, but lets an upload take as long as it keeps sending', async () => {
    const start = Date.now();
    const slow = openUpload(tcp, '/v1/tag', Buffer.from('{"source":'), 100);
    const a = await slow.answer;
    expect(a?.status).toBe(408);
    expect(JSON.parse(a!.body)).toMatchObject({ error: { code: 'REQUEST_TIMEOUT', message: 'The request body did not arrive within 2 s' } });
    expect(Date.now() - start).toBeLessThan(5000);

    // A context that arrives over 3 s, longer than the request timeout, in steps shorter than it.
    const context = Buffer.concat([Buffer.from('{}\n'), await packTar([[{ name: 'Dockerfile', mode: 0o644 }, DOCKERFILE]])]);
    const up = openUpload(unix, '/v1/build', context.subarray(0, 100), context.length);
    for (let i = 1; i <= 3; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      up.req.write(context.subarray(100 + ((i - 1) * (context.length - 100)) / 3, 100 + (i * (context.length - 100)) / 3));
    }
    up.req.end();
    const done = await up.answer;
    expect(buildEvents({ status: done!.status, body: done!.body, headers: {} }).error, done?.body).toBeUndefined();

    // One that stops sending is told so once it has been quiet for the timeout.
    const stalled = openUpload(unix, '/v1/build', context.subarray(0, 100), context.length);
    const s = await stalled.answer;
    expect(s?.status).toBe(408);
    expect(s?.body).toContain('The upload stalled: nothing arrived for 2 s');
    expect(await contextLeftovers(store.root)).toEqual([]);
  });

  it('refuses a client a third upload at once with 429, not another client', async () => {
    const head = Buffer.from('{}\n');
    const open = [openUpload(tcp, '/v1/build', head, 10 * 1024 * 1024), openUpload(tcp, '/build', Buffer.alloc(512), 10 * 1024 * 1024)];
    await new Promise((r) => setTimeout(r, 300));
    const third = await send(tcp, 'POST', '/v1/build', Buffer.concat([head, await packTar([[{ name: 'Dockerfile' }, DOCKERFILE]])]));
    expect(third.status).toBe(429);
    expect(JSON.parse(third.body).error).toMatchObject({ code: 'TOO_MANY_UPLOADS', message: "The client already has 2 uploads in progress, the server's limit" });
    // Another token is another client; JSON requests are no uploads.
    const other = { ...tcp, token: 'second-client' };
    expect((await listBuild(other)).error).toBeUndefined();
    expect((await send(tcp, 'GET', '/v1/images')).status).toBe(200);
    for (const u of open) u.req.destroy();
    await Promise.all(open.map((u) => u.answer));
    await new Promise((r) => setTimeout(r, 200));
    expect((await listBuild(tcp)).error).toBeUndefined();
  });

  it('refuses a JSON body over --max-json-size with 413', async () => {
    const r = await send(unix, 'POST', '/v1/tag', JSON.stringify({ source: 'test/base:1', target: `acc/x:${'1'.repeat(1000)}` }));
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body).error.code).toBe('REQUEST_TOO_LARGE');
    expect(served!.log()).not.toMatch(/^error /m);
  });
});
