import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCorpus } from './corpus.js';
import { makeCase, runFuzz, type FuzzOutcome } from './harness.js';

/**
 * The frontend on hostile input: mutated Dockerfiles, build args, .dockerignore files, ONBUILD
 * triggers of base images and shell words. Every case must end in a graph or a located
 * KilnError, within its time bound. KILN_FUZZ_CASES and KILN_FUZZ_SEED widen or move the run;
 * KILN_FUZZ_FROM starts it at a case; KILN_FUZZ_DUMP=DIR writes each failing case there as JSON.
 */
const CASES = Number(process.env.KILN_FUZZ_CASES ?? 10_000);
const SEED = Number(process.env.KILN_FUZZ_SEED ?? 0x6b696c6e);
const FROM = Number(process.env.KILN_FUZZ_FROM ?? 0);

const show = (o: FuzzOutcome) => `case ${o.id} (seed ${SEED}): ${o.kind} ${o.code ?? ''} ${o.error ? `${o.error.name}: ${o.error.message}\n${o.error.stack}` : ''}`;

describe('frontend fuzzer', () => {
  it(`ends ${CASES} mutated inputs in a graph or a located KilnError`, async () => {
    const { outcomes, slowest } = await runFuzz({ seed: SEED, from: FROM, to: FROM + CASES });
    expect(outcomes).toHaveLength(CASES);
    const bad = outcomes.filter((o) => o.kind === 'crash' || o.kind === 'hang' || o.kind === 'unlocated');
    const dump = process.env.KILN_FUZZ_DUMP;
    if (dump && bad.length > 0) {
      mkdirSync(dump, { recursive: true });
      const corpus = loadCorpus();
      for (const o of bad) writeFileSync(join(dump, `case-${o.id}.json`), JSON.stringify({ outcome: o, input: makeCase(corpus, SEED, o.id) }, null, 1));
    }
    const counts: Record<string, number> = {};
    for (const o of outcomes) counts[o.kind] = (counts[o.kind] ?? 0) + 1;
    // Figures for SECURITY.md; vitest shows them with --reporter=verbose or on failure.
    console.log(`fuzz: ${CASES} cases, ${JSON.stringify(counts)}, slowest case ${slowest?.id} ${slowest?.ms.toFixed(0)} ms`);
    expect(bad.map(show).slice(0, 10)).toEqual([]);
    // The mutations must still reach the compiler: most cases cannot all stop in the parser.
    expect(counts.graph ?? 0).toBeGreaterThan(CASES / 10);
  }, 300_000);
});
