import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, tempDir } from '../helpers/kiln.js';

/**
 * A lying, slow and redirecting registry, written here on node:http, driven through `kiln pull`
 * and `FROM` in `kiln build`. Every hostile answer must end in a KilnError with exit code 1,
 * no stack trace, no image tagged, no temporary file left and no unverified blob stored.
 * A second server on another loopback address (127.0.0.2) plays the token service and the
 * storage that blobs redirect to, so that where credentials go can be watched.
 */

const USER = 'alice';
const PASSWORD = 's3cret-registry-password';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
const TOKEN = 'token-for-alice';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

interface Seen {
  host: 'registry' | 'other';
  method: string;
  url: string;
  authorization?: string;
}

/** A small valid image: one gzip layer holding /hello, its config and manifest. */
function makeImage(work: string) {
  const dir = join(work, 'layer');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hello'), 'hello from a fake registry\n');
  const tar = execFileSync('tar', ['-C', dir, '--owner=0', '--group=0', '--mtime=@0', '-cf', '-', 'hello']);
  const layer = gzipSync(tar);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/hello'] }, rootfs: { type: 'layers', diff_ids: [sha(tar)] } }));
  const manifestOf = (layerDigest: string) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_TYPE,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
      }),
    );
  return { layer, config, manifest: manifestOf(sha(layer)) };
}

