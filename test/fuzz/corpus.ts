import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONFORMANCE_DIR } from '../frontend/conformance-dir.js';

const REPO = resolve(import.meta.dirname, '../..');

/** What mutated cases start from: real Dockerfiles, .dockerignore files and shell words. */
export interface Corpus {
  dockerfiles: string[];
  ignores: string[];
  words: string[];
}

function walkFiles(dir: string, keep: (name: string) => boolean): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walkFiles(p, keep));
    else if (keep(name)) out.push(p);
  }
  return out;
}

const isDockerfile = (name: string) => /(^Dockerfile|\.Dockerfile$)/.test(name);

export function loadCorpus(): Corpus {
  const dockerfiles = [
    ...walkFiles(join(CONFORMANCE_DIR, 'dockerfile-parser'), isDockerfile),
    ...walkFiles(join(REPO, 'fixtures'), isDockerfile),
    ...walkFiles(join(REPO, 'test/frontend/negative'), isDockerfile),
  ].map((p) => readFileSync(p, 'utf8'));

  const ignoreCases = JSON.parse(readFileSync(join(CONFORMANCE_DIR, 'dockerignore/cases.json'), 'utf8')) as {
    cases: { patterns: string[] }[];
    ignorefile?: { text?: string; input?: string }[];
  };
  const ignores = [
    readFileSync(join(REPO, 'fixtures/security/fuzz-seeds/ignore-seeds.txt'), 'utf8'),
    ...new Set(ignoreCases.cases.map((c) => `${c.patterns.join('\n')}\n`)),
    ...(ignoreCases.ignorefile ?? []).flatMap((f) => [f.text ?? f.input ?? '']),
    // Stars between literals: what a backtracking matcher takes exponential time on.
    '*a*a*a*a*a*a*a*a*a*a*a*b\n**/*a*a*a*a*a*a*b\n[a-z]*a*a*a*a*a*a*c\n!*b*b*b*b*b*b*b*b*c\n',
  ];

  const words: string[] = [];
  for (const file of ['envVarTest', 'wordsTest']) {
    for (const line of readFileSync(join(CONFORMANCE_DIR, 'shell-expansion', file), 'utf8').split('\n')) {
      const bar = line.indexOf('|');
      if (line.startsWith('#') || bar < 0) continue;
      // envVarTest lines are "A|word | expected"; wordsTest lines are "word | expected".
      const body = /^[AWU]\|/.test(line) ? line.slice(2) : line;
      const sep = body.lastIndexOf('|');
      words.push((sep < 0 ? body : body.slice(0, sep)).trim());
    }
  }
  return { dockerfiles, ignores, words };
}
