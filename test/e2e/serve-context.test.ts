import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import Database from 'better-sqlite3';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, stepCached, stepRan, storeWithBase, tempDir } from '../helpers/kiln.js';
import { netRawCapability } from '../helpers/xattrs.js';
import { type Served, startServe } from './serve-helpers.js';

const FILES = 2000;
const FILE_BYTES = 1024;

interface ContextStats {
  uploads: number;
  listBytes: number;
  contentBytes: number;
  filesReceived: number;
  filesReused: number;
}

function contextStats(socket: string): Promise<ContextStats> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: socket, path: '/v1/info' }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve((JSON.parse(text) as { context: ContextStats }).context));
      })
      .on('error', reject);
  });
}

function postTo(socket: string, path: string, body: string | Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, path, method: 'POST' }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const delta = (a: ContextStats, b: ContextStats) => ({
  listBytes: b.listBytes - a.listBytes,
  contentBytes: b.contentBytes - a.contentBytes,
  filesReceived: b.filesReceived - a.filesReceived,
  filesReused: b.filesReused - a.filesReused,
});

/**
 * Incremental context upload: the client lists the context with checksums, the server says what
 * it lacks, and only that crosses the wire. The server counts the bytes it receives.
 */
describe('kiln serve: incremental context upload', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let ctx: string;
  let env: Record<string, string>;
  let firstId = '';

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-ctx-')];
    env = { XDG_CACHE_HOME: join(work.path, 'cache') };
    ctx = join(work.path, 'ctx');
    mkdirSync(join(ctx, 'files'), { recursive: true });
    for (let i = 0; i < FILES; i++) writeFileSync(join(ctx, 'files', `f${i}`), randomBytes(FILE_BYTES));
    writeFileSync(join(ctx, 'files', 'f7'), `seven${'.'.repeat(FILE_BYTES - 5)}`);
    // Left out by .dockerignore: a large file that must never cross the wire.
    mkdirSync(join(ctx, 'ignored'));
    writeFileSync(join(ctx, 'ignored', 'big'), randomBytes(4 * 1024 * 1024));
    writeFileSync(join(ctx, 'run.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(ctx, 'run.sh'), 0o755);
    // The same content with another mode: one cached content, two files that differ.
    writeFileSync(join(ctx, 'same.sh'), '#!/bin/sh\necho hi\n');
    chmodSync(join(ctx, 'same.sh'), 0o600);
    symlinkSync('run.sh', join(ctx, 'link'));
    writeFileSync(join(ctx, '.dockerignore'), 'ignored\nDockerfile\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM test/base:1',
        'COPY . /ctx',
        `RUN test "$(ls /ctx/files | wc -l)" = ${FILES} && test ! -e /ctx/ignored && test ! -e /ctx/Dockerfile && test "$(stat -c %a /ctx/run.sh)" = 755 && test "$(stat -c %a /ctx/same.sh)" = 600 && test "$(readlink /ctx/link)" = run.sh && head -c 5 /ctx/files/f7 > /seven`,
        '',
      ].join('\n'),
    );
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  const build = () => kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'build', '-q', '-t', 'ctx/app:1', ctx], { env });

  it('sends every content once, then only the list for an unchanged context', async () => {
    const s0 = await contextStats(served!.socket);
    const first = await build();
    expect(first.code, first.stderr).toBe(0);
    const s1 = await contextStats(served!.socket);
    const d1 = delta(s0, s1);
    // The files and run.sh, .dockerignore and the Dockerfile; not the ignored 4 MiB.
    expect(d1.filesReceived).toBe(FILES + 3);
    expect(d1.filesReused).toBe(1);
    expect(d1.contentBytes).toBeGreaterThanOrEqual(FILES * FILE_BYTES);
    expect(d1.contentBytes).toBeLessThan(FILES * FILE_BYTES * 2);

    const second = await build();
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    firstId = first.stdout;
    const d2 = delta(s1, await contextStats(served!.socket));
    expect(d2.filesReceived).toBe(0);
    expect(d2.filesReused).toBe(FILES + 4);
    // An empty tar is all the content part holds: two zero blocks, padded to a record.
    expect(d2.contentBytes).toBeLessThanOrEqual(10240);
    expect(d2.listBytes).toBeLessThan(d1.contentBytes / 4);
    console.log(`incremental upload of ${FILES} files: first build ${d1.contentBytes} content bytes + ${d1.listBytes} list bytes; unchanged second build ${d2.contentBytes} content bytes + ${d2.listBytes} list bytes`);
   }, 240_000);

  it('sends only a changed file, and the build sees the change', async () => {
    const before = await contextStats(served!.socket);
    writeFileSync(join(ctx, 'files', 'f7'), `SEVEN${'.'.repeat(FILE_BYTES - 5)}`);
    const r = await build();
    expect(r.code, r.stderr).toBe(0);
    const d = delta(before, await contextStats(served!.socket));
    expect(d.filesReceived).toBe(1);
    // The COPY step saw the new content: the image is another one.
    expect(r.stdout).toMatch(/^sha256:/);
    expect(r.stdout).not.toBe(firstId);
    expect(d.contentBytes).toBeLessThan(FILE_BYTES + 10240);
    // Each build's context directory is gone, and so are the checksum memos of its files.
    const db = new Database(join(store.root, 'kiln.db'), { readonly: true });
    try {
      for (const table of ['checksums', 'checksum_dirs']) {
        const row = db.prepare(`SELECT count(*) AS n FROM ${table} WHERE path LIKE ?`).get(`${join(store.root, 'tmp')}/%`) as { n: number };
        expect(row.n, table).toBe(0);
      }
    } finally {
      db.close();
    }
   }, 120_000);

  it('keeps the client memo beside the user cache, not in a store', () => {
    expect(readdirSync(join(work.path, 'cache', 'kiln', 'context-checksums')).length).toBe(1);
    expect(readdirSync(work.path)).not.toContain('no-store');
  });

  it('refuses content that does not hash to its name and a list with a link outside', async () => {
    const post = (path: string, body: string | Buffer) => postTo(served!.socket, path, body);
    const entry = { type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 0 };
    const bad = await post('/v1/build', `{"context":"list"}\n${JSON.stringify({ entries: [{ ...entry, path: 'x', target: '../../etc' }] })}\n${'\0'.repeat(1024)}`);
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('a symbolic link to \\"../../etc\\" outside the context');
    const claimed = `sha256:${createHash('sha256').update('hello').digest('hex')}`;
    const pack = tar.pack();
    pack.entry({ name: claimed.slice(7), size: 5 }, 'HELLO');
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const file = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 5, checksum: claimed };
    const forged = await post('/v1/build', Buffer.concat([Buffer.from(`{"context":"list"}\n${JSON.stringify({ entries: [file] })}\n`), ...chunks]));
    expect(forged.status, forged.text + served!.log()).toBe(400);
    expect(forged.text).toContain('CONTEXT_CHECKSUM_MISMATCH');
    expect(existsSync(join(store.root, 'context-files', 'sha256', claimed.slice(7)))).toBe(false);
    const missing = await post('/v1/context/missing', JSON.stringify({ checksums: ['nope'] }));
    expect(missing.status).toBe(400);
    expect(missing.text).toContain('is not a sha256 checksum');
  });
  it('carries extended attributes of the context, refuses overlayfs ones, and a changed attribute misses the cache', async () => {
    const attrs = join(work.path, 'attrs');
    mkdirSync(join(attrs, 'sub'), { recursive: true });
    writeFileSync(join(attrs, 'Dockerfile'), 'FROM test/base:1\nCOPY . /in\n');
    writeFileSync(join(attrs, 'ping'), 'ping\n');
    writeFileSync(join(attrs, 'twin'), 'ping\n');
    const capability = netRawCapability();
    setAttributeSync(join(attrs, 'ping'), 'security.capability', capability);
    setAttributeSync(join(attrs, 'ping'), 'user.kiln.note', 'first');
    setAttributeSync(join(attrs, 'sub'), 'user.kiln.dir', 'd');
    const out = join(work.path, 'attrs-out');
    const remote = (...args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'build', ...args, attrs], { env });
    const first = await remote('--progress', 'plain', '-o', `type=local,dest=${out}`);
    expect(first.code, first.stderr).toBe(0);
    const read = (path: string, name: string) => getAttributeSync(join(out, path), name)?.toString('hex');
    expect(read('in/ping', 'security.capability')).toBe(capability.toString('hex'));
    expect(read('in/ping', 'user.kiln.note')).toBe(Buffer.from('first').toString('hex'));
    expect(read('in/sub', 'user.kiln.dir')).toBe(Buffer.from('d').toString('hex'));
    // The same content without attributes is another file: none leak onto it.
    expect(listAttributesSync(join(out, 'in/twin'))).toEqual([]);
    // Once the files are old enough for the client to memoise them (two seconds), the attributes
    // come from its memo: still sent.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    for (const n of [1, 2]) {
      const r = await remote('-q', '-o', `type=local,dest=${out}-m${n}`);
      expect(r.code, r.stderr).toBe(0);
      expect(getAttributeSync(join(`${out}-m${n}`, 'in/ping'), 'security.capability')?.toString('hex')).toBe(capability.toString('hex'));
      expect(getAttributeSync(join(`${out}-m${n}`, 'in/sub'), 'user.kiln.dir')?.toString()).toBe('d');
    }
    // Only the attribute changes (same content and times): the COPY runs again with the new value.
    setAttributeSync(join(attrs, 'ping'), 'user.kiln.note', 'second');
    const again = await remote('--progress', 'plain', '-o', `type=local,dest=${out}-2`);
    expect(again.code, again.stderr).toBe(0);
    expect(stepRan(again.stderr, 'COPY . /in')).toBe(true);
    expect(getAttributeSync(join(`${out}-2`, 'in/ping'), 'user.kiln.note')?.toString()).toBe('second');
    expect(getAttributeSync(join(`${out}-2`, 'in/ping'), 'security.capability')?.toString('hex')).toBe(capability.toString('hex'));
    // A list that gives overlayfs' own attributes is refused, whoever sent it.
    const entry = { path: 'd', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: { 'trusted.overlay.opaque': Buffer.from('y').toString('base64') } };
    const bad = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ socketPath: served!.socket, path: '/v1/build', method: 'POST' }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end(`{"context":"list"}\n${JSON.stringify({ entries: [entry] })}\n${'\0'.repeat(1024)}`);
    });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('an extended attribute a context cannot carry: \\"trusted.overlay.opaque\\"');
  }, 120_000);

  it("shares the cache with a local build of the same context on the server's store, its root included", async () => {
    // COPY .'s checksum covers the root's mode and owner: the list sends the root as ".".
    const listed = join(work.path, 'root-750');
    mkdirSync(listed);
    chmodSync(listed, 0o750);
    writeFileSync(join(listed, 'a.txt'), 'a\n');
    writeFileSync(join(listed, 'Dockerfile'), 'FROM test/base:1\nCOPY . /ctx\nRUN stat -c %a /ctx > /mode\n');
    const local = await kiln(store.root, ['build', '-q', listed]);
    expect(local.code, local.stderr).toBe(0);
    const iid = join(work.path, 'root-750.iid');
    // Which files the client loaded: a client of a build service needs none of the engine.
    const loadedList = join(work.path, 'client-modules');
    const preload = join(work.path, 'client-modules.cjs');
    writeFileSync(preload, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(loadedList)}, Object.keys(require.cache).join('\\n')));\n`);
    const remote = await kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, 'build', '--progress', 'plain', '--iidfile', iid, listed], {
      env: { ...env, NODE_OPTIONS: `--require ${preload}` },
    });
    expect(remote.code, remote.stderr).toBe(0);
    expect(stepCached(remote.stderr, 'COPY . /ctx'), remote.stderr).toBe(true);
    expect(readFileSync(iid, 'utf8')).toBe(local.stdout.trim());
    const loaded = readFileSync(loadedList, 'utf8').split('\n').filter((f) => f.includes('/dist/bundle/'));
    expect(loaded.length).toBeGreaterThan(3);
    for (const f of loaded) {
      const source = readFileSync(f, 'utf8');
      expect(source.includes('function compileDockerfile('), f).toBe(false);
      expect(source.includes('var Engine = class'), f).toBe(false);
    }

    // A whole tar without an entry for its root (as the docker client sends) gets the root that
    // mkdir gives a local context.
    const plain = join(work.path, 'root-755');
    mkdirSync(plain);
    chmodSync(plain, 0o755);
    const dockerfile = 'FROM test/base:1\nCOPY . /ctx\nRUN echo tar > /how\n';
    writeFileSync(join(plain, 'Dockerfile'), dockerfile);
    writeFileSync(join(plain, 'b.txt'), 'b\n');
    chmodSync(join(plain, 'Dockerfile'), 0o644);
    chmodSync(join(plain, 'b.txt'), 0o644);
    const localPlain = await kiln(store.root, ['build', '-q', plain]);
    expect(localPlain.code, localPlain.stderr).toBe(0);
    const pack = tar.pack();
    pack.entry({ name: 'Dockerfile', mode: 0o644 }, dockerfile);
    pack.entry({ name: 'b.txt', mode: 0o644 }, 'b\n');
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack) chunks.push(c as Buffer);
    const r = await postTo(served!.socket, '/v1/build', Buffer.concat([Buffer.from('{}\n'), ...chunks]));
    expect(r.status, r.text).toBe(200);
    const events = r.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; image?: string; name?: string; cached?: boolean });
    expect(events.find((e) => e.type === 'result')?.image, r.text).toBe(localPlain.stdout.trim());
  }, 120_000);

  it('lets store verify check, du count and prune remove the uploaded context files', async () => {
    const dir = join(store.root, 'context-files', 'sha256');
    const contents = readdirSync(dir);
    expect(contents.length).toBeGreaterThanOrEqual(FILES);
    const variants = readdirSync(join(store.root, 'context-files', 'variants'));
    const v = await kiln(store.root, ['store', 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain(`, ${contents.length + variants.length} uploaded context files: no problems\n`);

    // A content whose bytes no longer hash to its name is a problem that names it.
    const victim = join(dir, contents[0]!);
    const original = readFileSync(victim);
    writeFileSync(victim, Buffer.concat([original.subarray(0, 10), Buffer.from('x')]));
    const bad = await kiln(store.root, ['store', 'verify']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`problem: Uploaded context file "${contents[0]}" hashes to "sha256:`);
    writeFileSync(victim, original);

    const du = await kiln(store.root, ['du', '-v']);
    const row = /^contexts +context-files +(\S+) .* false +true +uploaded context files \((\d+)\)$/m.exec(du.stdout);
    expect(row, du.stdout).not.toBeNull();
    expect(Number(row![2])).toBe(contents.length + variants.length);
    // Used moments ago: a plain prune keeps them for the next upload.
    expect((await kiln(store.root, ['prune', '-f'])).stdout).not.toMatch(/uploaded context file/);
    expect(readdirSync(dir).length).toBe(contents.length);
    const all = await kiln(store.root, ['prune', '-f', '-a']);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain(`contexts      ${contents.length + variants.length} uploaded context files\n`);
    expect(readdirSync(dir)).toEqual([]);
    expect((await kiln(store.root, ['du'])).stdout).not.toMatch(/^contexts /m);
    // The next upload sends the contents again and builds as before.
    const again = await build();
    expect(again.code, again.stderr).toBe(0);
    expect(readdirSync(dir).length).toBeGreaterThanOrEqual(FILES);
  });
});
