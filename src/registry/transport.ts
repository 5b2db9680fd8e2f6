import http from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /** A buffer, or a function that opens the body afresh for every attempt. */
  body?: Buffer | (() => Readable);
  /** Skip TLS verification (an insecure registry that speaks HTTPS with a self-signed certificate). */
  insecureTls?: boolean;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 16 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 16 }),
  insecure: new https.Agent({ keepAlive: true, maxSockets: 16, rejectUnauthorized: false }),
};

/** One HTTP exchange; the response body is left unread for the caller to stream or collect. */
export function send(req: HttpRequest): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const isHttps = req.url.protocol === 'https:';
    const mod = isHttps ? https : http;
    const agent = isHttps ? (req.insecureTls ? agents.insecure : agents.https) : agents.http;
    const headers: Record<string, string> = { 'User-Agent': 'kiln/0.1', ...req.headers };
    if (Buffer.isBuffer(req.body)) headers['Content-Length'] = String(req.body.byteLength);
    const r = mod.request(req.url, { method: req.method, headers, agent, signal: req.signal }, (res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
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

export async function readBody(res: HttpResponse, limit = 16 << 20): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.byteLength;
    if (size > limit) {
      res.body.destroy();
      throw new Error(`response larger than ${limit} bytes`);
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts);
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
