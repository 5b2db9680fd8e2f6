import { vertex, type SourceLocation, type Vertex } from '../../solver/graph.js';
import type { Heredoc, InstructionNode } from '../parser/index.js';

const ONLY_HEREDOC = /^\d*<<-?[\t ]*\S+$/;

/** Where RUN mounts a heredoc script that starts with `#!`, as BuildKit does. */
export const SCRIPT_DIR = '/dev/pipes';

export type RunHeredoc =
  | { kind: 'shell'; script: string }
  | { kind: 'file'; name: string; data: string };

/**
 * What a shell-form RUN with heredocs runs. A command that is nothing but one heredoc runs the
 * body: as a file with its own interpreter when it starts with `#!`, else as the shell script.
 * Otherwise the command line and the bodies go to the shell together, which feeds each body to
 * its `<<` (and expands it or not, by the quoting of the delimiter, as a shell does).
 */
export function runHeredoc(node: InstructionNode): RunHeredoc {
  const command = (node.args[0] ?? '').trim();
  const [first] = node.heredocs;
  if (node.heredocs.length === 1 && first && ONLY_HEREDOC.test(command)) {
    if (first.content.startsWith('#!')) return { kind: 'file', name: first.name, data: first.content };
    return { kind: 'shell', script: first.content };
  }
  const bodies = node.heredocs.map((h) => `${h.content}${h.content === '' || h.content.endsWith('\n') ? '' : '\n'}${h.name}\n`);
  return { kind: 'shell', script: `${command}\n${bodies.join('')}` };
}

/** The heredoc a COPY/ADD source word (`<<EOF`, `<<-"EOF"`) stands for, if it is one. */
export function heredocForSource(word: string, node: InstructionNode): Heredoc | undefined {
  const m = /^\d*<<-?(.+)$/.exec(word);
  if (!m) return undefined;
  const name = m[1]!.replace(/^["']|["']$/g, '');
  return node.heredocs.find((h) => h.name === name);
}

/** A filesystem holding one file at `/name`: the source of a heredoc COPY or a RUN script. */
export function fileVertex(name: string, data: string, mode: number, meta: { name: string; location: SourceLocation }): Vertex {
  return vertex({ kind: 'file', base: -1, actions: [{ action: 'mkfile', path: `/${name}`, mode, data }] }, [], meta);
}
