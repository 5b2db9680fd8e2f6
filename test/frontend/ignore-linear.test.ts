import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { createIgnoreMatcher, parseIgnoreFile } from '../../frontend/ignore/index.js';
import { matchWork } from '../../frontend/ignore/go-regexp.js';

/** Work (states entered) of one `matches` call. */
function work(pattern: string, path: string): { matched: boolean; steps: number } {
  const m = createIgnoreMatcher([pattern]);
  const before = matchWork.steps;
  const matched = m.matches(path);
  return { matched, steps: matchWork.steps - before };
}

describe('the .dockerignore matcher takes linear time', () => {
  // Each is exponential for a backtracking engine on a long name without the final letter.
  const pathological = ['*a*a*a*a*a*a*a*a*a*a*a*a*b', '**/*a*a*a*a*a*a*a*a*b', '[a-z]*a*a*a*a*a*a*a*[[:digit:]]', '?*a?*a?*a?*a?*a?*a*b'];

  for (const pattern of pathological) {
    it(`"${pattern}" on a 10,000-character name: bounded work, twice the name twice the work`, () => {
      const short = work(pattern, 'a'.repeat(10_000));
      const long = work(pattern, 'a'.repeat(20_000));
      expect(short.matched).toBe(false);
      expect(long.matched).toBe(false);
      // A few states per pattern character per name character, whatever the pattern's shape.
      expect(short.steps).toBeGreaterThan(10_000);
      expect(short.steps).toBeLessThan(8 * pattern.length * 10_001);
      expect(long.steps / short.steps).toBeLessThan(2.1);
    });
  }

  it('a path 5,000 directories deep is tried with all its parents in one pass', () => {
    // Each parent tried on its own would cost the sum of their lengths: quadratic in the depth.
    const pattern = '*a*a*a*a*b';
    const short = work(pattern, `${'aa/'.repeat(5_000)}x`);
    const long = work(pattern, `${'aa/'.repeat(10_000)}x`);
    expect(short.matched).toBe(false);
    expect(short.steps).toBeLessThan(8 * pattern.length * 15_002);
    expect(long.steps / short.steps).toBeLessThan(2.1);
    // A parent that matches, deep down, still excludes what is below it.
    expect(work('**/b*', `${'aa/'.repeat(5_000)}bin/x`).matched).toBe(true);
    expect(work('aa/aa/a?', `${'aa/'.repeat(5_000)}x`).matched).toBe(true);
    // An end-of-text assertion holds at a parent's end, and nothing may be read after it there.
    expect(work('a\\z', 'a/b').matched).toBe(true);
    expect(work('a\\z/b', 'a/b').matched).toBe(false);
  });

  it('still matches what it should on long names', () => {
    expect(work('*a*a*a*a*a*a*a*a*a*a*a*a*b', `${'a'.repeat(10_000)}b`).matched).toBe(true);
    expect(work('**/*a*a*a*b', `x/y/${'a'.repeat(10_000)}b`).matched).toBe(true);
    expect(work('[a-z]*a*a*[[:digit:]]', `${'a'.repeat(10_000)}7`).matched).toBe(true);
    // `*` stays within a segment: the name must not reach across a slash.
    expect(work('*a*b', `${'a'.repeat(5_000)}/b`).matched).toBe(false);
  });
});

describe('.dockerignore errors are located', () => {
  const failure = (text: string, file?: string): KilnError => {
    try {
      parseIgnoreFile(text, { file: file ?? '.dockerignore' });
    } catch (err) {
      if (err instanceof KilnError) return err;
      throw err;
    }
    throw new Error('expected an error');
  };

  it('names the file and line of a bad pattern, and the pattern', () => {
    const err = failure('# comment\nnode_modules\n\nsrc/[z-a]\n');
    expect(err.code).toBe('IGNORE_PATTERN');
    expect(err.location).toEqual({ file: '.dockerignore', line: 4, column: 1, text: 'src/[z-a]' });
    // As a Dockerfile error: the message ends with where, the report prints the line under it.
    expect(err.message).toBe('Invalid .dockerignore pattern "src/[z-a]": invalid character class range "z-a" at .dockerignore:4');
  });

  it('counts lines through comments, blank lines, CRLF and a byte order mark', () => {
    expect(failure('\uFEFFa\r\n\r\n# x\r\n!\r\n', 'app.Dockerfile.dockerignore').location).toMatchObject({ file: 'app.Dockerfile.dockerignore', line: 4 });
    expect(failure('ok\nbad[\n').location?.line).toBe(2);
    expect(failure('x\\').message).toContain('escapes nothing');
  });

  it('leaves a file without a name unchecked, as the conformance corpus reads it', () => {
    expect(parseIgnoreFile('!\n')).toEqual(['!']);
  });
});
