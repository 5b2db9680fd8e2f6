import { contextKey, stepKey } from '../../solver/keys.js';
import { topoSort, type Vertex } from '../../solver/graph.js';
import type { Worker } from '../../solver/worker.js';
import type { Store } from '../../cache/store.js';

/**
 * The build graph in Graphviz's language: each stage a cluster, each vertex a box named by its
 * step, an edge from each input to its user, vertices the cache already holds filled grey.
 */
export function graphToDot(roots: readonly Vertex[], cached: ReadonlySet<string> = new Set()): string {
  const vertices = topoSort(roots);
  const id = (v: Vertex) => `"${v.digest.slice(7, 19)}"`;
  const node = (v: Vertex, indent: string) => {
    const label = `${v.meta.name}\\n${v.op.kind}${cached.has(v.digest) ? ' (cached)' : ''}`;
    const style = cached.has(v.digest) ? ', style="rounded,filled", fillcolor="#d9d9d9"' : '';
    return `${indent}${id(v)} [label="${escape(label)}"${style}];`;
  };
  const stages = new Map<string, Vertex[]>();
  const loose: Vertex[] = [];
  for (const v of vertices) {
    if (v.meta.stage === undefined) loose.push(v);
    else stages.set(v.meta.stage, [...(stages.get(v.meta.stage) ?? []), v]);
  }
  const lines = ['digraph kiln {', '  rankdir=TB;', '  node [shape=box, style=rounded, fontname="monospace"];'];
  let n = 0;
  for (const [stage, members] of stages) {
    lines.push(`  subgraph cluster_${n++} {`, `    label="stage ${escape(stage)}";`, '    style=dashed;');
    for (const v of members) lines.push(node(v, '    '));
    lines.push('  }');
  }
  for (const v of loose) lines.push(node(v, '  '));
  for (const v of vertices) for (const input of v.inputs) lines.push(`  ${id(input)} -> ${id(v)};`);
  lines.push('}');
  return `${lines.join('\n')}\n`;
}

function escape(text: string): string {
  return text.replace(/\\(?!n)/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/**
 * Which vertices a build would take from the cache now. The key is the solver's
 * (solver/keys.ts: the op, its inputs' keys, its content checksums, SOURCE_DATE_EPOCH); vertices
 * fetched over the network (http, git) and everything after them count as not cached rather
 * than being fetched to find out. This only shades a picture: a build never depends on it.
 */
export async function cachedVertices(store: Store, worker: Worker, roots: readonly Vertex[], o: { signal: AbortSignal; sourceDateEpoch?: number }): Promise<Set<string>> {
  const keys = new Map<string, string | undefined>();
  const cached = new Set<string>();
  // A hit as the solver sees one: a record whose layer was collected is none.
  const has = (key: string) => {
    const found = store.db.lookupCache(key);
    return found !== undefined && found.layer !== undefined;
  };
  for (const v of topoSort(roots)) {
    const op = v.op;
    if (op.kind === 'context') {
      keys.set(v.digest, contextKey(op));
      continue;
    }
    if (op.kind === 'image') {
      keys.set(v.digest, op.manifest);
      cached.add(v.digest);
      continue;
    }
    const inputs = v.inputs.map((i) => keys.get(i.digest));
    if (op.kind === 'http' || op.kind === 'git' || inputs.some((k) => k === undefined)) {
      keys.set(v.digest, undefined);
      continue;
    }
    const content = await worker.contentKey(v, o.signal);
    const key = stepKey({ op, inputs: inputs as string[], content: content?.key ?? null, sourceDateEpoch: o.sourceDateEpoch });
    keys.set(v.digest, key);
    if (has(key)) cached.add(v.digest);
  }
  return cached;
}
