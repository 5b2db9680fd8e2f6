import type { IncomingMessage, ServerResponse } from 'node:http';
import { KilnError } from '../../cache/errors.js';

/** The HTTP status that an error code stands for; anything unknown is the server's fault. */
export function statusOf(err: unknown): number {
  if (!(err instanceof KilnError)) return 500;
  if (err.exitCode === 2) return 400;
  if (/_UNKNOWN$|_MISSING$|^NOT_FOUND$/.test(err.code)) return 404;
  if (/TOO_LARGE$/.test(err.code)) return 413;
  if (/^(UNSAFE_|INVALID_|USAGE$|CONTEXT_|DOCKERFILE_)/.test(err.code)) return 400;
  if (['ULIMIT_TOO_HIGH', 'UNSUPPORTED', 'PLATFORM_UNSUPPORTED', 'ARCHIVE_INVALID', 'ARCHIVE_UNSUPPORTED'].includes(err.code)) return 400;
  if (err.code === 'UNAUTHORIZED') return 401;
  if (err.code === 'ENTITLEMENT_DENIED') return 403;
  if (err.code === 'CONFLICT' || err.code === 'IMAGE_IN_USE') return 409;
  if (err.code === 'NOT_IMPLEMENTED') return 501;
  if (err.code === 'SHUTTING_DOWN') return 503;
  return 500;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** Reads a small request body whole, refusing more than `max` bytes. */
export async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) throw new KilnError('REQUEST_TOO_LARGE', `The request body is larger than the server's limit of ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Reads the first line of a body (up to `max` bytes) and hands back the rest as a stream of
 * its own, for requests that send a JSON header line before a tar.
 */
export async function splitFirstLine(body: AsyncIterable<Buffer>, max: number): Promise<{ line: string; rest: AsyncIterable<Buffer> }> {
  const it = body[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  for (;;) {
    const nl = head.indexOf(0x0a);
    if (nl >= 0) {
      const tail = head.subarray(nl + 1);
      return {
        line: head.subarray(0, nl).toString('utf8'),
        rest: (async function* () {
          if (tail.length > 0) yield tail;
          for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
        })(),
      };
    }
    if (head.length > max) throw new KilnError('REQUEST_TOO_LARGE', `The build options are larger than the server's limit of ${max} bytes`);
    const r = await it.next();
    if (r.done) throw new KilnError('INVALID_REQUEST', 'The request ended before its build options');
    head = Buffer.concat([head, r.value]);
  }
}

/** A JSON object per line, written as it comes; writes after the client left are dropped. */
export class LineStream {
  constructor(private readonly res: ServerResponse) {}

  start(contentType: string): void {
    if (this.res.headersSent) return;
    this.res.writeHead(200, { 'Content-Type': contentType, 'Cache-Control': 'no-cache' });
    this.res.flushHeaders();
  }

  write(obj: unknown): void {
    if (this.res.destroyed || this.res.writableEnded) return;
    this.res.write(`${JSON.stringify(obj)}\n`);
  }

  end(): void {
    if (!this.res.destroyed && !this.res.writableEnded) this.res.end();
  }
}
