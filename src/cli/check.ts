import { caretExcerpt, formatLocation } from '../../cache/errors.js';
import { RULES } from '../../frontend/dockerfile/lint.js';
import { checkBuild, type BuildRequest } from '../build/build.js';
import { Engine } from '../engine.js';

/**
 * `kiln build --check`: every warning with its rule, location, message and the rule's one-line
 * description. Exit 1 only when the Dockerfile says `# check=error=true` and a rule fired.
 */
export async function runCheck(req: BuildRequest, write: (s: string) => void): Promise<number> {
  const engine = await Engine.open();
  try {
    const { warnings, error } = await checkBuild(engine, req);
    for (const w of warnings) {
      const where = w.location ? `${formatLocation({ file: w.location.file, line: w.location.line })}: ` : '';
      write(`WARNING: ${where}${w.rule ? `${w.rule}: ` : ''}${w.message}\n`);
      if (w.rule && Object.hasOwn(RULES, w.rule)) write(`  ${RULES[w.rule as keyof typeof RULES]}\n`);
      const excerpt = w.location ? caretExcerpt({ ...w.location, column: undefined }) : undefined;
      if (excerpt) write(`${excerpt}\n`);
    }
    const n = warnings.length;
    write(n === 0 ? 'Check complete, no warnings found.\n' : `Check complete, ${n} warning${n === 1 ? '' : 's'} found.\n`);
    return error ? 1 : 0;
  } finally {
    engine.close();
  }
}
