import { describe, expect, it } from 'vitest';
import { parseArgs, type CommandSpec } from '../../src/cli/args.js';

const spec: CommandSpec = {
  name: 't',
  usage: 'kiln t',
  description: '',
  minPositionals: 1,
  maxPositionals: Infinity,
  stopAtPositional: true,
  options: [
    { name: 'rm', type: 'bool', description: '' },
    { name: 'env', short: 'e', type: 'list', description: '' },
    { name: 'quiet', short: 'q', type: 'bool', description: '' },
    { name: 'file', short: 'f', type: 'string', description: '' },
  ],
};

describe('the argument parser', () => {
  it('stops at the first positional when asked', () => {
    expect(parseArgs(['--rm', '-e', 'A=1', 'img', 'sh', '-c', 'exit 5'], spec)).toEqual({
      options: { rm: true, env: ['A=1'] },
      positionals: ['img', 'sh', '-c', 'exit 5'],
    });
  });

  it('takes --x=v, -fv, grouped short booleans and --', () => {
    expect(parseArgs(['--file=a', '-qfb', '--', '-x'], spec).options).toEqual({ file: 'b', quiet: true });
    expect(parseArgs(['--', '-x'], spec).positionals).toEqual(['-x']);
  });

  it('refuses unknown flags and missing values with exit code 2', () => {
    expect(() => parseArgs(['--nope', 'x'], spec)).toThrow(/Unknown flag "--nope"/);
    expect(() => parseArgs(['-f'], spec)).toThrow(/needs a value/);
    try {
      parseArgs([], spec);
    } catch (err) {
      expect((err as { exitCode: number }).exitCode).toBe(2);
    }
  });
});
