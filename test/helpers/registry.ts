import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { X509Certificate, createSign, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function waitFor(url: string, child: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      http.get(url, (res) => {
        res.resume();
        resolve(res.statusCode !== undefined);
      }).on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry did not answer at ${url}: ${log()}`);
}

/** Token authentication as the registry's config names it: where to get tokens and whom to trust. */
export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate bundle whose keys sign the tokens. */
  rootCertBundle: string;
}

/**
 * Starts Debian's docker-registry (distribution 2.8) on a free loopback port with filesystem
 * storage in a temporary directory; `htpasswd` adds basic auth for one user, `token` bearer
 * token auth against a token server.
 */
export async function startRegistry(options: { htpasswd?: { user: string; password: string }; token?: TokenAuthConfig } = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let auth = '';
  if (options.htpasswd) {
    const line = execFileSync('htpasswd', ['-Bbn', options.htpasswd.user, options.htpasswd.password], { encoding: 'utf8' });
    writeFileSync(join(dir, 'htpasswd'), line);
    auth = `auth: {htpasswd: {realm: kiln-test, path: ${join(dir, 'htpasswd')}}}\n`;
  }
  if (options.token) {
    const t = options.token;
    auth = `auth: {token: {realm: "${t.realm}", service: "${t.service}", issuer: "${t.issuer}", rootcertbundle: "${t.rootCertBundle}"}}\n`;
  }
  writeFileSync(
    join(dir, 'config.yml'),
    `version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: ${join(dir, 'data')}}, delete: {enabled: true}}\nhttp: {addr: ${host}}\n${auth}`,
  );
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(`http://${host}/v2/`, child, () => log);
  } catch (err) {
    await stop();
    throw err;
  }
  return { host, stop };
}

/** What the fault proxy does with one request. */
export type Fault = 'pass' | 500 | 429 | 503 | 'reset';

export interface FaultProxy {
  host: string;
  /** Every request seen, as `METHOD path`. */
  seen: string[];
  /** The Authorization header of every request that had one. */
  authorizations: string[];
  stop(): Promise<void>;
}

