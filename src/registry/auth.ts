import { RegistryError, errorFromResponse, networkError } from './errors.js';
import type { Credentials } from './dockerconfig.js';
import { readBody, send } from './transport.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header: `Bearer realm="https://auth/token",service="reg",scope="…"`.
 * Quoted values may hold commas and escaped quotes.
 */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  const rest = m[2]!;
  re.lastIndex = 0;
  while (re.lastIndex < rest.length) {
    const p = re.exec(rest);
    if (!p) break;
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

export function basicAuthorization(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/**
 * Gets a bearer token from the challenge's realm for `scopes`, as docker does: GET with basic
 * credentials (or anonymously), or the OAuth2 refresh-token POST when an identity token is known.
 */
export async function fetchToken(challenge: Challenge, scopes: readonly string[], creds: Credentials | undefined, options: { insecureTls?: boolean; signal?: AbortSignal } = {}): Promise<string> {
  const realm = challenge.params.realm;
  if (!realm) throw new RegistryError('UNAUTHORIZED', 'The registry asked for a bearer token but named no realm to get it from');
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new RegistryError('UNAUTHORIZED', `The registry's token realm "${realm}" is not a URL`);
  }
  const service = challenge.params.service;
  const what = `Cannot get a token from "${url.origin}${url.pathname}"`;
  let res;
  try {
    if (creds?.identityToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'kiln', ...(service ? { service } : {}) });
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await send({ method: 'POST', url, headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: Buffer.from(form.toString()), insecureTls: options.insecureTls, signal: options.signal });
    } else {
      if (service) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      if (creds) url.searchParams.set('account', creds.username);
      const headers: Record<string, string> = creds ? { Authorization: basicAuthorization(creds) } : {};
      res = await send({ method: 'GET', url, headers, insecureTls: options.insecureTls, signal: options.signal });
    }
  } catch (err) {
    throw networkError(err, what);
  }
  const body = (await readBody(res)).toString('utf8');
  if (res.status !== 200) throw errorFromResponse(res.status, body, what);
  let parsed: { token?: string; access_token?: string };
  try {
    parsed = JSON.parse(body) as typeof parsed;
  } catch {
    throw new RegistryError('UNAUTHORIZED', `${what}: the answer is not JSON`);
  }
  const token = parsed.token ?? parsed.access_token;
  if (!token) throw new RegistryError('UNAUTHORIZED', `${what}: the answer holds no token`);
  return token;
}
