import { goRegExp } from './go-regexp.js';

/** A compiled pattern: tests one slash-separated path (no parent handling). */
export type PathTest = (path: string) => boolean;

const REGEXP_ONLY = new Set(['.', '+', '(', ')', '|', '{', '}', '$']);

/**
 * Compiles a cleaned pattern the way moby/patternmatcher does, so that edge cases agree: a
 * pattern without wildcards is an exact comparison, `prefix/**` a prefix test, `**suffix` a
 * suffix test, and anything else a regular expression where `*` and `?` stay within one path
 * segment and `**` spans any number of segments. Throws SyntaxError for an invalid expression.
 */
export function compilePattern(pattern: string): PathTest {
  return compile(pattern).test;
}

/**
 * The same pattern as the matcher applies it: to a path and to each of its parent directories
 * (the parts before each `/`). An expression does that in one pass over the path.
 */
export function compilePatternWithParents(pattern: string): PathTest {
  return compile(pattern).withParents;
}

function orParents(test: PathTest): PathTest {
  return (path) => {
    if (test(path)) return true;
    for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) if (test(path.slice(0, i))) return true;
    return false;
  };
}

function compile(pattern: string): { test: PathTest; withParents: PathTest } {
  const chars = Array.from(pattern);
  let pos = 0;
  const peek = (): string | undefined => chars[pos];
  const next = (): string | undefined => chars[pos++];

  let kind: 'exact' | 'prefix' | 'suffix' | 'regexp' = 'exact';
  let source = '^';
  for (let i = 0; pos < chars.length; i++) {
    const ch = next()!;
    if (ch === '*') {
      if (peek() === '*') {
        next();
        if (peek() === '/') next();
        if (peek() === undefined) {
          if (kind === 'exact') {
            kind = 'prefix';
          } else {
            source += '.*';
            kind = 'regexp';
          }
        } else {
          // A run of stars gives the same language once: repeating the group only makes the
          // program longer.
          if (!source.endsWith('(.*/)?')) source += '(.*/)?';
          kind = 'regexp';
        }
        if (i === 0) kind = 'suffix';
      } else {
        if (!source.endsWith('[^/]*')) source += '[^/]*';
        kind = 'regexp';
      }
    } else if (ch === '?') {
      source += '[^/]';
      kind = 'regexp';
    } else if (REGEXP_ONLY.has(ch)) {
      source += `\\${ch}`;
    } else if (ch === '\\') {
      const escaped = next();
      if (escaped === undefined) {
        source += '\\';
      } else {
        source += `\\${escaped}`;
        kind = 'regexp';
      }
    } else if (ch === '[' || ch === ']') {
      source += ch;
      kind = 'regexp';
    } else {
      source += ch;
    }
  }

  let test: PathTest;
  switch (kind) {
    case 'exact':
      test = (path) => path === pattern;
      break;
    case 'prefix': {
      const prefix = pattern.slice(0, -2);
      test = (path) => path.startsWith(prefix);
      break;
    }
    case 'suffix': {
      const suffix = pattern.slice(2);
      // `**/foo` also matches `foo` itself.
      test = (path) => path.endsWith(suffix) || (suffix.startsWith('/') && path === suffix.slice(1));
      break;
    }
    case 'regexp': {
      const re = goRegExp(`${source}$`);
      return { test: (path) => re.test(path), withParents: (path) => re.testWithParents(path) };
    }
  }
  return { test, withParents: orParents(test) };
}
