import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

/**
 * Starts Debian's docker-registry (distribution 2.8) on a free loopback port with filesystem
 * storage in a temporary directory; `htpasswd` adds basic auth for one user.
 */
export async function startRegistry(options: { htpasswd?: { user: string; password: string } } = {}): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let auth = '';
  if (options.htpasswd) {
    const line = execFileSync('htpasswd', ['-Bbn', options.htpasswd.user, options.htpasswd.password], { encoding: 'utf8' });
    writeFileSync(join(dir, 'htpasswd'), line);
    auth = `auth: {htpasswd: {realm: kiln-test, path: ${join(dir, 'htpasswd')}}}\n`;
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
  stop(): Promise<void>;
}

/** A proxy in front of a registry that fails chosen requests: `rule` decides for each one. */
export async function startFaultProxy(target: string, rule: (method: string, path: string) => Fault): Promise<FaultProxy> {
  const seen: string[] = [];
  const [thost, tport] = target.split(':') as [string, string];
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    seen.push(`${req.method} ${path}`);
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
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A JSON or raw call to a registry's HTTP API, for checking its state. */
export async function registryApi(host: string, path: string, options: { method?: string; accept?: string; auth?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {
      Accept: options.accept ?? 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json',
    };
    if (options.auth) headers.Authorization = `Basic ${Buffer.from(options.auth).toString('base64')}`;
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
