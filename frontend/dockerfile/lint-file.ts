import type { InstructionNode } from '../parser/index.js';
import type { RuleName } from './lint.js';

type Report = (rule: RuleName, message: string, line: number) => void;

/** Checks over the whole file: instruction casing. */
export function lintFile(instructions: readonly InstructionNode[], report: Report): void {
  const words = instructions.map((n) => n.original.trim().split(/\s/, 1)[0] ?? '');
  const upper = words.filter((w) => w === w.toUpperCase()).length;
  const lower = words.filter((w) => w === w.toLowerCase()).length;
  const majority = upper >= lower ? 'uppercase' : 'lowercase';
  instructions.forEach((node, i) => {
    const w = words[i]!;
    const fits = majority === 'uppercase' ? w === w.toUpperCase() : w === w.toLowerCase();
    if (!fits) report('ConsistentInstructionCasing', `Instruction "${w}" should match the case of the majority of instructions (${majority})`, node.startLine);
  });
}

const SINGLE = ['cmd', 'entrypoint', 'healthcheck'];

/** Checks within one stage: a CMD, ENTRYPOINT or HEALTHCHECK that a later one overrides. */
export function lintStageCounts(body: readonly InstructionNode[], report: Report): void {
  for (const name of SINGLE) {
    const nodes = body.filter((n) => n.name === name);
    for (const n of nodes.slice(0, -1)) {
      report('MultipleInstructionsDisallowed', `Multiple ${name.toUpperCase()} instructions should not be used in the same stage because only the last one takes effect`, n.startLine);
    }
  }
}
