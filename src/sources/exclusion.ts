import { createIgnoreMatcher } from '../../frontend/ignore/index.js';
import { NO_EXCLUSION, type Exclusion } from './select.js';

const cache = new Map<string, Exclusion>();

/** An exclusion from .dockerignore patterns, memoised by pattern list. */
export function exclusionFor(patterns: readonly string[]): Exclusion {
  if (patterns.length === 0) return NO_EXCLUSION;
  const key = JSON.stringify(patterns);
  let ex = cache.get(key);
  if (!ex) {
    const matcher = createIgnoreMatcher([...patterns]);
    ex = { excluded: (rel) => matcher.matches(rel) };
    cache.set(key, ex);
  }
  return ex;
}
