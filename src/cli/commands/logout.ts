import { removeCredentials } from '../../registry/dockerconfig.js';
import type { CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import { registryHost } from './login.js';

const spec: CommandSpec = {
  name: 'logout',
  usage: 'kiln logout [REGISTRY]',
  description: 'Remove the credentials of a registry (default docker.io) from the docker config.',
  minPositionals: 0,
  maxPositionals: 1,
  options: [],
};

export const logoutCommand: Command = {
  spec,
  async run({ positionals }, io) {
    const registry = registryHost(positionals[0] ?? 'docker.io');
    if (await removeCredentials(registry)) io.stdout(`Removing login credentials for ${registry}\n`);
    else io.stdout(`Not logged in to ${registry}\n`);
    return 0;
  },
};