describe('hostile registries', () => {
  let work: ReturnType<typeof tempDir>;
  let registry: http.Server;
  let other: http.Server;
  let reg = '';
  let otherOrigin = '';
  let env: Record<string, string>;
  const sockets = new Set<Socket>();
  const seen: Seen[] = [];
  let image: ReturnType<typeof makeImage>;

  const track = (server: http.Server) => server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const listen = (server: http.Server, address: string) =>
    new Promise<string>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => resolve(`${address}:${(server.address() as { port: number }).port}`));
    });

  function sendJson(res: http.ServerResponse, body: Buffer, headers: Record<string, string> = {}) {
    res.writeHead(200, { 'Content-Type': MANIFEST_TYPE, 'Content-Length': String(body.length), ...headers });
    res.end(body);
  }

  /** The registry: each repository name picks one behaviour. */
  function onRegistry(req: http.IncomingMessage, res: http.ServerResponse) {
    const url = req.url ?? '';
    seen.push({ host: 'registry', method: req.method ?? '', url, authorization: req.headers.authorization });
    const m = /^\/v2\/([a-z-]+)\/app\/(manifests|blobs)\/(.+)$/.exec(url);
    if (!m) {
      res.writeHead(url === '/v2/' ? 200 : 404).end();
      return;
    }
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    const blob = (digest: string) => (digest === sha(image.layer) ? image.layer : digest === sha(image.config) ? image.config : undefined);
    if (repo === 'token') {
      // Bearer auth whose realm is on another host, as Docker Hub's auth.docker.io.
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${otherOrigin}/token",service="fake",scope="repository:token/app:pull"` }).end();
        return;
      }
      if (kind === 'manifests') return sendJson(res, image.manifest, { 'Docker-Content-Digest': sha(image.manifest) });
      // Blobs live on the other host; the registry's token must not follow them there.
      res.writeHead(307, { Location: `http://${otherOrigin}/storage/${ref}` }).end();
      return;
    }
    if (repo === 'basic') {
      if (req.headers.authorization !== BASIC) {
        res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="fake"' }).end();
        return;
      }
      // The manifest itself lives elsewhere: basic credentials must stay with the registry.
      if (kind === 'manifests') res.writeHead(302, { Location: `http://${otherOrigin}/storage/manifest` }).end();
      else res.writeHead(302, { Location: `http://${otherOrigin}/storage/${ref}` }).end();
      return;
    }
    if (kind === 'blobs') {
      if (repo === 'blob-lies' && ref === sha(image.layer)) {
        const forged = Buffer.from(image.layer);
        forged[forged.length - 20] ^= 0xff;
        res.writeHead(200, { 'Content-Length': String(forged.length) }).end(forged);
        return;
      }
      if (repo === 'blob-loop' && ref === sha(image.layer)) {
        res.writeHead(302, { Location: `http://${otherOrigin}/storage/loop/0` }).end();
        return;
      }
      if (repo === 'blob-endless' && ref === sha(image.layer)) {
        // Chunked and never-ending: only the size the manifest gives can stop it.
        res.writeHead(200);
        const junk = Buffer.alloc(64 << 10, 0x41);
        const more = () => {
          while (!res.destroyed) if (!res.write(junk)) return void res.once('drain', more);
        };
        more();
        return;
      }
      if (repo === 'blob-stall' && ref === sha(image.layer)) {
        res.writeHead(200, { 'Content-Length': String(image.layer.length) });
        res.write(image.layer.subarray(0, 10));
        return; // and nothing more, ever
      }
      const body = blob(ref);
      if (!body) return void res.writeHead(404).end();
      res.writeHead(200, { 'Content-Length': String(body.length) }).end(body);
      return;
    }
    switch (repo) {
      case 'good':
      case 'blob-lies':
      case 'blob-loop':
      case 'blob-stall':
      case 'blob-endless':
        return sendJson(res, image.manifest, { 'Docker-Content-Digest': sha(image.manifest) });
      case 'manifest-lies': {
        // Asked by digest for the real manifest, it serves one whose layer is another.
        const other = Buffer.from(image.manifest.toString().replace(sha(image.layer), sha('something else')));
        return sendJson(res, other);
      }
      case 'digest-header-lies':
        return sendJson(res, image.manifest, { 'Docker-Content-Digest': sha('not this manifest') });
      case 'huge': {
        // Chunked, with no Content-Length to refuse it early: the limit must hold while reading.
        res.writeHead(200, { 'Content-Type': MANIFEST_TYPE });
        const pad = Buffer.alloc(64 << 10, 0x20);
        res.write('{"schemaVersion":2,"pad":"');
        let sent = 0;
        const more = () => {
          while (sent < 6 << 20) {
            sent += pad.length;
            if (!res.write(pad)) return void res.once('drain', more);
          }
          res.end('"}');
        };
        more();
        return;
      }
      case 'manifest-loop':
        res.writeHead(302, { Location: `/v2/manifest-loop/app/manifests/${Number(ref) + 1 || 1}` }).end();
        return;
      case 'stall':
        res.writeHead(200, { 'Content-Type': MANIFEST_TYPE, 'Content-Length': String(image.manifest.length) });
        res.write(image.manifest.subarray(0, 5));
        return; // and nothing more, ever
      case 'silent':
        return; // not even headers
      case 'trickle': {
        res.writeHead(200, { 'Content-Type': MANIFEST_TYPE, 'Content-Length': String(image.manifest.length) });
        let i = 0;
        // One byte every 100 ms: never idle long enough for the idle timeout.
        const timer = setInterval(() => {
          if (res.destroyed || i >= image.manifest.length) return void clearInterval(timer);
          res.write(image.manifest.subarray(i, ++i));
        }, 100);
        res.on('close', () => clearInterval(timer));
        return;
      }
    }
    res.writeHead(404).end();
  }

  /** The other host: token service and blob storage. */
  function onOther(req: http.IncomingMessage, res: http.ServerResponse) {
    const url = req.url ?? '';
    seen.push({ host: 'other', method: req.method ?? '', url, authorization: req.headers.authorization });
    if (url.startsWith('/token')) {
      if (req.headers.authorization !== BASIC) return void res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}');
      const body = JSON.stringify({ token: TOKEN });
      return void res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
    }
    const loop = /^\/storage\/loop\/(\d+)$/.exec(url);
    if (loop) return void res.writeHead(302, { Location: `/storage/loop/${Number(loop[1]) + 1}` }).end();
    if (url === '/storage/manifest') return sendJson(res, image.manifest);
    const digest = url.replace('/storage/', '');
    const body = digest === sha(image.layer) ? image.layer : digest === sha(image.config) ? image.config : undefined;
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': String(body.length) }).end(body);
  }

  beforeAll(async () => {
    work = tempDir('kiln-sec-registry-');
    image = makeImage(work.path);
    registry = track(http.createServer(onRegistry));
    other = track(http.createServer(onOther));
    reg = await listen(registry, '127.0.0.1');
    otherOrigin = await listen(other, '127.0.0.2');
    const docker = join(work.path, 'docker');
    mkdirSync(docker);
    writeFileSync(join(docker, 'config.json'), JSON.stringify({ auths: { [reg]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } }));
    env = {
      DOCKER_CONFIG: docker,
      KILN_REGISTRY_RETRY_MS: '5',
      KILN_REGISTRY_IDLE_TIMEOUT_MS: '1000',
      KILN_REGISTRY_CONNECT_TIMEOUT_MS: '2000',
      KILN_REGISTRY_READ_TIMEOUT_MS: '3000',
    };
  });

  afterAll(async () => {
    // Stalled responses hold their sockets open: end them, or close() would wait forever.
    for (const s of sockets) s.destroy();
    await Promise.all([registry, other].map((s) => s && new Promise<void>((resolve) => s.close(() => resolve()))));
    await work?.cleanup();
  });

  let stores = 0;
  /** A fresh, empty store per case: whatever it holds afterwards came from that case alone. */
  function freshStore(): string {
    const root = join(work.path, `store-${++stores}`);
    mkdirSync(root);
    return root;
  }

  const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

  /** What a failed pull or build must leave: no image, no temporary file, only verified blobs. */
  async function expectUntouched(root: string, unwanted: string[] = []) {
    const images = await kiln(root, ['images', '-q'], { env });
    expect(images.stdout.trim()).toBe('');
    expect(readdirSync(join(root, 'tmp'))).toEqual([]);
    const verify = await kiln(root, ['store', 'verify'], { env });
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const blobs = readdirSync(join(root, 'blobs/sha256')).map((h) => `sha256:${h}`);
    for (const d of unwanted) expect(blobs).not.toContain(d);
  }

  /** Runs the reference through `kiln pull` and through `FROM` in `kiln build` on fresh stores. */
  async function bothWays(ref: string, message: RegExp, unwanted: string[] = []) {
    const pullRoot = freshStore();
    const pull = await kiln(pullRoot, ['pull', '-q', ref], { env, timeoutMs: 60_000 });
    expect(pull.code, pull.stderr).toBe(1);
    expect(pull.stderr).toMatch(message);
    noStack(pull.stderr);
    await expectUntouched(pullRoot, unwanted);

    const buildRoot = freshStore();
    const ctx = join(work.path, `ctx-${stores}`);
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${ref}\nLABEL x=y\n`);
    const build = await kiln(buildRoot, ['build', '--progress', 'plain', '-t', 'sec/out:1', ctx], { env, timeoutMs: 60_000 });
    expect(build.code, build.stderr).toBe(1);
    expect(build.stderr).toMatch(message);
    noStack(build.stderr);
    await expectUntouched(buildRoot, unwanted);
  }

  it('pulls a well-behaved image from the same fake server (the cases below fail for their own reason)', async () => {
    const root = freshStore();
    const r = await kiln(root, ['pull', '-q', `${reg}/good/app:1`], { env });
    expect(r.code, r.stderr).toBe(0);
    expect((await kiln(root, ['images', '-q'], { env })).stdout.trim()).not.toBe('');
  });

  it('refuses a manifest whose content does not match the digest asked for', async () => {
    await bothWays(`${reg}/manifest-lies/app@${sha(image.manifest)}`, /DIGEST_MISMATCH|hashes to/);
  });

  it('refuses a manifest whose content does not match the digest the registry announces', async () => {
    await bothWays(`${reg}/digest-header-lies/app:1`, /hashes to "sha256:[0-9a-f]{64}", but the registry announced/);
  });

  it('refuses a blob whose content does not match its digest, and keeps none of it', async () => {
    await bothWays(`${reg}/blob-lies/app:1`, /Cannot fetch blob "sha256:[0-9a-f]{64}" .*: the content the registry sent does not match/, [sha(image.layer)]);
  });

  it('stops an endless blob at the size the manifest gives', async () => {
    await bothWays(`${reg}/blob-endless/app:1`, /sent more than the \d+ bytes the manifest gives/, [sha(image.layer)]);
  });

  it('refuses a manifest larger than 4 MiB, while reading it', async () => {
    await bothWays(`${reg}/huge/app:1`, /larger than 4194304 bytes/);
    const hits = seen.filter((s) => s.url.startsWith('/v2/huge/'));
    // Final, not temporary: asked once per command (pull, build), not five times each.
    expect(hits.length).toBeLessThanOrEqual(2);
  });

  it('stops after 10 redirects of a manifest', async () => {
    await bothWays(`${reg}/manifest-loop/app:1`, /stopped after 10 redirects/);
  });

  it('stops after 10 redirects of a blob, on another host', async () => {
    const before = seen.filter((s) => s.host === 'other' && s.url.startsWith('/storage/loop/')).length;
    await bothWays(`${reg}/blob-loop/app:1`, /stopped after 10 redirects/, [sha(image.layer)]);
    const hops = seen.filter((s) => s.host === 'other' && s.url.startsWith('/storage/loop/')).length - before;
    // Two commands, each refusing the 11th hop: the loop was cut, not followed at length.
    expect(hops).toBeGreaterThan(0);
    expect(hops).toBeLessThanOrEqual(2 * 10);
  });

  it('times out a manifest that stalls after its headers', async () => {
    await bothWays(`${reg}/stall/app:1`, /sent nothing for 1000 ms/);
  });

  it('times out a registry that never sends headers', async () => {
    await bothWays(`${reg}/silent/app:1`, /sent nothing for 1000 ms/);
  });

  it('gives up on a manifest trickled a byte at a time', async () => {
    await bothWays(`${reg}/trickle/app:1`, /took longer than 3000 ms/);
  });

  it('times out a blob that stalls halfway', async () => {
    await bothWays(`${reg}/blob-stall/app:1`, /sent nothing for 1000 ms/, [sha(image.layer)]);
  });

  it('sends basic credentials to a token realm on another host, as docker does, and the token only to the registry', async () => {
    const from = seen.length;
    const root = freshStore();
    const r = await kiln(root, ['pull', '-q', `${reg}/token/app:1`], { env });
    expect(r.code, r.stderr).toBe(0);
    const mine = seen.slice(from);
    const tokenRequests = mine.filter((s) => s.host === 'other' && s.url.startsWith('/token'));
    expect(tokenRequests.length).toBeGreaterThan(0);
    expect(tokenRequests.every((s) => s.authorization === BASIC)).toBe(true);
    expect(tokenRequests[0]!.url).toContain('account=alice');
    const storage = mine.filter((s) => s.host === 'other' && s.url.startsWith('/storage/'));
    expect(storage.length).toBe(2);
    expect(storage.map((s) => s.authorization)).toEqual([undefined, undefined]);
    expect(mine.filter((s) => s.host === 'registry' && s.authorization !== undefined).every((s) => s.authorization === `Bearer ${TOKEN}`)).toBe(true);
  });

  it('never sends credentials after a redirect to another host, manifests included', async () => {
    const from = seen.length;
    const root = freshStore();
    const r = await kiln(root, ['pull', '-q', `${reg}/basic/app:1`], { env });
    expect(r.code, r.stderr).toBe(0);
    const mine = seen.slice(from);
    expect(mine.some((s) => s.host === 'registry' && s.authorization === BASIC)).toBe(true);
    const elsewhere = mine.filter((s) => s.host === 'other');
    expect(elsewhere.map((s) => s.url).sort()).toEqual(['/storage/manifest', `/storage/${sha(image.config)}`, `/storage/${sha(image.layer)}`].sort());
    expect(elsewhere.every((s) => s.authorization === undefined)).toBe(true);
  });
});
