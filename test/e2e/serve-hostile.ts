import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { freePort } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

/** Where a hostile client sends its requests: the unix socket, or TCP with a bearer token. */
export interface Target {
  name: string;
  socket?: string;
  port?: number;
  token?: string;
}

export interface Answer {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

/** One raw HTTP request, as a client that does not use kiln's own would send it. */
export function send(t: Target, method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const auth = t.token ? { Authorization: `Bearer ${t.token}` } : {};
    const where = t.socket ? { socketPath: t.socket } : { host: '127.0.0.1', port: t.port };
    const req = http.request({ ...where, method, path, headers: { ...auth, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The events of a Kiln build stream, and its final error if it ended with one. */
export function buildEvents(a: Answer): { events: { type: string; [k: string]: unknown }[]; error?: { code: string; message: string } } {
  if (a.status !== 200) return { events: [], error: (JSON.parse(a.body) as { error: { code: string; message: string } }).error };
  const events = a.body.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; [k: string]: unknown });
  const last = events.at(-1);
  return { events, error: last?.type === 'error' ? (last.error as { code: string; message: string }) : undefined };
}

/** A server on a unix socket and on TCP with a token, both as targets. */
export async function startHostileServe(root: string, dir: string, args: string[] = [], options: { otherTokens?: string[] } = {}): Promise<{ served: Served; unix: Target; tcp: Target }> {
  const port = await freePort();
  const token = `token-${process.pid}-${Date.now()}`;
  writeFileSync(join(dir, 'tokens'), `${[token, ...(options.otherTokens ?? [])].join('\n')}\n`);
  const socket = join(dir, 'kiln.sock');
  const served = await startServe(root, socket, ['--addr', `tcp://127.0.0.1:${port}`, '--insecure', '--token-file', join(dir, 'tokens'), ...args]);
  return { served, unix: { name: 'unix', socket, token }, tcp: { name: 'tcp', port, token } };
}

/** What the store's tmp/ holds. */
export function tmpLeftovers(root: string): string[] {
  const tmp = join(root, 'tmp');
  return existsSync(tmp) ? readdirSync(tmp) : [];
}

/** The upload directories left in tmp/, once a server that removes them just after answering has had a moment to. */
export async function contextLeftovers(root: string): Promise<string[]> {
  const left = () => tmpLeftovers(root).filter((n) => n.startsWith('context-'));
  for (let i = 0; i < 50 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  return left();
}
