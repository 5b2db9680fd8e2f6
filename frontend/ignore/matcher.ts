import { KilnError } from '../../cache/errors.js';
import { trimSpace } from '../shell/go-unicode.js';
import { cleanPath } from './clean-path.js';
import { globSyntaxError } from './glob-syntax.js';
import { compilePattern, compilePatternWithParents, type PathTest } from './pattern.js';

export interface IgnorePattern {
  /** The pattern, cleaned, without its leading `!`. */
  readonly pattern: string;
  /** A `!` pattern: it re-includes what earlier patterns excluded. */
  readonly exclusion: boolean;
}

export interface IgnoreMatcher {
  readonly patterns: readonly IgnorePattern[];
  /** Whether any pattern is a `!` exception. */
  readonly hasExclusions: boolean;
  /** Whether the context path (slash-separated, relative to the context root) is excluded. */
  matches(path: string): boolean;
  /**
   * Whether a walker may skip the directory without looking inside: it is excluded and no
   * exception pattern can re-include anything below it. Conservative: false when unsure.
   */
  canSkipDirectory(dir: string): boolean;
}

interface CompiledPattern extends IgnorePattern {
  /** Whether the pattern matches a path or one of its parent directories. */
  withParents: PathTest;
  /** Whether an exception could match some path strictly below `dirParts`. */
  reachesBelow(dirParts: readonly string[]): boolean;
}

function invalid(source: string, detail: string): KilnError {
  return new KilnError('IGNORE_PATTERN', `Invalid .dockerignore pattern ${JSON.stringify(source)}: ${detail}`, {
    hint: 'Patterns use Go filepath.Match syntax plus "**"; escape a literal "[", "*" or "?" with a backslash',
  });
}

/**
 * Builds a matcher with the rules of moby/patternmatcher: patterns apply in order, an ordinary
 * pattern is checked only while the path is not excluded and an exception only while it is,
 * and a pattern matches a path when it matches the path or any of its parent directories.
 * Throws KilnError('IGNORE_PATTERN') for an invalid pattern.
 */
export function createIgnoreMatcher(patterns: readonly string[]): IgnoreMatcher {
  const compiled: CompiledPattern[] = [];
  for (const source of patterns) {
    let pattern = trimSpace(source);
    if (pattern === '') continue;
    pattern = cleanPath(pattern);
    const exclusion = pattern.startsWith('!');
    if (exclusion) {
      if (pattern.length === 1) throw invalid(source, 'an exception needs a pattern after "!"');
      pattern = pattern.slice(1);
    }
    const syntax = globSyntaxError(pattern);
    if (syntax !== undefined) throw invalid(source, syntax);
    let withParents: PathTest;
    try {
      withParents = compilePatternWithParents(pattern);
    } catch (err) {
      if (err instanceof SyntaxError) throw invalid(source, err.message);
      throw err;
    }
    compiled.push({ pattern, exclusion, withParents, reachesBelow: reachBelowTest(pattern) });
  }

  const matches = (path: string): boolean => {
    const file = cleanPath(path);
    if (file === '.') return false;
    // Go's filepath.Dir gives "/" for "/x", which moby splits into the parents "" and "/".
    const rootIsParent = file.lastIndexOf('/') === 0;
    let excluded = false;
    for (const pattern of compiled) {
      if (pattern.exclusion !== excluded) continue;
      // The path or any parent directory: one pass over the path, not one per parent.
      if (pattern.withParents(file) || (rootIsParent && pattern.withParents('/'))) excluded = !pattern.exclusion;
    }
    return excluded;
  };

  const hasExclusions = compiled.some((p) => p.exclusion);
  return {
    patterns: compiled.map(({ pattern, exclusion }) => ({ pattern, exclusion })),
    hasExclusions,
    matches,
    canSkipDirectory(dir) {
      if (!matches(dir)) return false;
      if (!hasExclusions) return true;
      const parts = cleanPath(dir).split('/');
      return !compiled.some((p) => p.exclusion && p.reachesBelow(parts));
    },
  };
}

/**
 * An exception can only re-include a path below a directory if it can match such a path (a
 * match on the directory or its ancestors already decided the directory itself, and ordinary
 * patterns only exclude more). The check walks the pattern segment by segment; anything it cannot
 * judge per segment (`**`, classes, escapes) counts as "could match".
 */
function reachBelowTest(pattern: string): (dirParts: readonly string[]) => boolean {
  if (/[[\]\\]/.test(pattern)) return () => true;
  const segments = pattern.split('/');
  const tests = segments.map((segment) => (segment.includes('**') ? undefined : compilePattern(segment)));
  return (dirParts) => {
    for (let i = 0; i < segments.length; i++) {
      const test = tests[i];
      if (test === undefined || i >= dirParts.length) return true;
      if (!test(dirParts[i]!)) return false;
    }
    return false;
  };
}
