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
          // A run of stars gives the same language once: repeating the group only adds ways
          // for the backtracking engine to fail, exponentially many on a long run.
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

  switch (kind) {
    case 'exact':
      return (path) => path === pattern;
    case 'prefix': {
      const prefix = pattern.slice(0, -2);
      return (path) => path.startsWith(prefix);
    }
    case 'suffix': {
      const suffix = pattern.slice(2);
      // `**/foo` also matches `foo` itself.
      return (path) => path.endsWith(suffix) || (suffix.startsWith('/') && path === suffix.slice(1));
    }
    case 'regexp': {
      const re = goRegExp(`${source}$`);
      // V8 compiles an expression on first use: a pattern too large to compile must fail here,
      // where the caller reports it as an invalid pattern, not later inside a match.
      re.test('');
      return (path) => re.test(path);
    }
  }
}
