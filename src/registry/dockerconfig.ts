import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KilnError } from '../../cache/errors.js';
import { isErrno, writeFileAtomic } from '../../cache/fsutil.js';

/** The key docker uses in `auths` for Docker Hub. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

export interface Credentials {
  username: string;
  password: string;
  /** An OAuth2 refresh token (`identitytoken`), sent to token servers instead of a password. */
  identityToken?: string;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

export interface DockerConfig {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [key: string]: unknown;
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, as docker reads it. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG || join(homedir(), '.docker'), 'config.json');
}

export async function readDockerConfig(path = dockerConfigPath()): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return {};
    throw new KilnError('DOCKER_CONFIG_UNREADABLE', `Cannot read the docker config "${path}": ${(err as Error).message}`);
  }
  try {
    return (text.trim() === '' ? {} : JSON.parse(text)) as DockerConfig;
  } catch (err) {
    throw new KilnError('DOCKER_CONFIG_INVALID', `The docker config "${path}" is not valid JSON: ${(err as Error).message}`);
  }
}

async function writeDockerConfig(config: DockerConfig, path: string): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(config, null, '\t')}\n`);
}

/** The key of a registry in the config: Docker Hub has its legacy URL, others their host. */
export function authKey(registry: string): string {
  return registry === 'docker.io' ? DOCKER_HUB_AUTH_KEY : registry;
}

/** `https://host:5000/v1/` and `host:5000` name the same registry in `auths`. */
function hostOf(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//, '').split('/')[0]!;
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

/** Credentials for a registry host, from a credential helper, the creds store or `auths`. */
export async function findCredentials(registry: string, options: { path?: string } = {}): Promise<Credentials | undefined> {
  const config = await readDockerConfig(options.path);
  const helper = config.credHelpers?.[authKey(registry)] ?? config.credHelpers?.[registry];
  if (helper) return helperGet(helper, authKey(registry));
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (hostOf(key) !== registry) continue;
    const decoded = decodeEntry(entry);
    if (decoded) return decoded;
  }
  if (config.credsStore) return helperGet(config.credsStore, authKey(registry));
  return undefined;
}

function decodeEntry(entry: AuthEntry): Credentials | undefined {
  let username = entry.username;
  let password = entry.password;
  if (entry.auth) {
    const plain = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = plain.indexOf(':');
    if (colon > 0) {
      username = plain.slice(0, colon);
      password = plain.slice(colon + 1);
    }
  }
  if (entry.identitytoken) return { username: username ?? '', password: password ?? '', identityToken: entry.identitytoken };
  if (username === undefined || password === undefined) return undefined;
  return { username, password };
}

/** Stores credentials as docker login does: through the helper if one is configured, else in `auths`. */
export async function storeCredentials(registry: string, creds: Credentials, options: { path?: string } = {}): Promise<string> {
  const path = options.path ?? dockerConfigPath();
  const config = await readDockerConfig(path);
  const key = authKey(registry);
  const helper = config.credHelpers?.[key] ?? config.credsStore;
  config.auths ??= {};
  if (helper) {
    await runHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: creds.username, Secret: creds.password }));
    config.auths[key] = {};
  } else {
    config.auths[key] = { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') };
  }
  await writeDockerConfig(config, path);
  return path;
}

/** Removes a registry's credentials; false when there were none. */
export async function removeCredentials(registry: string, options: { path?: string } = {}): Promise<boolean> {
  const path = options.path ?? dockerConfigPath();
  const config = await readDockerConfig(path);
  const key = authKey(registry);
  const helper = config.credHelpers?.[key] ?? config.credsStore;
  let found = false;
  for (const k of Object.keys(config.auths ?? {})) {
    if (hostOf(k) === registry) {
      delete config.auths![k];
      found = true;
    }
  }
  if (helper) {
    const r = await runHelper(helper, 'erase', key, true);
    found ||= r.code === 0;
  }
  if (found) await writeDockerConfig(config, path);
  return found;
}

async function helperGet(helper: string, serverUrl: string): Promise<Credentials | undefined> {
  const r = await runHelper(helper, 'get', serverUrl, true);
  if (r.code !== 0) {
    // The helper's protocol says "credentials not found" on stdout with a non-zero exit.
    if (/credentials not found/i.test(r.stdout + r.stderr)) return undefined;
    throw new KilnError('CREDENTIAL_HELPER_FAILED', `The credential helper "docker-credential-${helper}" failed: ${(r.stderr || r.stdout).trim()}`);
  }
  const parsed = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
  if (!parsed.Secret) return undefined;
  // docker marks an identity token with the user name "<token>".
  if (parsed.Username === '<token>') return { username: '', password: '', identityToken: parsed.Secret };
  return { username: parsed.Username ?? '', password: parsed.Secret };
}

function runHelper(helper: string, action: string, input: string, allowFail = false): Promise<{ code: number; stdout: string; stderr: string }> {
  const bin = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [action], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => reject(new KilnError('CREDENTIAL_HELPER_MISSING', `Cannot run the credential helper "${bin}": ${e.message}`, { hint: 'Install it, or remove it from the docker config' })));
    child.on('close', (code) => {
      const r = { code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (r.code !== 0 && !allowFail) reject(new KilnError('CREDENTIAL_HELPER_FAILED', `The credential helper "${bin}" failed to ${action}: ${(r.stderr || r.stdout).trim()}`));
      else resolve(r);
    });
    child.stdin.end(input);
  });
}
