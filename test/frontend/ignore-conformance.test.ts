import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { createIgnoreMatcher, parseIgnoreFile } from '../../frontend/ignore/index.js';
import { CONFORMANCE_DIR } from './conformance-dir.js';

interface MatchCase {
  group: string;
  patterns: string[];
  path: string;
  expected: boolean | 'error';
}

interface IgnoreFileCase {
  content: string | null;
  expected: string[];
}

const corpus = JSON.parse(readFileSync(path.join(CONFORMANCE_DIR, 'dockerignore', 'cases.json'), 'utf8')) as {
  cases: MatchCase[];
  ignorefile: IgnoreFileCase[];
};

function evaluate(patterns: string[], target: string): boolean | 'error' {
  try {
    return createIgnoreMatcher(patterns).matches(target);
  } catch (err) {
    if (err instanceof KilnError && err.code === 'IGNORE_PATTERN') return 'error';
    throw err;
  }
}

describe('dockerignore conformance', () => {
  it('finds the whole corpus', () => {
    expect(corpus.cases).toHaveLength(138);
    expect(corpus.ignorefile).toHaveLength(2);
  });

  it.each(corpus.cases.map((c, i) => ({ ...c, index: i, shown: JSON.stringify(c.patterns) })))(
    'case $index ($group): $shown vs "$path"',
    ({ patterns, path: target, expected }) => {
      expect(evaluate(patterns, target)).toBe(expected);
    },
  );

  it.each(corpus.ignorefile.map((c, i) => ({ ...c, index: i })))('ignore file $index', ({ content, expected }) => {
    // A missing file (null) reads as no patterns at all.
    expect(parseIgnoreFile(content ?? '')).toEqual(expected);
  });
});
