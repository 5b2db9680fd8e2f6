import { setTimeout as sleep } from 'node:timers/promises';
import { type Challenge, basicAuthorization, fetchToken, parseChallenge } from './auth.js';
import { type Credentials, findCredentials } from './dockerconfig.js';
import { RegistryError, errorFromResponse, networkError } from './errors.js';
import { isInsecureRegistry } from './insecure.js';
import { type HttpResponse, discard, followRedirects, isRedirect, readBody, send } from './transport.js';

export interface ClientOptions {
  /** Registries named with --insecure-registry. */
  insecureRegistries?: readonly string[];
  /** Credentials to use instead of the docker config's (login checks new ones this way). */
  credentials?: Credentials;
  /** Attempts per request on temporary failures (default 5). */
  attempts?: number;
  /** First backoff delay; each retry doubles it (default 250 ms, or `KILN_REGISTRY_RETRY_MS`). */
  retryBaseMs?: number;
}

export interface RegistryRequest {
  method: string;
  /** A path under the registry (`/v2/…`) or an absolute URL (an upload's Location). */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | (() => import('node:stream').Readable);
  /** Token scopes the request needs: `repository:acc/app:pull`. */
  scopes: readonly string[];
  /** Statuses returned to the caller; others become errors (default: any 2xx). */
  expect?: readonly number[];
  /** Shown in errors: `Cannot fetch manifest "…"`. */
  what: string;
  /** False for a request that must not be repeated on its own (an upload chunk). */
  retry?: boolean;
  /** The largest body fetchBytes accepts (default 16 MiB). */
  maxBytes?: number;
  /** Why the body limit exists, shown when a registry exceeds it. */
  maxBytesHint?: string;
  signal?: AbortSignal;
}

/** Resolved once per process: whether a host speaks HTTPS or plain HTTP. */
const schemes = new Map<string, Promise<string>>();

/** Docker Hub's API lives on another host than its name. */
function apiHost(registry: string): string {
  return registry === 'docker.io' ? 'registry-1.docker.io' : registry;
}

/**
 * A client for one registry (distribution spec v2): picks the scheme, authenticates (anonymous,
 * basic, bearer tokens per scope), retries temporary failures with exponential backoff.
 */
export class RegistryClient {
  readonly registry: string;
  readonly insecure: boolean;
  private readonly options: ClientOptions;
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, Promise<string>>();
  private credentials: Promise<Credentials | undefined> | undefined;

  constructor(registry: string, options: ClientOptions = {}) {
    this.registry = registry;
    this.options = options;
    this.insecure = isInsecureRegistry(registry, options.insecureRegistries);
  }

  private creds(): Promise<Credentials | undefined> {
    this.credentials ??= this.options.credentials ? Promise.resolve(this.options.credentials) : findCredentials(this.registry);
    return this.credentials;
  }

  /** `https://host` or, for an insecure registry that does not speak TLS, `http://host`. */
  baseUrl(signal?: AbortSignal): Promise<string> {
    const host = apiHost(this.registry);
    let scheme = schemes.get(host);
    if (!scheme) {
      scheme = this.insecure ? probeScheme(host, signal) : Promise.resolve('https');
      schemes.set(host, scheme);
    }
    return scheme.then((s) => `${s}://${host}`);
  }

  private retryBase(): number {
    return this.options.retryBaseMs ?? (Number(process.env.KILN_REGISTRY_RETRY_MS) || 250);
  }

  /** Sends a request; the caller reads or discards the body of what it gets back. */
  async request(req: RegistryRequest): Promise<HttpResponse> {
    const attempts = req.retry === false ? 1 : (this.options.attempts ?? 5);
    let authRetried = false;
    for (let attempt = 1; ; attempt++) {
      req.signal?.throwIfAborted();
      let failure: RegistryError;
      try {
        const url = new URL(req.path, await this.baseUrl(req.signal));
        const auth = await this.authorization(req.scopes, req.signal);
        const headers = { ...req.headers, ...(auth ? { Authorization: auth } : {}) };
        let res = await send({ method: req.method, url, headers, body: req.body, insecureTls: this.insecure, signal: req.signal });
        if (isRedirect(res.status) && !req.expect?.includes(res.status) && (req.method === 'GET' || req.method === 'HEAD')) {
          res = await followRedirects(res, { method: req.method, url, headers, insecureTls: this.insecure, signal: req.signal }, { what: req.what });
        }
        if (res.status === 401 && !authRetried) {
          const header = res.headers['www-authenticate'];
          await discard(res);
          const challenge = header ? parseChallenge(header) : undefined;
          if (challenge && (await this.canAnswer(challenge, req.scopes))) {
            authRetried = true;
            attempt--;
            continue;
          }
          throw errorFromResponse(401, '', req.what);
        }
        const ok = req.expect ? req.expect.includes(res.status) : res.status >= 200 && res.status < 300;
        if (ok) return res;
        const body = req.method === 'HEAD' ? '' : (await readBody(res, 1 << 20)).toString('utf8');
        if (res.status === 401) throw await this.refusal(res.headers['www-authenticate'], body, req);
        failure = errorFromResponse(res.status, body, req.what);
        if (failure.temporary) failure = withRetryAfter(failure, res.headers['retry-after']);
      } catch (err) {
        if (err instanceof RegistryError) {
          if (!err.temporary) throw err;
          failure = err;
        } else if (req.signal?.aborted) {
          throw req.signal.reason;
        } else if ((err as Error).name === 'KilnError') {
          throw err;
        } else {
          failure = networkError(err, req.what);
          if (!failure.temporary) throw failure;
        }
      }
      if (!failure.temporary) throw failure;
      if (attempt >= attempts) {
        throw new RegistryError(failure.code, attempts > 1 ? `${failure.message} (gave up after ${attempt} attempts)` : failure.message, { temporary: true, status: failure.status, hint: failure.hint, cause: failure });
      }
      const delay = retryDelay(failure, attempt, this.retryBase());
      await sleep(delay, undefined, { signal: req.signal });
    }
  }

