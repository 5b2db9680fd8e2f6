import { KilnError } from '../../cache/errors.js';

export type OptionType = 'bool' | 'string' | 'list';

export interface OptionSpec {
  name: string;
  short?: string;
  type: OptionType;
  description: string;
  placeholder?: string;
  /** The only values a string option takes; anything else is a usage error. */
  choices?: readonly string[];
}

export interface CommandSpec {
  name: string;
  usage: string;
  description: string;
  options: readonly OptionSpec[];
  /** Stop reading options at the first positional (`kiln run IMAGE CMD...`). */
  stopAtPositional?: boolean;
  minPositionals: number;
  maxPositionals: number;
  /** Shown under "Examples:" in the command's help. */
  examples?: readonly string[];
}

export interface ParsedArgs {
  options: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function usageError(message: string, spec?: CommandSpec): KilnError {
  return new KilnError('USAGE', message, { exitCode: 2, hint: spec ? `Usage: ${spec.usage}\nSee "kiln ${spec.name} --help"` : 'See "kiln --help"' });
}

/**
 * A small, exact argv parser: `--name value`, `--name=value`, `-x value`, grouped short booleans,
 * `--` to end options. Unknown options are usage errors (exit code 2).
 */
export function parseArgs(argv: readonly string[], spec: CommandSpec): ParsedArgs {
  const options: ParsedArgs['options'] = {};
  const positionals: string[] = [];
  const byLong = new Map(spec.options.map((o) => [o.name, o]));
  const byShort = new Map(spec.options.flatMap((o) => (o.short ? [[o.short, o] as const] : [])));
  const set = (o: OptionSpec, value: string | boolean) => {
    if (o.choices && typeof value === 'string' && !o.choices.includes(value)) {
      throw usageError(`Invalid --${o.name} "${value}": expected ${o.choices.slice(0, -1).join(', ')} or ${o.choices.at(-1)}`, spec);
    }
    if (o.type === 'list') options[o.name] = [...((options[o.name] as string[] | undefined) ?? []), value as string];
    else options[o.name] = value;
  };
  let i = 0;
  const takeValue = (o: OptionSpec, flag: string): string => {
    if (i + 1 >= argv.length) throw usageError(`Flag "${flag}" needs a value`, spec);
    return argv[++i]!;
  };
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const o = byLong.get(name);
      if (!o) throw usageError(`Unknown flag "--${name}" for "kiln ${spec.name}"`, spec);
      if (o.type === 'bool') {
        const v = eq < 0 ? 'true' : arg.slice(eq + 1);
        if (v !== 'true' && v !== 'false') throw usageError(`Flag "--${name}" takes true or false, not "${v}"`, spec);
        set(o, v === 'true');
      } else {
        set(o, eq < 0 ? takeValue(o, arg) : arg.slice(eq + 1));
      }
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const o = byShort.get(arg[j]!);
        if (!o) throw usageError(`Unknown flag "-${arg[j]}" for "kiln ${spec.name}"`, spec);
        if (o.type === 'bool') {
          set(o, true);
          continue;
        }
        const rest = arg.slice(j + 1);
        set(o, rest !== '' ? rest.replace(/^=/, '') : takeValue(o, `-${arg[j]}`));
        break;
      }
      continue;
    }
    positionals.push(arg);
    if (spec.stopAtPositional) {
      positionals.push(...argv.slice(i + 1));
      break;
    }
  }
  if (positionals.length < spec.minPositionals) throw usageError(`"kiln ${spec.name}" needs ${spec.minPositionals === 1 ? 'an argument' : `${spec.minPositionals} arguments`}`, spec);
  if (positionals.length > spec.maxPositionals) throw usageError(`"kiln ${spec.name}" takes at most ${spec.maxPositionals} argument${spec.maxPositionals === 1 ? '' : 's'}, got ${positionals.length}`, spec);
  return { options, positionals };
}

export function formatHelp(spec: CommandSpec): string {
  const lines = [`Usage: ${spec.usage}`, '', spec.description, ''];
  if (spec.options.length > 0) {
    lines.push('Options:');
    const rows = spec.options.map((o) => [`${o.short ? `-${o.short}, ` : '    '}--${o.name}${o.type === 'bool' ? '' : ` ${o.placeholder ?? 'string'}`}`, o.description]);
    const width = Math.max(...rows.map((r) => r[0]!.length));
    for (const [a, b] of rows) lines.push(`  ${a!.padEnd(width)}  ${b}`);
  }
  if (spec.examples && spec.examples.length > 0) {
    lines.push('', 'Examples:');
    for (const e of spec.examples) lines.push(`  ${e}`);
  }
  return lines.join('\n');
}
