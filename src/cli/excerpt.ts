/**
 * The lines of a Dockerfile around a failing instruction, numbered, the instruction marked with
 * `>>>` (its continuation lines too), as BuildKit prints them.
 */
export function dockerfileExcerpt(text: string, line: number, options: { context?: number } = {}): string[] {
  const lines = text.split('\n');
  if (line < 1 || line > lines.length) return [];
  const context = options.context ?? 2;
  // An instruction continued with a trailing backslash spans the following lines too.
  let last = line;
  while (last < lines.length && /\\\s*$/.test(lines[last - 1]!)) last++;
  const from = Math.max(1, line - context);
  const to = Math.min(lines.length, last + context);
  const width = String(to).length;
  const out: string[] = [];
  for (let n = from; n <= to; n++) {
    if (n === lines.length && lines[n - 1] === '') break;
    const marker = n >= line && n <= last ? '>>>' : '   ';
    out.push(` ${String(n).padStart(width)} | ${marker} ${lines[n - 1]!.replace(/\r$/, '')}`.trimEnd());
  }
  return out;
}
