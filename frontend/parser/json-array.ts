import { trimLeftSpace } from '../shell/go-unicode.js';

export type JsonArrayParse =
  | { kind: 'strings'; values: string[] }
  /** Not JSON, or not an array: the caller falls back to the plain form. */
  | { kind: 'not-json' }
  /** Valid JSON array with an element that is not a string: an error. */
  | { kind: 'not-strings' };

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Reads the exec form `["a", "b"]` the way Go's encoding/json would: a number too large for a
 * float64 makes the text invalid JSON rather than a non-string element, and an escaped lone
 * surrogate decodes to U+FFFD.
 */
export function parseJsonArray(text: string): JsonArrayParse {
  const body = trimLeftSpace(text);
  if (!body.startsWith('[')) return { kind: 'not-json' };
  let overflow = false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body, (_key, value: unknown) => {
      if (typeof value === 'number' && !Number.isFinite(value)) overflow = true;
      return value;
    });
  } catch (err) {
    if (err instanceof SyntaxError) return { kind: 'not-json' };
    throw err;
  }
  if (overflow || !Array.isArray(parsed)) return { kind: 'not-json' };
  const values: string[] = [];
  for (const element of parsed as unknown[]) {
    if (typeof element !== 'string') return { kind: 'not-strings' };
    values.push(element.replace(LONE_SURROGATE, '\uFFFD'));
  }
  return { kind: 'strings', values };
}
