import { KilnError } from '../../../cache/errors.js';
import { Engine } from '../../engine.js';
import { getImage, type LocalImage } from '../../image/local.js';
import { familiarName } from '../../image/reference.js';
import type { Store } from '../../../cache/store.js';
import type { CommandSpec } from '../args.js';
import type { Command, CommandIO } from '../main.js';
import { checkImageArg } from '../refs.js';
import { compileTemplate } from '../template.js';

const spec: CommandSpec = {
  name: 'inspect',
  usage: 'kiln inspect [OPTIONS] IMAGE [IMAGE...]',
  description: 'Show images of the store as JSON: their config, manifest and names (docker inspect\'s fields, plus Manifest).',
  minPositionals: 1,
  maxPositionals: Infinity,
  options: [{ name: 'format', short: 'f', type: 'string', placeholder: 'FORMAT', description: 'json (one line per image), or a Go-template-like format: {{.Config.Env}}, {{json .Config}}, {{index .Config.Labels "k"}}' }],
  examples: [
    'kiln inspect app:1',
    "kiln inspect --format '{{.Config.Env}}' app:1",
    "kiln inspect -f '{{json .Config.Labels}}' app:1",
    "kiln inspect -f '{{.Id}} {{join .RepoTags \",\"}}' app:1 base:1",
  ],
};

/** docker inspect's shape for an image, with the manifest itself beside it. */
export function inspectView(store: Store, image: LocalImage, manifestSize: number): Record<string, unknown> {
  const tags = store.db.allTags().filter((t) => t.manifest === image.manifestDigest).map((t) => familiarName(t.name));
  const c = image.config;
  return {
    Id: image.configDigest,
    RepoTags: tags,
    RepoDigests: [...new Set(tags.map((t) => `${t.replace(/:[^:/]+$/, '')}@${image.manifestDigest}`))],
    Created: c.created ?? '',
    Author: c.author ?? '',
    Architecture: c.architecture,
    Os: c.os,
    ...(c.variant ? { Variant: c.variant } : {}),
    Config: c.config ?? {},
    RootFS: { Type: 'layers', Layers: c.rootfs.diff_ids },
    History: c.history ?? [],
    Size: image.layers.reduce((n, l) => n + l.blobSize, 0),
    Descriptor: { mediaType: image.manifest.mediaType, digest: image.manifestDigest, size: manifestSize },
    Manifest: image.manifest,
  };
}

/**
 * Inspects each reference with `view` and prints the results in the requested format. As docker
 * does: the images found are shown, then the first one missing fails the command. Local and
 * remote inspect differ only in where a view comes from.
 */
export async function printInspected(refs: readonly string[], view: (ref: string) => Promise<unknown>, format: string | undefined, io: CommandIO): Promise<number> {
  const template = format === undefined || format === 'json' ? undefined : compileTemplate(format);
  const views: unknown[] = [];
  let missing: unknown;
  for (const ref of refs) {
    try {
      views.push(await view(ref));
    } catch (err) {
      if (!(err instanceof KilnError) || err.code !== 'IMAGE_UNKNOWN') throw err;
      missing ??= err;
    }
  }
  if (views.length === 0) throw missing;
  if (format === undefined) io.stdout(`${JSON.stringify(views, null, 4)}\n`);
  else if (format === 'json') io.stdout(views.map((v) => `${JSON.stringify(v)}\n`).join(''));
  else io.stdout(views.map((v) => `${template!(v)}\n`).join(''));
  if (missing) throw missing;
  return 0;
}

export const inspectCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    for (const p of positionals) checkImageArg(p);
    const format = options.format as string | undefined;
    // A malformed template is a usage error before any image is looked up, locally or remotely.
    if (format !== undefined && format !== 'json') compileTemplate(format);
    if (io.host) return (await import('../../daemon/remote-image-commands.js')).remoteInspect(io.host, { options, positionals }, io);
    const engine = await Engine.open();
    try {
      return await printInspected(positionals, async (ref) => {
        const image = await getImage(engine.store, ref);
        return inspectView(engine.store, image, await engine.store.blobs.size(image.manifestDigest));
      }, format, io);
    } finally {
      engine.close();
    }
  },
};
