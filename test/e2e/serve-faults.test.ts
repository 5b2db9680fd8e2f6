import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { tarHeader } from '../helpers/tar.js';
import { type Served, startServe } from './serve-helpers.js';

const until = async (what: string, ok: () => boolean, tries = 200) => {
  for (let i = 0; i < tries && !ok(); i++) await new Promise((r) => setTimeout(r, 100));
  if (!ok()) throw new Error(`Timed out waiting until ${what}`);
};

/**
 * Faults around a build service: clients that vanish mid-upload and mid-stream, and a server
 * killed with SIGKILL mid-build and started again on its store. Afterwards the server serves,
 * nothing is left mounted, running or half-written, and the store verifies.
 */
describe('kiln serve: faults', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let socket: string;

  const tmpNames = () => (existsSync(join(store.root, 'tmp')) ? readdirSync(join(store.root, 'tmp')) : []);
  const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${socket}`, ...args], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });

  /** Starts an upload that promises `declared` bytes, sends `head`, and returns a way to drop it. */
  function partialUpload(head: Buffer, declared: number): { drop: () => void; done: Promise<void> } {
    const req = http.request({ socketPath: socket, path: '/v1/build', method: 'POST', headers: { 'Content-Length': String(declared) } });
    const done = new Promise<void>((resolve) => {
      req.on('error', () => resolve());
      req.on('close', () => resolve());
    });
    req.write(head);
    // Enough content that the server has begun writing it, far from all that was promised.
    req.write(Buffer.alloc(256 * 1024, 7));
    return { drop: () => req.destroy(), done };
  }

  async function serverServes(): Promise<void> {
    const r = await remote(['images']);
    expect(r.code, r.stderr).toBe(0);
  }

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-faults-')];
    socket = join(work.path, 'kiln.sock');
    served = await startServe(store.root, socket);
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('forgets a whole-tar upload whose client went away mid-upload', async () => {
    const options = Buffer.from('{"tags":["faults/never:1"]}\n');
    const up = partialUpload(Buffer.concat([options, tarHeader('big', 64 * 1024 * 1024)]), options.length + 512 + 64 * 1024 * 1024 + 1024);
    await until('the server unpacks the context', () => tmpNames().some((n) => n.startsWith('context-')));
    up.drop();
    await up.done;
    await until('the context directory is removed', () => !tmpNames().some((n) => n.startsWith('context-')));
    await serverServes();
  });

  it('keeps no half-received content of an incremental upload whose client went away', async () => {
    const content = Buffer.alloc(64 * 1024 * 1024, 7);
    const checksum = `sha256:${createHash('sha256').update(content).digest('hex')}`;
    const entries = [{ path: 'big', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: content.length, checksum }];
    const head = Buffer.concat([Buffer.from(`{"context":"list"}\n${JSON.stringify({ entries })}\n`), tarHeader(checksum.slice(7), content.length)]);
    const up = partialUpload(head, head.length + content.length + 1024);
    await until('the server writes the content', () => tmpNames().some((n) => n.startsWith('cfile-')));
    up.drop();
    await up.done;
    await until('the half-written content is removed', () => !tmpNames().some((n) => n.startsWith('cfile-')));
    const cached = join(store.root, 'context-files', 'sha256', checksum.slice(7));
    expect(existsSync(cached)).toBe(false);
    await serverServes();
  });

  it('cancels a build whose client is killed mid-stream, and keeps serving', async () => {
    const ctx = join(work.path, 'stream');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN i=0; while [ $i -lt 600 ]; do echo "tick $i"; i=$((i+1)); sleep 0.1; done\n');
    const client = spawn(KILN, ['--host', `unix://${socket}`, 'build', '--progress', 'plain', ctx], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, XDG_CACHE_HOME: join(work.path, 'cache') } });
    let log = '';
    client.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise((r) => client.once('exit', r));
    await until('the build streams its output', () => /tick 3\b/.test(log));
    expect(kilnContainers(store.root).length).toBeGreaterThan(0);
    client.kill('SIGKILL');
    await exited;
    await until('the container is gone', () => kilnContainers(store.root).length === 0);
    await until('nothing is mounted', () => mountsUnder(store.root).length === 0);
    await until('the context directory is removed', () => !tmpNames().some((n) => n.startsWith('context-')));
    await serverServes();
  });

  it('reads the rest of a refused upload before answering, so a slow client gets the error and no broken pipe', async () => {
    // The query is refused before the body is read; the client is still writing 4 MiB of it.
    const chunk = Buffer.alloc(256 * 1024, 1);
    const total = chunk.length * 16;
    const sock = net.connect(socket);
    let answer = '';
    let writeError: Error | undefined;
    sock.on('data', (c: Buffer) => (answer += c.toString()));
    sock.on('error', (e) => (writeError = e));
    const closed = new Promise((r) => sock.once('close', r));
    await new Promise((r) => sock.once('connect', r));
    sock.write(`POST /v1.41/build?networkmode=mynet HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: ${total}\r\n\r\n`);
    for (let i = 0; i < 16 && !writeError; i++) {
      await new Promise<void>((resolve) => sock.write(chunk, () => resolve()));
      await new Promise((r) => setTimeout(r, 25));
    }
    await closed;
    expect(writeError).toBeUndefined();
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer).toMatch(/Kiln builds with network \\"default\\" \(or \\"bridge\\"\), \\"host\\" or \\"none\\", not \\"mynet\\"/);
    await serverServes();
  });

  it('survives kill -9 mid-build: a restart on the same store verifies and builds', async () => {
    const ctx = join(work.path, 'crash');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'data'), 'kept\n');
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nCOPY data /data\nRUN echo started && sleep 60\n');
    const client = spawn(KILN, ['--host', `unix://${socket}`, 'build', '--progress', 'plain', ctx], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, XDG_CACHE_HOME: join(work.path, 'cache') } });
    let log = '';
    client.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((r) => client.once('exit', (code) => r(code)));
    await until('the RUN step runs', () => /started/.test(log) && kilnContainers(store.root).length > 0);
    await served!.crash();
    served = undefined;
    // The client learns that its server is gone, and fails rather than hanging.
    expect(await exited).not.toBe(0);

    served = await startServe(store.root, socket);
    await until('the restart cleans up what the dead server left', () => kilnContainers(store.root).length === 0 && mountsUnder(store.root).length === 0);
    expect(tmpNames().filter((n) => n.startsWith('context-'))).toEqual([]);
    const v = await kiln(store.root, ['store', 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nCOPY data /data\nRUN test "$(cat /data)" = kept\n');
    const b = await remote(['build', '-q', '-t', 'faults/after:1', ctx]);
    expect(b.code, b.stderr).toBe(0);
    const v2 = await kiln(store.root, ['store', 'verify']);
    expect(v2.code, v2.stdout + v2.stderr).toBe(0);
  });
});
