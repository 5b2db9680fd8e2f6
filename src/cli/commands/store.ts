import { KilnError } from '../../../cache/errors.js';
import { verifyStore, type VerifyReport } from '../../../cache/verify.js';
import { Engine } from '../../engine.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'store',
  usage: 'kiln store verify',
  description: 'Check the store: every blob against its digest, every record against what it points to. Exits 1 on a problem.',
  minPositionals: 1,
  maxPositionals: 1,
  options: [],
};

export const storeCommand: Command = {
  spec,
  async run({ positionals }, io) {
    if (positionals[0] !== 'verify') throw usageError(`Unknown subcommand "${positionals[0]}" for "kiln store"`, spec);
    let r: VerifyReport & { root: string };
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      r = await new KilnClient(io.host).json<VerifyReport & { root: string }>('POST', '/store/verify', {}, io.signal);
    } else {
      const engine = await Engine.open();
      try {
        r = { ...(await verifyStore(engine.store, { signal: io.signal })), root: engine.store.root };
      } finally {
        engine.close();
      }
    }
    for (const n of r.notes) io.stdout(`note: ${n}\n`);
    for (const p of r.problems) io.stdout(`problem: ${p}\n`);
    io.stdout(`Checked ${r.blobs} blobs, ${r.layers} layers, ${r.images} images, ${r.records} cache records${r.contextFiles ? `, ${r.contextFiles} uploaded context files` : ''}: ${r.problems.length === 0 ? 'no problems' : `${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`}\n`);
    if (r.problems.length > 0) {
      throw new KilnError('STORE_CORRUPT', `The store at "${r.root}" has ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`, {
        hint: 'Images and records with problems can be rebuilt; "kiln prune" removes unreferenced leftovers',
      });
    }
    return 0;
  },
};
