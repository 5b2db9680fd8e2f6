import type { IncomingMessage, ServerResponse } from 'node:http';
import { KilnError } from '../../cache/errors.js';

/** The HTTP status that an error code stands for; anything unknown is the server's fault. */
export function statusOf(err: unknown): number {
  if (!(err instanceof KilnError)) return 500;
  if (err.exitCode === 2) return 400;
  if (/_UNKNOWN$|_MISSING$|^NOT_FOUND$/.test(err.code)) return 404;
  if (/TOO_LARGE$/.test(err.code)) return 413;
  if (/^(UNSAFE_|INVALID_|USAGE$|CONTEXT_|DOCKERFILE_)/.test(err.code) || err.code === 'TOO_MANY_LINKS') return 400;
  if (['ULIMIT_TOO_HIGH', 'UNSUPPORTED', 'PLATFORM_UNSUPPORTED', 'ARCHIVE_INVALID', 'ARCHIVE_UNSUPPORTED'].includes(err.code)) return 400;
  if (err.code === 'UNAUTHORIZED') return 401;
  if (err.code === 'REQUEST_TIMEOUT') return 408;
  if (err.code === 'TOO_MANY_UPLOADS') return 429;
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

/**
 * How deep a client's JSON may nest. The deepest the APIs take is 4 (a list entry's extended
 * attributes); JSON.parse takes a million nested `[` in its stride, and whatever walks the
 * result afterwards (a stringify, a recursive check) overflows the stack.
 */
export const MAX_JSON_DEPTH = 32;

/**
 * Parses JSON a client sent, refusing syntax errors and nesting deeper than MAX_JSON_DEPTH;
 * `what` names it in the error (`the build options`, `the "labels" parameter`).
 */
export function parseClientJson(text: string, what: string, options: { exitCode?: number } = {}): unknown {
  const depth = jsonDepth(text);
  if (depth > MAX_JSON_DEPTH) throw new KilnError('INVALID_REQUEST', `Cannot read ${what}: it nests deeper than ${MAX_JSON_DEPTH} levels`, { exitCode: options.exitCode });
  try {
    return JSON.parse(text);
  } catch {
    throw new KilnError('INVALID_REQUEST', `Cannot read ${what}: it is not valid JSON`, { exitCode: options.exitCode });
  }
}

/** The deepest nesting of brackets outside strings, in one pass; malformed text is JSON.parse's to refuse. */
function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) max = Math.max(max, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/**
 * Reads a small request body whole, refusing more than `max` bytes. Read by events, not with
 * for-await: leaving that loop early destroys the request, and with it the answer's socket.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const finish = (err?: unknown) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', finish);
      req.off('close', onClose);
      if (err === undefined) resolve(Buffer.concat(chunks));
      else {
        req.pause();
        reject(err);
      }
    };
    const onData = (chunk: Buffer) => {
      n += chunk.length;
      if (n > max) finish(new KilnError('REQUEST_TOO_LARGE', `The request body is larger than the server's limit of ${max} bytes`));
      else chunks.push(chunk);
    };
    const onEnd = () => finish();
    const onClose = () => finish(new KilnError('CANCELLED', 'The client went away before its request body arrived', { exitCode: 130 }));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', finish);
    req.once('close', onClose);
  });
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
