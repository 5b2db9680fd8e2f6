import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { glob } from '../../src/fsutil/glob.js';
import { compileMatch, matchWork, patternSyntaxError } from '../../src/fsutil/match.js';

/** The cases Go's path/filepath documents in its own tests: pattern, name, match (or bad). */
const GO_CASES: [string, string, boolean | 'bad'][] = [
  ['abc', 'abc', true],
  ['*', 'abc', true],
  ['*c', 'abc', true],
  ['a*', 'a', true],
  ['a*', 'abc', true],
  ['a*', 'ab/c', false],
  ['a*/b', 'abc/b', true],
  ['a*/b', 'a/c/b', false],
  ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
  ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
  ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
  ['a*b?c*x', 'abxbbxdbxebxczzx', true],
  ['a*b?c*x', 'abxbbxdbxebxczzy', false],
  ['ab[c]', 'abc', true],
  ['ab[b-d]', 'abc', true],
  ['ab[e-g]', 'abc', false],
  ['ab[^c]', 'abc', false],
  ['ab[^b-d]', 'abc', false],
  ['ab[^e-g]', 'abc', true],
  ['a\\*b', 'a*b', true],
  ['a\\*b', 'ab', false],
  ['a?b', 'a☺b', true],
  ['a[^a]b', 'a☺b', true],
  ['a???b', 'a☺b', false],
  ['a[^a][^a][^a]b', 'a☺b', false],
  ['[a-ζ]*', 'α', true],
  ['*[a-ζ]', 'A', false],
  ['a?b', 'a/b', false],
  ['a*b', 'a/b', false],
  ['[\\]a]', ']', true],
  ['[\\-]', '-', true],
  ['[x\\-]', 'x', true],
  ['[x\\-]', '-', true],
  ['[x\\-]', 'z', false],
  ['[\\-x]', 'x', true],
  ['[\\-x]', '-', true],
  ['[\\-x]', 'a', false],
  ['[]a]', ']', 'bad'],
  ['[-]', '-', 'bad'],
  ['[x-]', 'x', 'bad'],
  ['[x-]', '-', 'bad'],
  ['[x-]', 'z', 'bad'],
  ['[-x]', 'x', 'bad'],
  ['[-x]', '-', 'bad'],
  ['[-x]', 'a', 'bad'],
  ['\\', 'a', 'bad'],
  ['[a-b-c]', 'a', 'bad'],
  ['[', 'a', 'bad'],
  ['[^', 'a', 'bad'],
  ['[^bc', 'a', 'bad'],
  ['a[', 'a', 'bad'],
  ['a[', 'ab', 'bad'],
  ['a[', 'x', 'bad'],
  ['a/b[', 'x', 'bad'],
  ['*x', 'xxx', true],
];

describe('Go filepath.Match semantics', () => {
  it.each(GO_CASES)('%j against %j', (pattern, name, want) => {
    if (want === 'bad') {
      expect(() => compileMatch(pattern)).toThrow(KilnError);
      expect(patternSyntaxError(pattern)).toBeTypeOf('string');
      return;
    }
    expect(patternSyntaxError(pattern)).toBeUndefined();
    expect(compileMatch(pattern)(name)).toBe(want);
  });

  it('names the malformed pattern and what is wrong with it', () => {
    let err: unknown;
    try {
      compileMatch('src/[a-');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KilnError);
    expect((err as KilnError).code).toBe('INVALID_PATTERN');
    expect((err as KilnError).message).toBe('Invalid pattern "src/[a-": a character class is not closed');
  });

  it('takes "!" as a negation too, and matches a class against any character but stops "*" and "?" at "/"', () => {
    expect(compileMatch('[!a]x')('bx')).toBe(true);
    expect(compileMatch('[!a]x')('ax')).toBe(false);
    expect(compileMatch('a[^x]b')('a/b')).toBe(true);
    expect(compileMatch('')('')).toBe(true);
    expect(compileMatch('')('a')).toBe(false);
    expect(compileMatch('**')('a/b')).toBe(false);
  });

  it('matches a pattern with many stars in steps bounded by the name times the pattern', () => {
    const pattern = `${'a*'.repeat(20)}b`;
    const name = 'a'.repeat(40);
    const match = compileMatch(pattern);
    const before = matchWork.steps;
    expect(match(name)).toBe(false);
    expect(match(`${name}b`)).toBe(true);
    const steps = matchWork.steps - before;
    expect(steps).toBeGreaterThan(0);
    expect(steps).toBeLessThanOrEqual(2 * (name.length + 1) * pattern.length);
  });

  it('matches a 100,000-character pattern of stars against a long name', () => {
    const match = compileMatch(`${'*a'.repeat(50_000)}b`);
    expect(match('a'.repeat(4096))).toBe(false);
  });
});

describe('glob', () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-glob-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('walks a tree once per segment whatever the number of "**" segments', () => {
    let dir = root;
    for (let i = 0; i < 12; i++) {
      dir = join(dir, 'a');
      mkdirSync(dir);
      writeFileSync(join(dir, 'f'), '');
    }
    writeFileSync(join(dir, 'b'), '');
    const deep = `${'a/'.repeat(12)}b`;
    expect(glob(root, '**/a/**/a/**/a/**/a/**/a/**/a/**/b')).toEqual([deep]);
    expect(glob(root, `${'**/'.repeat(200)}b`)).toEqual([deep]);
    expect(glob(root, 'a/?/[a-c]/*/a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b')).toEqual([]);
    expect(glob(root, 'a/\\a/f')).toEqual(['a/a/f']);
    expect(() => glob(root, 'a/[')).toThrow('Invalid pattern "a/[": a character class is not closed');
  });
});
