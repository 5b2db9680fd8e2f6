/**
 * The syntax check of Go's `filepath.Match` on Unix, which decides whether a .dockerignore
 * pattern is accepted at all. Returns a description of the first problem, or undefined.
 *
 * Classes `[...]` and `[^...]` need at least one item; an item is a character or a range `a-z`;
 * `-` and `]` cannot start an item unless escaped; a class must be closed; and a backslash must
 * be followed by the character it escapes.
 */
export function globSyntaxError(pattern: string): string | undefined {
  let rest = Array.from(pattern);
  while (rest.length > 0) {
    let start = 0;
    while (start < rest.length && rest[start] === '*') start++;
    rest = rest.slice(start);
    let end = 0;
    let inClass = false;
    for (; end < rest.length; end++) {
      const ch = rest[end];
      if (ch === '\\') {
        if (end + 1 < rest.length) end++;
      } else if (ch === '[') {
        inClass = true;
      } else if (ch === ']') {
        inClass = false;
      } else if (ch === '*' && !inClass) {
        break;
      }
    }
    const problem = chunkSyntaxError(rest.slice(0, end));
    if (problem !== undefined) return problem;
    rest = rest.slice(end);
  }
  return undefined;
}

function chunkSyntaxError(chunk: string[]): string | undefined {
  let i = 0;
  while (i < chunk.length) {
    const ch = chunk[i];
    if (ch === '\\') {
      if (i + 1 >= chunk.length) return 'a backslash at the end escapes nothing';
      i += 2;
    } else if (ch === '[') {
      i++;
      if (chunk[i] === '^') i++;
      for (let items = 0; ; items++) {
        if (chunk[i] === ']' && items > 0) {
          i++;
          break;
        }
        const low = classChar(chunk, i);
        if (typeof low === 'string') return low;
        i = low;
        if (chunk[i] === '-') {
          const high = classChar(chunk, i + 1);
          if (typeof high === 'string') return high;
          i = high;
        }
      }
    } else {
      i++;
    }
  }
  return undefined;
}

/** Reads one class character at `i`; returns the index after it, or a problem. */
function classChar(chunk: string[], i: number): number | string {
  const ch = chunk[i];
  if (ch === undefined) return 'a character class is not closed';
  if (ch === '-' || ch === ']') return `a character class item cannot start with "${ch}"`;
  let at = i;
  if (ch === '\\') {
    at++;
    if (at >= chunk.length) return 'a character class is not closed';
  }
  at++;
  if (at >= chunk.length) return 'a character class is not closed';
  return at;
}
