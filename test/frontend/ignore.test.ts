import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { createIgnoreMatcher, parseIgnoreFile } from '../../frontend/ignore/index.js';

describe('createIgnoreMatcher', () => {
  it('exposes the cleaned patterns', () => {
    const matcher = createIgnoreMatcher(['  node_modules/ ', '', '!node_modules/keep//me', '*.log']);
    expect(matcher.patterns).toEqual([
      { pattern: 'node_modules', exclusion: false },
      { pattern: 'node_modules/keep/me', exclusion: true },
      { pattern: '*.log', exclusion: false },
    ]);
    expect(matcher.hasExclusions).toBe(true);
  });

  it('matches parents, exceptions in order, and never the root', () => {
    const matcher = createIgnoreMatcher(['build', '!build/keep', '**/*.tmp']);
    expect(matcher.matches('build/out/a.o')).toBe(true);
    expect(matcher.matches('build/keep/a.o')).toBe(false);
    expect(matcher.matches('build/keep/x.tmp')).toBe(true);
    expect(matcher.matches('./src/../build')).toBe(true);
    expect(matcher.matches('.')).toBe(false);
  });

  it('gives regular-expression escapes and classes the meaning Go gives them', () => {
    expect(createIgnoreMatcher(['[[:digit:]]*']).matches('7up')).toBe(true);
    expect(createIgnoreMatcher(['[[:digit:]]*']).matches('up')).toBe(false);
    expect(createIgnoreMatcher(['v\\d.txt']).matches('v1.txt')).toBe(true);
    expect(createIgnoreMatcher(['a]b']).matches('a]b')).toBe(true);
    expect(createIgnoreMatcher(['x{1}']).matches('x{1}')).toBe(true);
  });

  it('reports invalid patterns when built, with the pattern in the message', () => {
    const build = (patterns: string[]): KilnError => {
      try {
        createIgnoreMatcher(patterns);
      } catch (err) {
        if (err instanceof KilnError) return err;
        throw err;
      }
      throw new Error('expected an invalid pattern');
    };
    expect(build(['ok', '!']).message).toBe('Invalid .dockerignore pattern "!": an exception needs a pattern after "!"');
    expect(build(['a[']).code).toBe('IGNORE_PATTERN');
    // Accepted by filepath.Match but not a valid expression: reported at once, not at first use.
    expect(build(['[Local-Only]/']).message).toBe('Invalid .dockerignore pattern "[Local-Only]/": invalid character class range "l-O"');
  });
});

describe('canSkipDirectory', () => {
  it('skips excluded directories when there are no exceptions', () => {
    const matcher = createIgnoreMatcher(['node_modules', '*.log']);
    expect(matcher.canSkipDirectory('node_modules')).toBe(true);
    expect(matcher.canSkipDirectory('src')).toBe(false);
  });

  it('does not skip a directory an exception may reach into', () => {
    const matcher = createIgnoreMatcher(['docs', 'vendor', '!docs/*/README.md', '!vendor']);
    expect(matcher.canSkipDirectory('docs')).toBe(false);
    expect(matcher.canSkipDirectory('vendor')).toBe(false);
    const other = createIgnoreMatcher(['*', '!src/keep', '!*.md']);
    expect(other.canSkipDirectory('lib')).toBe(true);
    expect(other.canSkipDirectory('src')).toBe(false);
  });

  it('stays conservative for exceptions with ** or classes', () => {
    expect(createIgnoreMatcher(['out', '!**/*.json']).canSkipDirectory('out')).toBe(false);
    expect(createIgnoreMatcher(['out', '![o]ut/x']).canSkipDirectory('out')).toBe(false);
    expect(createIgnoreMatcher(['out', '!other/**']).canSkipDirectory('out')).toBe(true);
  });

  it('agrees with matches for every file below a skipped directory', () => {
    const patterns = ['a', '!a/b/c', 'x*', '!xy/z*', '**/tmp', '!keep/tmp'];
    const matcher = createIgnoreMatcher(patterns);
    const files = ['a/b/c', 'a/b/d', 'a/q', 'xa/z1', 'xy/z1', 'xy/q', 'keep/tmp/f', 'n/tmp/f'];
    for (const file of files) {
      const parts = file.split('/');
      for (let depth = 1; depth < parts.length; depth++) {
        const dir = parts.slice(0, depth).join('/');
        if (matcher.canSkipDirectory(dir)) expect(matcher.matches(file), `${file} under ${dir}`).toBe(true);
      }
    }
  });
});

describe('parseIgnoreFile', () => {
  it('reads CRLF files, keeps "#" that is not in column 1, and strips a leading slash', () => {
    expect(parseIgnoreFile('\uFEFF# comment\r\n/dist/\r\n  #notcomment\r\n!  /keep/./me\r\n\r\n')).toEqual(['dist', '#notcomment', '!keep/me']);
  });
});
