import { KilnError, type SourceLocation } from '../../solver/graph.js';

/** Where an instruction is: its file, first line and that line's text. */
export interface Where {
  file: string;
  line: number;
  lines: readonly string[];
}

export function locate(where: Where, column = 1): SourceLocation {
  return { file: where.file, line: where.line, column, text: where.lines[where.line - 1] ?? '' };
}

export function locatedError(code: string, message: string, where: Where, options: { hint?: string; column?: number; cause?: unknown } = {}): KilnError {
  return new KilnError(code, `${message} at ${where.file}:${where.line}`, { location: locate(where, options.column), hint: options.hint, cause: options.cause });
}

/** The candidate closest to `word` by edit distance, when it is close enough to be a typo. */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const d = distance(w, c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}
