import { readFileSync } from 'node:fs';
import { isErrno } from '../../cache/fsutil.js';
import { KilnError } from '../../cache/errors.js';

/** `$KILN_CONFIG`, else `/etc/kiln/config.json`: `{"insecure-registries": ["host:port", …]}`. */
export function kilnConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.KILN_CONFIG || '/etc/kiln/config.json';
}

function configuredInsecure(env: NodeJS.ProcessEnv): string[] {
  const path = kilnConfigPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw new KilnError('CONFIG_INVALID', `Cannot read the Kiln config "${path}": ${(err as Error).message}`, { cause: err });
  }
  try {
    const list = (JSON.parse(text) as { 'insecure-registries'?: unknown })['insecure-registries'];
    return Array.isArray(list) ? list.filter((x): x is string => typeof x === 'string') : [];
  } catch (err) {
    throw new KilnError('CONFIG_INVALID', `The Kiln config "${path}" is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * Whether a registry may be spoken to over plain HTTP (or HTTPS without verification), as docker
 * decides: loopback hosts always, others when listed with --insecure-registry, in
 * `KILN_INSECURE_REGISTRIES` (comma-separated) or in the Kiln config.
 */
export function isInsecureRegistry(registry: string, extra: readonly string[] = [], env: NodeJS.ProcessEnv = process.env): boolean {
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.replace(/:\d+$/, '');
  if (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)) return true;
  const listed = [...extra, ...(env.KILN_INSECURE_REGISTRIES ?? '').split(','), ...configuredInsecure(env)].map((s) => s.trim().replace(/^[a-z]+:\/\//, '').replace(/\/$/, ''));
  return listed.includes(registry) || listed.includes(host);
}
