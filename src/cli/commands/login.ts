import { readFileSync } from 'node:fs';
import { KilnError } from '../../../cache/errors.js';
import { RegistryClient } from '../../registry/client.js';
import { storeCredentials } from '../../registry/dockerconfig.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'login',
  usage: 'kiln login [OPTIONS] REGISTRY',
  description: 'Check credentials against a registry and store them in the docker config, as docker login does.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [
    { name: 'username', short: 'u', type: 'string', placeholder: 'USER', description: 'User name' },
    { name: 'password', short: 'p', type: 'string', placeholder: 'PASSWORD', description: 'Password (prefer --password-stdin)' },
    { name: 'password-stdin', type: 'bool', description: 'Read the password from standard input' },
    { name: 'insecure-registry', type: 'list', placeholder: 'HOST[:PORT]', description: 'Reach this registry over plain HTTP or unverified TLS (repeatable)' },
  ],
};

/** `https://registry:5000/v2/` or `index.docker.io` → the registry's host as references name it. */
export function registryHost(input: string): string {
  const host = input.replace(/^[a-z]+:\/\//i, '').split('/')[0]!.toLowerCase();
  if (host === '') throw usageError(`Invalid registry "${input}"`, spec);
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

export const loginCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const registry = registryHost(positionals[0]!);
    const username = options.username as string | undefined;
    let password = options.password as string | undefined;
    if (options['password-stdin'] === true) {
      if (password !== undefined) throw usageError('"--password" and "--password-stdin" cannot be used together', spec);
      password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
    } else if (password !== undefined) {
      io.stderr('WARNING! Using --password on the command line is insecure. Use --password-stdin.\n');
    }
    if (!username) throw usageError('"kiln login" needs a user name (-u USER)', spec);
    if (!password) throw usageError('"kiln login" needs a password (-p PASSWORD or --password-stdin)', spec);
    const client = new RegistryClient(registry, {
      credentials: { username, password },
      insecureRegistries: (options['insecure-registry'] as string[] | undefined) ?? [],
      attempts: 3,
    });
    try {
      await client.ping(io.signal);
    } catch (err) {
      if (err instanceof KilnError && (err.code === 'UNAUTHORIZED' || err.code === 'DENIED')) {
        throw new KilnError('LOGIN_FAILED', `Login to "${registry}" failed: the registry refused the credentials of "${username}"`, { cause: err });
      }
      throw err;
    }
    const path = await storeCredentials(registry, { username, password });
    io.stderr(`Credentials stored in ${path}\n`);
    io.stdout('Login Succeeded\n');
    return 0;
  },
};