  /** Sends a request and returns its body, for manifests and other small documents. */
  async fetchBytes(req: RegistryRequest): Promise<{ status: number; headers: HttpResponse['headers']; body: Buffer }> {
    for (let attempt = 1; ; attempt++) {
      const res = await this.request(req);
      try {
        return { status: res.status, headers: res.headers, body: await readBody(res, req.maxBytes) };
      } catch (err) {
        // Too large or too slow: the registry would only do the same again.
        if (err instanceof RegistryError && !err.temporary) {
          throw new RegistryError(err.code, `${req.what}: ${err.message}`, { hint: err.code === 'RESPONSE_TOO_LARGE' ? req.maxBytesHint : 'The registry trickles its answer; it is overloaded or hostile', cause: err });
        }
        // The connection broke while the body was read: the request as a whole is worth repeating.
        if (attempt >= (this.options.attempts ?? 5) || req.signal?.aborted) throw networkError(err, req.what);
        await sleep(this.retryBase() * 2 ** (attempt - 1), undefined, { signal: req.signal });
      }
    }
  }

  /**
   * The error for a 401 that a fresh token did not cure. A bearer challenge with
   * `error="insufficient_scope"` means the token server authenticated the user but did not grant
   * what the request needs: that is a refusal (DENIED), not a matter of logging in.
   */
  private async refusal(header: string | string[] | undefined, body: string, req: RegistryRequest): Promise<RegistryError> {
    const challenge = typeof header === 'string' ? parseChallenge(header) : undefined;
    if (challenge?.scheme !== 'bearer' || challenge.params.error !== 'insufficient_scope') return errorFromResponse(401, body, req.what);
    const creds = await this.creds();
    const wanted = canonicalScopes(challenge.params.scope ?? req.scopes.join(' '));
    const who = creds ? `"${creds.username}"` : 'anonymous users';
    return new RegistryError('DENIED', `${req.what}: DENIED: the registry's token server does not grant ${who} "${wanted}"`, {
      status: 401,
      hint: creds ? `Ask for that access, or log in as a user who has it with "kiln login ${this.registry}"` : `Log in with "kiln login ${this.registry}"`,
    });
  }

  /** Whether another attempt with credentials can answer this challenge; fetches the token. */
  private async canAnswer(challenge: Challenge, scopes: readonly string[]): Promise<boolean> {
    const creds = await this.creds();
    this.challenge = challenge;
    if (challenge.scheme === 'basic') return creds !== undefined;
    if (challenge.scheme !== 'bearer') return false;
    this.tokens.delete(scopeKey(scopes));
    return true;
  }

  /** The Authorization header for `scopes`, once the registry has said which scheme it wants. */
  private async authorization(scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const challenge = this.challenge;
    if (!challenge) return undefined;
    const creds = await this.creds();
    if (challenge.scheme === 'basic') return creds ? basicAuthorization(creds) : undefined;
    if (challenge.scheme !== 'bearer') return undefined;
    const key = scopeKey(scopes);
    let token = this.tokens.get(key);
    if (!token) {
      token = fetchToken(challenge, scopes, creds, { insecureTls: this.insecure, signal });
      this.tokens.set(key, token);
      token.catch(() => this.tokens.delete(key));
    }
    return `Bearer ${await token}`;
  }

  /** `GET /v2/`: checks that the registry answers and accepts the credentials in use. */
  async ping(signal?: AbortSignal): Promise<void> {
    const res = await this.request({ method: 'GET', path: '/v2/', scopes: [], what: `Cannot reach the registry "${this.registry}"`, signal });
    await discard(res);
  }
}

/**
 * Scopes with their actions sorted: distribution lists the actions of a challenge in map order
 * ("push,pull" one time, "pull,push" the next), and an error message should read the same each time.
 */
export function canonicalScopes(scopes: string): string {
  return scopes
    .split(' ')
    .map((scope) => {
      const cut = scope.lastIndexOf(':');
      return cut < 0 ? scope : `${scope.slice(0, cut + 1)}${scope.slice(cut + 1).split(',').sort().join(',')}`;
    })
    .join(' ');
}

function scopeKey(scopes: readonly string[]): string {
  return [...scopes].sort().join(' ');
}

function withRetryAfter(err: RegistryError, header: string | string[] | undefined): RegistryError {
  const value = Array.isArray(header) ? header[0] : header;
  if (!value) return err;
  const seconds = Number(value);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(value) - Date.now();
  return Object.assign(err, { retryAfterMs: Math.max(0, ms) });
}

/** Exponential backoff with jitter; a registry's Retry-After wins, capped at 10 s. */
function retryDelay(err: RegistryError, attempt: number, base: number): number {
  const after = (err as RegistryError & { retryAfterMs?: number }).retryAfterMs;
  if (after !== undefined) return Math.min(after, 10_000);
  const exp = base * 2 ** (attempt - 1);
  return exp / 2 + Math.random() * (exp / 2);
}

/** Docker's order for an insecure registry: HTTPS without verification first, then plain HTTP. */
async function probeScheme(host: string, signal?: AbortSignal): Promise<string> {
  try {
    const res = await send({ method: 'GET', url: new URL(`https://${host}/v2/`), insecureTls: true, signal });
    await discard(res);
    return 'https';
  } catch (err) {
    if (signal?.aborted) throw err;
    // No TLS there (or nothing at all): plain HTTP, where a real failure will show itself.
    return 'http';
  }
}
