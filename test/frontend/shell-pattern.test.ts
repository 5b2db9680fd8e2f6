import { describe, expect, it } from 'vitest';
import { compileShellPattern, trimPatternPrefix, trimPatternSuffix } from '../../frontend/shell/pattern.js';

/** What a backtracking RegExp finds for a shell pattern: the reference the matcher must agree with. */
function reference(pattern: string, greedy: boolean): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*') source += greedy ? '[^\\n]*' : '[^\\n]*?';
    else if (ch === '?') source += '[^\\n]';
    else source += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(source, 'gu');
}

/** A small seeded generator, so that a failure can be repeated. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

describe('shell patterns of ${var#…}, ${var%…} and ${var/…/…}', () => {
  it('finds exactly what a backtracking regular expression finds, on 5,000 random cases', () => {
    const rnd = random(17);
    const pick = (alphabet: string, max: number) => Array.from({ length: Math.floor(rnd() * max) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join('');
    for (let n = 0; n < 5_000; n++) {
      const pattern = pick('ab*?', 6);
      const value = pick('ab\nc', 10);
      for (const greedy of [true, false]) {
        const re = reference(pattern, greedy);
        const p = compileShellPattern(pattern, { greedy });
        for (let from = 0; from <= value.length; from++) {
          re.lastIndex = from;
          const want = re.exec(value);
          const got = p.find(value, from);
          expect(got && { index: got.index, end: got.end }, `${JSON.stringify(pattern)} in ${JSON.stringify(value)} from ${from}, greedy ${greedy}`).toEqual(want && { index: want.index, end: want.index + want[0].length });
        }
      }
    }
  });

  it('takes at most the pattern times the value in steps: a*a*a*…b on 10,000 characters answers at once', () => {
    const value = 'a'.repeat(10_000);
    const pattern = `${'a*'.repeat(40)}b`;
    // A RegExp would take longer than the age of the universe here.
    expect(trimPatternPrefix(value, pattern, true)).toBe(value);
    expect(trimPatternSuffix(value, pattern, false)).toBe(value);
    expect(compileShellPattern(pattern, { greedy: true }).find(value, 0)).toBeNull();
    // The shortest suffix that matches: forty a's (each followed by a star that takes nothing) and the b.
    expect(trimPatternSuffix(`${value}b`, pattern, false)).toBe('a'.repeat(9960));
  });

  it('refuses a pattern and a value whose product is beyond what it keeps track of', () => {
    expect(() => compileShellPattern('a*'.repeat(2000), { greedy: true }).find('a'.repeat(100_000), 0)).toThrow(/too long to match/);
  });
});
