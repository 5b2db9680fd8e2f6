import { readFile, stat } from 'node:fs/promises';
import { KilnError } from '../../cache/errors.js';
import type { Session } from '../../solver/worker.js';

/** Where a secret's value comes from: a file, or an environment variable of the caller. */
export type SecretSource = { id: string; file: string } | { id: string; env: string };

const ENTITLEMENTS = new Set(['security.insecure', 'network.host']);

/** Parses `--secret id=X,src=FILE` / `id=X,env=VAR` (docker's syntax; `source=` and `type=` too). */
export function parseSecretSpec(spec: string): SecretSource {
  const fields = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KilnError('INVALID_SECRET', `Invalid --secret "${spec}": expected id=ID,src=FILE or id=ID,env=VARIABLE`, { exitCode: 2 });
    fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
  }
  const id = fields.get('id');
  if (!id) throw new KilnError('INVALID_SECRET', `Invalid --secret "${spec}": the id is missing`, { exitCode: 2 });
  const type = fields.get('type');
  if (type !== undefined && type !== 'file' && type !== 'env') {
    throw new KilnError('INVALID_SECRET', `Invalid --secret "${spec}": type must be file or env, not "${type}"`, { exitCode: 2 });
  }
  const file = fields.get('src') ?? fields.get('source');
  const env = fields.get('env');
  if (file !== undefined && type !== 'env') return { id, file };
  if (env !== undefined) return { id, env };
  if (file !== undefined) return { id, env: file };
  // As docker does: a bare id names an environment variable when one is set, else a file.
  return type === 'file' ? { id, file: id } : { id, env: id };
}

/** Parses `--ssh ID=SOCKET` (or `--ssh default` for $SSH_AUTH_SOCK). */
export function parseSshSpec(spec: string, env: NodeJS.ProcessEnv = process.env): { id: string; socket: string } {
  const eq = spec.indexOf('=');
  const id = eq < 0 ? spec : spec.slice(0, eq);
  const socket = eq < 0 ? env.SSH_AUTH_SOCK : spec.slice(eq + 1).split(',')[0];
  if (!id) throw new KilnError('INVALID_SSH', `Invalid --ssh "${spec}": the id is missing`, { exitCode: 2 });
  if (!socket) {
    throw new KilnError('INVALID_SSH', `Invalid --ssh "${spec}": no agent socket given and SSH_AUTH_SOCK is not set`, { exitCode: 2 });
  }
  return { id, socket };
}

export function parseEntitlement(value: string): string {
  if (!ENTITLEMENTS.has(value)) {
    throw new KilnError('INVALID_ENTITLEMENT', `Invalid --allow "${value}": expected ${[...ENTITLEMENTS].join(' or ')}`, { exitCode: 2 });
  }
  return value;
}

export interface SessionSpec {
  secrets?: readonly SecretSource[];
  ssh?: readonly { id: string; socket: string }[];
  allow?: readonly string[];
}

/**
 * The session of one build. Secret files are checked now (a typo should fail before any step
 * runs) but read only when a step mounts them, and never kept.
 */
export async function createSession(spec: SessionSpec, env: NodeJS.ProcessEnv = process.env): Promise<Session> {
  const secrets = new Map<string, SecretSource>();
  for (const s of spec.secrets ?? []) {
    if ('file' in s) {
      try {
        await stat(s.file);
      } catch {
        throw new KilnError('SECRET_MISSING', `Cannot read the secret "${s.id}" from "${s.file}": no such file`);
      }
    } else if (env[s.env] === undefined) {
      throw new KilnError('SECRET_MISSING', `Cannot read the secret "${s.id}": the environment variable "${s.env}" is not set`);
    }
    secrets.set(s.id, s);
  }
  const ssh = new Map((spec.ssh ?? []).map((s) => [s.id, s.socket]));
  for (const [id, socket] of ssh) {
    try {
      if (!(await stat(socket)).isSocket()) throw new Error('not a socket');
    } catch {
      throw new KilnError('SSH_MISSING', `The SSH agent socket "${socket}" for id "${id}" does not exist or is not a socket`);
    }
  }
  return {
    secret: async (id) => {
      const s = secrets.get(id);
      if (!s) return undefined;
      if ('file' in s) return readFile(s.file);
      const value = env[s.env];
      return value === undefined ? undefined : Buffer.from(value, 'utf8');
    },
    ssh: (id) => ssh.get(id),
    allow: new Set(spec.allow ?? []),
  };
}
