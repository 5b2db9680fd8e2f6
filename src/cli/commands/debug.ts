import { readFileSync } from 'node:fs';
import { resolve, basename } from 'node:path';
import { KilnError } from '../../../cache/errors.js';
import { isErrno } from '../../../cache/fsutil.js';
import { formatParseTree, parseDockerfile } from '../../../frontend/parser/index.js';
import { dockerfileFrontend } from '../../../frontend/index.js';
import { parseIgnoreFile } from '../../../frontend/ignore/index.js';
import { graphToJson } from '../../../solver/graph.js';
import { LINUX_AMD64 } from '../../build/build.js';
import { storeResolver } from '../../build/resolver.js';
import { Engine } from '../../engine.js';
import { usageError, type CommandSpec } from '../args.js';
import type { Command } from '../main.js';

const spec: CommandSpec = {
  name: 'debug',
  usage: 'kiln debug parse|graph [OPTIONS] [CONTEXT]',
  description: 'parse: print the parse tree (BuildKit\'s test format). graph: print the compiled graph as JSON, or for Graphviz (stages as clusters, cached steps shaded).',
  minPositionals: 1,
  maxPositionals: 2,
  options: [
    { name: 'file', short: 'f', type: 'string', placeholder: 'FILE', description: 'Dockerfile path (default CONTEXT/Dockerfile)' },
    { name: 'build-arg', type: 'list', placeholder: 'K=V', description: 'Set a build-time variable' },
    { name: 'target', type: 'string', placeholder: 'STAGE', description: 'Target stage (graph)' },
    { name: 'format', type: 'string', placeholder: 'FORMAT', choices: ['json', 'dot'], description: 'graph: json (default) or dot' },
  ],
  examples: ['kiln debug parse .', 'kiln debug graph --target build .', 'kiln debug graph --format dot . | dot -Tsvg > graph.svg'],
};

function readDockerfile(options: Record<string, unknown>, context: string): { text: string; file: string } {
  const path = resolve((options.file as string | undefined) ?? `${context}/Dockerfile`);
  try {
    return { text: readFileSync(path, 'utf8'), file: basename(path) };
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new KilnError('DOCKERFILE_MISSING', `Cannot read the Dockerfile "${path}": no such file`);
    throw err;
  }
}

/** The .dockerignore a build would use (beside the Dockerfile, else at the context root), so keys match. */
function readIgnore(options: Record<string, unknown>, context: string): string[] {
  const dockerfile = resolve((options.file as string | undefined) ?? `${context}/Dockerfile`);
  for (const path of [`${dockerfile}.dockerignore`, resolve(context, '.dockerignore')]) {
    try {
      return parseIgnoreFile(readFileSync(path, 'utf8'));
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
  }
  return [];
}

export const debugCommand: Command = {
  spec,
  async run({ options, positionals }, io) {
    const [what, context = '.'] = positionals as [string, string | undefined];
    if (what === 'graph' && io.host) {
      throw usageError('"kiln debug graph" does not work against a build service (--host): it resolves base images in a local store', spec);
    }
    const { text, file } = readDockerfile(options, context);
    if (what === 'parse') {
      io.stdout(formatParseTree(parseDockerfile(text, { file })));
      return 0;
    }
    if (what !== 'graph') throw usageError(`Unknown debug command "${what}": expected parse or graph`, spec);
    const buildArgs: Record<string, string> = {};
    for (const a of (options['build-arg'] as string[] | undefined) ?? []) {
      const eq = a.indexOf('=');
      if (eq > 0) buildArgs[a.slice(0, eq)] = a.slice(eq + 1);
    }
    const engine = await Engine.open();
    try {
      const def = await dockerfileFrontend.compile({
        dockerfile: text,
        file,
        buildArgs,
        target: options.target as string | undefined,
        context: { name: 'context', source: resolve(context), exclude: readIgnore(options, context) },
        platform: LINUX_AMD64,
        resolver: storeResolver(engine.store),
      });
      if (options.format === 'dot') {
        const roots = def.root ? [def.root] : [];
        const { LocalWorker } = await import('../../worker/worker.js');
        const { cachedVertices, graphToDot } = await import('../dot.js');
        const { sourceDateEpoch } = await import('../../image/reproducible.js');
        const seen = await cachedVertices(engine.store, new LocalWorker(engine.store, engine.executor), roots, { signal: io.signal, sourceDateEpoch: sourceDateEpoch(buildArgs) });
        io.stdout(graphToDot(roots, seen));
        return 0;
      }
      io.stdout(`${JSON.stringify({ ...(graphToJson(def.root ? [def.root] : []) as object), image: def.image, history: def.history }, null, 2)}\n`);
      return 0;
    } finally {
      engine.close();
    }
  },
};
