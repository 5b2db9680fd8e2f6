import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { KilnError } from '../../../cache/errors.js';
import { isErrno } from '../../../cache/fsutil.js';
import { importLayerTar } from '../../../cache/layers.js';
import { Engine } from '../../engine.js';
import { tagImage, writeImage } from '../../image/local.js';
import { parseReference } from '../../image/reference.js';
import type { ContainerConfig, ImageConfig } from '../../../solver/graph.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';
import type { Store } from '../../../cache/store.js';

const spec: CommandSpec = {
  name: 'import',
  usage: 'kiln import [OPTIONS] FILE|- [REF]',
  description: 'Import a root filesystem tarball (plain or gzip) as a one-layer image.',
  minPositionals: 1,
  maxPositionals: 2,
  options: [
    { name: 'change', short: 'c', type: 'list', placeholder: 'INSTR', description: 'Apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL' },
    { name: 'message', short: 'm', type: 'string', placeholder: 'TEXT', description: 'Commit message for the history entry' },
  ],
};

/** `--change 'CMD ["sh"]'`: the config-only instructions docker import accepts. */
export function applyChange(config: ContainerConfig, change: string): ContainerConfig {
  const m = /^\s*(\w+)\s+(.*)$/s.exec(change);
  if (!m) throw usageError(`Invalid --change "${change}": expected an instruction such as 'CMD ["sh"]'`, spec);
  const instr = m[1]!.toUpperCase();
  const rest = m[2]!.trim();
  const command = () => {
    if (rest.startsWith('[')) {
      try {
        const parsed: unknown = JSON.parse(rest);
        if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return parsed as string[];
      } catch {
        // Not JSON: the shell form below.
      }
    }
    return ['/bin/sh', '-c', rest];
  };
  switch (instr) {
    case 'CMD': return { ...config, Cmd: command() };
    case 'ENTRYPOINT': return { ...config, Entrypoint: command() };
    case 'WORKDIR': return { ...config, WorkingDir: rest };
    case 'USER': return { ...config, User: rest };
    case 'ENV': {
      const eq = rest.indexOf('=');
      const [k, v] = eq < 0 ? rest.split(/\s+(.*)/s) : [rest.slice(0, eq), rest.slice(eq + 1)];
      return { ...config, Env: [...(config.Env ?? []).filter((e) => !e.startsWith(`${k}=`)), `${k}=${v ?? ''}`] };
    }
    case 'LABEL': {
      const eq = rest.indexOf('=');
      if (eq < 0) throw usageError(`Invalid --change "${change}": LABEL needs key=value`, spec);
      return { ...config, Labels: { ...(config.Labels ?? {}), [rest.slice(0, eq)]: rest.slice(eq + 1).replace(/^"(.*)"$/, '$1') } };
    }
    default:
      throw usageError(`Invalid --change "${change}": ${instr} cannot be applied by import`, spec);
  }
}

async function openInput(path: string): Promise<Readable> {
  const raw: Readable = path === '-' ? process.stdin : createReadStream(path);
  if (path !== '-') {
    await new Promise<void>((resolve, reject) => {
      raw.once('open', () => resolve());
      raw.once('error', (err) => {
        if (isErrno(err, 'ENOENT')) reject(new KilnError('FILE_MISSING', `Cannot import "${path}": no such file`));
        else reject(new KilnError('FILE_UNREADABLE', `Cannot import "${path}": ${err.message}`));
      });
    });
  }
  // Sniff gzip's magic number: docker import accepts both.
  const it = raw[Symbol.asyncIterator]();
  const first = await it.next();
  const head: Buffer = first.done ? Buffer.alloc(0) : (first.value as Buffer);
  const rest = Readable.from((async function* () {
    if (head.length > 0) yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value as Buffer;
  })());
  return head[0] === 0x1f && head[1] === 0x8b ? rest.pipe(createGunzip()) : rest;
}

export const importCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const [file, ref] = positionals as [string, string | undefined];
    if (ref !== undefined) parseReference(ref);
    let containerConfig: ContainerConfig = {};
    for (const c of (options.change as string[] | undefined) ?? []) containerConfig = applyChange(containerConfig, c);
    const comment = (options.message as string | undefined) || `Imported from ${file === '-' ? 'standard input' : file}`;
    const input = await openInput(file);
    let id: string;
    if (io.host) {
      const { KilnClient } = await import('../../daemon/client.js');
      const head = Buffer.from(`${JSON.stringify({ ref, config: containerConfig, comment })}\n`);
      const body = Readable.from(
        (async function* () {
          yield head;
          yield* input;
        })(),
      );
      id = (await new KilnClient(io.host).sendStream<{ id: string }>('/import', body, io.signal)).id;
    } else {
      const engine = await Engine.open();
      try {
        id = (await importImage(engine.store, input, { ref, config: containerConfig, comment, signal: io.signal })).configDigest;
      } finally {
        engine.close();
      }
    }
    io.stdout(`${id}\n`);
    return 0;
  },
};

/** A root filesystem tar (already unpacked from gzip) becomes a one-layer image, named `ref` if given. */
export async function importImage(store: Store, input: AsyncIterable<Buffer> & Readable, o: { ref?: string; config: ContainerConfig; comment: string; signal?: AbortSignal }) {
  const layer = await importLayerTar(store, input, o.signal);
  const created = new Date().toISOString();
  const config: ImageConfig = {
    created,
    architecture: 'amd64',
    os: 'linux',
    config: o.config,
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created, created_by: 'kiln import', comment: o.comment }],
  };
  const image = await writeImage(store, config, [layer]);
  if (o.ref !== undefined) tagImage(store, image, [o.ref]);
  return image;
}