/** A proxy in front of a registry that fails chosen requests: `rule` decides for each one. */
export async function startFaultProxy(target: string, rule: (method: string, path: string) => Fault): Promise<FaultProxy> {
  const seen: string[] = [];
  const authorizations: string[] = [];
  const [thost, tport] = target.split(':') as [string, string];
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    seen.push(`${req.method} ${path}`);
    if (req.headers.authorization) authorizations.push(req.headers.authorization);
    const fault = rule(req.method ?? 'GET', path);
    if (fault === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault !== 'pass') {
      req.resume();
      res.writeHead(fault, { 'Content-Type': 'application/json', ...(fault === 429 ? { 'Retry-After': '0' } : {}) });
      res.end(JSON.stringify({ errors: [{ code: fault === 429 ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', message: `injected ${fault}` }] }));
      return;
    }
    const headers = { ...req.headers, host: target };
    const up = http.request({ host: thost, port: Number(tport), method: req.method, path, headers }, (ur) => {
      const h = { ...ur.headers };
      // Upload locations name the registry: rewrite them so that the client stays on the proxy.
      if (typeof h.location === 'string') h.location = h.location.replace(`//${target}`, `//${proxyHost}`);
      res.writeHead(ur.statusCode ?? 502, h);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxyHost = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    host: proxyHost,
    seen,
    authorizations,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A JSON or raw call to a registry's HTTP API, for checking its state. */
export async function registryApi(host: string, path: string, options: { method?: string; accept?: string; auth?: string; bearer?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      Accept: options.accept ?? 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json',
    };
    if (options.auth) headers.Authorization = `Basic ${Buffer.from(options.auth).toString('base64')}`;
    if (options.bearer) headers.Authorization = `Bearer ${options.bearer}`;
    const req = http.request(`http://${host}${path}`, { method: options.method ?? 'GET', headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Puts a document to the registry (an index made by hand, say). */
export async function registryPut(host: string, path: string, contentType: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`http://${host}${path}`, { method: 'PUT', headers: { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

export function tempDocker(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-docker-config-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One request the token server answered. */
export interface TokenRequest {
  /** The user of the request's basic credentials, if it had any. */
  user: string | undefined;
  /** Whether those credentials were right. */
  authenticated: boolean;
  service: string | undefined;
  scopes: string[];
  /** What the token it gave grants: `repository:secret/app:pull`. */
  granted: string[];
}

export interface TokenUser {
  password: string;
  /** Repository → the actions this user may have on it. */
  grants: Record<string, string[]>;
}

export interface TokenRegistry extends TestRegistry {
  /** The token server's requests, in order. */
  requests: TokenRequest[];
  /** A token granting `access` (`repository:NAME:ACTIONS`), for checking the registry's state. */
  mint(access: readonly string[]): string;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * A registry behind bearer tokens, as Docker Hub and most private registries work: a token server
 * in this process (node:http) checks basic credentials and signs RS256 JWTs with a self-signed
 * certificate, and docker-registry trusts that certificate (the JWT carries it in `x5c`, which the
 * registry verifies against its `rootcertbundle`). Each user gets only the scopes `users` grants.
 * `stop` stops both, and a failed start leaves neither running.
 */
export async function startTokenRegistry(users: Record<string, TokenUser>): Promise<TokenRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-token-'));
  const service = 'kiln-test-registry';
  const issuer = 'kiln-test-token-issuer';
  const requests: TokenRequest[] = [];
  let server: http.Server | undefined;
  let registry: TestRegistry | undefined;
  const stop = async () => {
    await registry?.stop();
    if (server) {
      const s = server;
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const keyPath = join(dir, 'key.pem');
    const certPath = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=kiln-test-token-signer'], { stdio: 'ignore' });
    const key = readFileSync(keyPath, 'utf8');
    const x5c = [new X509Certificate(readFileSync(certPath)).raw.toString('base64')];
    const mint = (access: readonly string[], subject = ''): string => {
      const now = Math.floor(Date.now() / 1000);
      const header = base64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c }));
      const claims = base64url(
        JSON.stringify({
          iss: issuer,
          sub: subject,
          aud: service,
          exp: now + 600,
          nbf: now - 10,
          iat: now,
          jti: randomUUID(),
          access: access.map((a) => {
            const parts = a.split(':');
            return { type: parts[0], name: parts.slice(1, -1).join(':'), actions: parts.at(-1)!.split(',') };
          }),
        }),
      );
      const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key);
      return `${header}.${claims}.${base64url(signature)}`;
    };
    server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://token');
      req.resume();
      const answer = (status: number, body: object) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.method !== 'GET' || url.pathname !== '/token') return answer(404, { errors: [{ code: 'NOT_FOUND', message: 'no such endpoint' }] });
      const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
      let user: string | undefined;
      let authenticated = false;
      if (basic) {
        const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        user = decoded.slice(0, colon);
        authenticated = colon > 0 && users[user]?.password === decoded.slice(colon + 1);
      }
      const record: TokenRequest = { user, authenticated, service: url.searchParams.get('service') ?? undefined, scopes, granted: [] };
      requests.push(record);
      if (basic && !authenticated) return answer(401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] });
      // Anonymous requests get a token with no access: the registry then refuses what needs one.
      const grants = user && authenticated ? users[user]!.grants : {};
      for (const scope of scopes) {
        const parts = scope.split(':');
        if (parts[0] !== 'repository' || parts.length < 3) continue;
        const name = parts.slice(1, -1).join(':');
        const allowed = parts.at(-1)!.split(',').filter((a) => grants[name]?.includes(a));
        if (allowed.length > 0) record.granted.push(`repository:${name}:${allowed.join(',')}`);
      }
      const token = mint(record.granted, user ?? '');
      answer(200, { token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() });
    });
    const s = server;
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    const realm = `http://127.0.0.1:${(s.address() as net.AddressInfo).port}/token`;
    registry = await startRegistry({ token: { realm, service, issuer, rootCertBundle: certPath } });
    return { host: registry.host, requests, mint: (access) => mint(access, 'test'), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
