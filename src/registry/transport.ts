import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import { extraCaOptions } from './ca.js';
import { RegistryError } from './errors.js';

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A buffer, or a function that opens the body afresh for every attempt. */
  body?: Buffer | (() => Readable);
  /** Skip TLS verification (an insecure registry that speaks HTTPS with a self-signed certificate). */
  insecureTls?: boolean;
  signal?: AbortSignal;
  /**
   * Where the request may not connect (a build service's ADD may not reach its own host): an
   * address literal is checked before each hop, a name as it resolves. Such requests get
   * connections of their own, never one another request opened.
   */
  egress?: { lookup: LookupFunction; refuse(hostname: string): Error | undefined };
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
  // Verifies nothing, so it trusts no authority either: without `ca`, Node builds its store of
  // ~140 root certificates for the first TLS connection (~30 ms), here for every pull from an
  // insecure registry, if only to find out that it speaks plain HTTP.
  insecure: new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false, ca: [] }),
};
/** For requests with an egress rule: no keep-alive, so no connection is shared with other requests. */
const guardedAgents = { http: new http.Agent({ keepAlive: false }), https: undefined as https.Agent | undefined };

/** Made on the first HTTPS request, with the extra certificate authorities, if any. */
let verifying: https.Agent | undefined;
function httpsAgent(): https.Agent {
  return (verifying ??= new https.Agent({ keepAlive: true, maxSockets: 16, ...extraCaOptions() }));
}

/**
 * How long a registry may keep Kiln waiting: for a connection (30 s, docker's dial timeout), and
 * for the next byte once connected (60 s), so that a server which stalls or never answers fails
 * the pull instead of holding it forever. Tests shorten them through the environment.
 */
export function registryTimeouts(env: NodeJS.ProcessEnv = process.env): { connectMs: number; idleMs: number } {
  return {
    connectMs: Number(env.KILN_REGISTRY_CONNECT_TIMEOUT_MS) || 30_000,
    idleMs: Number(env.KILN_REGISTRY_IDLE_TIMEOUT_MS) || 60_000,
  };
}

function timeoutError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ETIMEDOUT' });
}

/** One HTTP exchange; the response body is left unread for the caller to stream or collect. */
export function send(req: HttpRequest): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const isHttps = req.url.protocol === 'https:';
    const mod = isHttps ? https : http;
    const refusal = req.egress?.refuse(req.url.hostname.replace(/^\[(.*)\]$/, '$1'));
    if (refusal) return reject(refusal);
    const agent = req.egress
      ? isHttps
        ? (guardedAgents.https ??= new https.Agent({ keepAlive: false, ...extraCaOptions() }))
        : guardedAgents.http
      : isHttps
        ? req.insecureTls
          ? agents.insecure
          : httpsAgent()
        : agents.http;
    const headers: Record<string, string> = { 'User-Agent': 'kiln/0.1', ...req.headers };
    if (Buffer.isBuffer(req.body)) headers['Content-Length'] = String(req.body.byteLength);
    const { connectMs, idleMs } = registryTimeouts();
    let response: http.IncomingMessage | undefined;
    const r = mod.request(req.url, { method: req.method, headers, agent, signal: req.signal, timeout: idleMs, ...(req.egress ? { lookup: req.egress.lookup } : {}) }, (res) => {
      response = res;
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
    });
    // The socket's inactivity timer runs until the body has been read, so a stalled body fails too.
    const fail = (err: Error) => {
      r.destroy(err);
      response?.destroy(err);
    };
    r.on('timeout', () => fail(timeoutError(`${req.url.host} sent nothing for ${idleMs} ms`)));
    r.on('socket', (socket) => {
      if (!socket.connecting) return;
      const timer = setTimeout(() => fail(timeoutError(`no connection to ${req.url.host} within ${connectMs} ms`)), connectMs);
      socket.once('connect', () => clearTimeout(timer));
      socket.once('close', () => clearTimeout(timer));
    });
    r.on('error', reject);
    if (req.body === undefined) {
      r.end();
    } else if (Buffer.isBuffer(req.body)) {
      r.end(req.body);
    } else {
      const source = req.body();
      source.on('error', (err) => r.destroy(err));
      source.pipe(r);
    }
  });
}

/**
 * Collects a body of at most `limit` bytes within `deadlineMs` (default 2 minutes, or
 * `KILN_REGISTRY_READ_TIMEOUT_MS`): a server trickling a byte at a time defeats the idle timeout,
 * not this one. Both failures are final RegistryErrors, not worth repeating.
 */
export async function readBody(res: HttpResponse, limit = 16 << 20, deadlineMs = Number(process.env.KILN_REGISTRY_READ_TIMEOUT_MS) || 120_000): Promise<Buffer> {
  const tooLarge = () => {
    res.body.destroy();
    return new RegistryError('RESPONSE_TOO_LARGE', `the response is larger than ${limit} bytes`);
  };
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const parts: Buffer[] = [];
  let size = 0;
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    res.body.destroy();
  }, deadlineMs);
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.byteLength;
      if (size > limit) throw tooLarge();
      parts.push(chunk);
    }
  } catch (err) {
    if (late) throw new RegistryError('RESPONSE_TOO_SLOW', `the response took longer than ${deadlineMs} ms`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (late) throw new RegistryError('RESPONSE_TOO_SLOW', `the response took longer than ${deadlineMs} ms`);
  return Buffer.concat(parts);
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export function isRedirect(status: number): boolean {
  return REDIRECT_STATUSES.has(status);
}

/** As many redirects as Go's HTTP client, and so docker, follows before giving up. */
export const MAX_REDIRECTS = 10;

/**
 * Follows `res` while it redirects, at most MAX_REDIRECTS hops. The Authorization header goes
 * only back to the origin first asked: docker's authorizer adds credentials only for hosts that
 * challenged it, and storage behind a registry (S3, a CDN, another host) must never see them.
 */
export async function followRedirects(res: HttpResponse, req: HttpRequest, options: { what: string }): Promise<HttpResponse> {
  let current = res;
  let url = req.url;
  for (let hops = 0; isRedirect(current.status); hops++) {
    const location = current.headers.location;
    await discard(current);
    if (!location) throw new RegistryError('REDIRECT_INVALID', `${options.what}: redirected with no location`);
    if (hops >= MAX_REDIRECTS) {
      throw new RegistryError('TOO_MANY_REDIRECTS', `${options.what}: stopped after ${MAX_REDIRECTS} redirects`, { hint: `The last one pointed to "${new URL(location, url).origin}"; the registry or its storage is misconfigured` });
    }
    let next: URL;
    try {
      next = new URL(location, url);
    } catch {
      throw new RegistryError('REDIRECT_INVALID', `${options.what}: redirected to "${location}", which is not a URL`);
    }
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw new RegistryError('REDIRECT_INVALID', `${options.what}: redirected to a "${next.protocol}" URL`);
    }
    const headers = { ...req.headers };
    if (next.origin !== req.url.origin) {
      for (const key of Object.keys(headers)) if (key.toLowerCase() === 'authorization') delete headers[key];
    }
    url = next;
    current = await send({ ...req, url, headers, method: req.method === 'HEAD' ? 'HEAD' : 'GET', body: undefined });
  }
  return current;
}

/** Reads and drops a body so that its connection goes back to the pool. */
export async function discard(res: HttpResponse): Promise<void> {
  res.body.resume();
  await new Promise<void>((resolve) => {
    if (res.body.complete || res.body.destroyed) return resolve();
    res.body.once('end', resolve);
    res.body.once('close', resolve);
    res.body.once('error', () => resolve());
  });
}
