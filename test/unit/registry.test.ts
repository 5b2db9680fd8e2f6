import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseChallenge } from '../../src/registry/auth.js';
import { RegistryClient, canonicalScopes } from '../../src/registry/client.js';
import { findCredentials, removeCredentials, storeCredentials } from '../../src/registry/dockerconfig.js';
import { RegistryError, errorFromResponse } from '../../src/registry/errors.js';
import { isInsecureRegistry } from '../../src/registry/insecure.js';
import { readBody } from '../../src/registry/transport.js';
import { parsePlatform, selectManifest } from '../../src/image/platform.js';
import type { Descriptor } from '../../src/image/oci.js';

describe('WWW-Authenticate', () => {
  it('parses bearer challenges with quoted commas', () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:a/b:pull,push' },
    });
    expect(parseChallenge('Basic realm="kiln test"')).toEqual({ scheme: 'basic', params: { realm: 'kiln test' } });
  });

  it('names the scopes of a refusal the same way whatever order the registry lists actions in', () => {
    expect(canonicalScopes('repository:secret/app:push,pull')).toBe('repository:secret/app:pull,push');
    expect(canonicalScopes('repository:a:push,pull repository:b:pull')).toBe('repository:a:pull,push repository:b:pull');
    expect(canonicalScopes('registry:catalog:*')).toBe('registry:catalog:*');
  });
});

describe('registry errors', () => {
  it('keep the spec code and say whether to retry', () => {
    const e = errorFromResponse(404, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}', 'Cannot fetch');
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.temporary).toBe(false);
    expect(e.message).toBe('Cannot fetch: MANIFEST_UNKNOWN: manifest unknown');
    expect(errorFromResponse(429, '', 'x').temporary).toBe(true);
    expect(errorFromResponse(502, '<html>', 'x').code).toBe('UNAVAILABLE');
    expect(errorFromResponse(403, '', 'x').code).toBe('DENIED');
  });
});

describe('platform selection', () => {
  const d = (os: string, architecture: string, variant?: string): Descriptor => ({ mediaType: 'm', digest: `sha256:${`${os}${architecture}${variant ?? ''}`.padEnd(64, '0').slice(0, 64)}` as never, size: 1, platform: { os, architecture, ...(variant ? { variant } : {}) } });
  const list = [d('linux', 'arm', 'v6'), d('linux', 'arm', 'v7'), d('linux', 'arm64'), d('linux', 'amd64'), d('windows', 'amd64'), d('unknown', 'unknown')];
  it('matches OS, architecture and the best compatible variant', () => {
    expect(selectManifest(list, parsePlatform('linux/amd64'))).toBe(list[3]);
    expect(selectManifest(list, parsePlatform('linux/arm64/v8'))).toBe(list[2]);
    expect(selectManifest(list, parsePlatform('linux/arm'))).toBe(list[1]);
    expect(selectManifest([list[0]!], parsePlatform('linux/arm/v7'))).toBe(list[0]);
    expect(selectManifest(list, parsePlatform('windows/amd64'))).toBe(list[4]);
    expect(selectManifest(list, parsePlatform('linux/s390x'))).toBeUndefined();
    expect(() => parsePlatform('linux')).toThrow(/OS\/ARCH/);
  });
});

describe('insecure registries', () => {
  it('are loopback hosts and the listed ones', () => {
    // A path under /proc can never be created, so no config is there whatever else runs.
    const env = { KILN_CONFIG: '/proc/kiln-no-config.json', KILN_INSECURE_REGISTRIES: 'reg.lan:5000' };
    expect(isInsecureRegistry('localhost:5000', [], env)).toBe(true);
    expect(isInsecureRegistry('127.0.0.9:80', [], env)).toBe(true);
    expect(isInsecureRegistry('reg.lan:5000', [], env)).toBe(true);
    expect(isInsecureRegistry('other.lan', ['other.lan'], env)).toBe(true);
    expect(isInsecureRegistry('docker.io', [], env)).toBe(false);
  });
});

describe('docker config credentials', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kiln-dockercfg-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('stores, finds and removes credentials as docker does, keeping other keys', async () => {
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw').toString('base64') } }, psFormat: 'table' }));
    expect(await findCredentials('docker.io', { path })).toEqual({ username: 'hub', password: 'pw' });
    await storeCredentials('reg.lan:5000', { username: 'u', password: 'p:w' }, { path });
    expect(await findCredentials('reg.lan:5000', { path })).toEqual({ username: 'u', password: 'p:w' });
    const saved = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    expect(saved.psFormat).toBe('table');
    expect(await removeCredentials('reg.lan:5000', { path })).toBe(true);
    expect(await findCredentials('reg.lan:5000', { path })).toBeUndefined();
    expect(await removeCredentials('reg.lan:5000', { path })).toBe(false);
  });
});

describe('the client against a fake registry with a token server', () => {
  let server: http.Server;
  let host: string;
  const log: string[] = [];
  let failNext = 0;

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      log.push(`${req.method} ${url.pathname}${url.search}`);
      if (url.pathname === '/token') {
        const basic = req.headers.authorization === `Basic ${Buffer.from('bob:pw').toString('base64')}`;
        if (!basic) {
          res.writeHead(401).end('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token: `tok:${url.searchParams.getAll('scope').join(' ')}` }));
        return;
      }
      if (failNext > 0) {
        failNext--;
        res.writeHead(503).end();
        return;
      }
      const scope = 'repository:acc/app:pull';
      if (req.headers.authorization !== `Bearer tok:${scope}`) {
        res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${host}/token",service="fake",scope="${scope}"` }).end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('gets a bearer token for the scope with basic credentials, once', async () => {
    const client = new RegistryClient(host, { credentials: { username: 'bob', password: 'pw' }, retryBaseMs: 1 });
    const get = async () => (await readBody(await client.request({ method: 'GET', path: '/v2/acc/app/manifests/1', scopes: ['repository:acc/app:pull'], what: 'x' }))).toString();
    log.length = 0;
    expect(await get()).toBe('ok');
    expect(await get()).toBe('ok');
    expect(log.filter((l) => l.startsWith('GET /token'))).toEqual(['GET /token?service=fake&scope=repository%3Aacc%2Fapp%3Apull&account=bob']);
  });

  it('retries 5xx with backoff and then gives up with the code', async () => {
    const client = new RegistryClient(host, { credentials: { username: 'bob', password: 'pw' }, retryBaseMs: 1 });
    failNext = 2;
    const ok = await client.request({ method: 'GET', path: '/v2/acc/app/manifests/1', scopes: ['repository:acc/app:pull'], what: 'x' });
    expect(ok.status).toBe(200);
    await readBody(ok);
    failNext = 100;
    const err = await client.request({ method: 'GET', path: '/v2/acc/app/manifests/1', scopes: ['repository:acc/app:pull'], what: 'Cannot fetch' }).catch((e: unknown) => e);
    failNext = 0;
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe('UNAVAILABLE');
    expect((err as RegistryError).temporary).toBe(true);
    expect((err as RegistryError).message).toMatch(/gave up after 5 attempts/);
  });

  it('reports refused credentials as UNAUTHORIZED without retrying', async () => {
    const client = new RegistryClient(host, { credentials: { username: 'bob', password: 'wrong' }, retryBaseMs: 1 });
    const err = await client.ping().catch((e: unknown) => e);
    expect((err as RegistryError).code).toBe('UNAUTHORIZED');
    expect((err as RegistryError).temporary).toBe(false);
  });
});
