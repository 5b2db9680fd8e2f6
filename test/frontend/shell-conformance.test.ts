import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { expandWord, expandWords } from '../../frontend/shell/index.js';
import { CONFORMANCE_DIR } from './conformance-dir.js';

const SHELL_DIR = path.join(CONFORMANCE_DIR, 'shell-expansion');

interface EnvVarCase {
  line: number;
  input: string;
  expected: string;
}

function envVarCases(): EnvVarCase[] {
  const cases: EnvVarCase[] = [];
  readFileSync(path.join(SHELL_DIR, 'envVarTest'), 'utf8')
    .split('\n')
    .forEach((text, i) => {
      if (text.startsWith('#') || text.trim() === '') return;
      const fields = text.split('|');
      if (fields.length !== 3) throw new Error(`envVarTest line ${i + 1} does not have 3 fields`);
      const [platform, input, expected] = fields.map((f) => f.trim()) as [string, string, string];
      // Windows lines exist because names there ignore case; these tests run on Linux.
      if (platform === 'W') return;
      cases.push({ line: i + 1, input, expected });
    });
  return cases;
}

interface WordsCase {
  line: number;
  input: string;
  expected: string[];
  env: Map<string, string>;
}

function wordsCases(): WordsCase[] {
  const cases: WordsCase[] = [];
  const env = new Map<string, string>();
  readFileSync(path.join(SHELL_DIR, 'wordsTest'), 'utf8')
    .split('\n')
    .forEach((text, i) => {
      if (text.startsWith('#') || text === '') return;
      if (text.startsWith('ENV ')) {
        const assignment = text.slice(3).replace(/^ +/, '');
        const eq = assignment.indexOf('=');
        env.set(assignment.slice(0, eq), assignment.slice(eq + 1));
        return;
      }
      const fields = text.split('|');
      if (fields.length !== 2) throw new Error(`wordsTest line ${i + 1} does not have exactly one "|"`);
      cases.push({
        line: i + 1,
        input: fields[0]!.trim(),
        expected: fields[1]!.replace(/^ +/, '').split(','),
        env: new Map(env),
      });
    });
  return cases;
}

const ENV_VAR_TEST_ENV = new Map([
  ['PWD', '/home'],
  ['SHELL', 'bash'],
  ['KOREAN', '한국어'],
  ['NULL', ''],
]);

describe('shell expansion conformance', () => {
  const envCases = envVarCases();
  const wordCases = wordsCases();

  it('finds the whole corpus', () => {
    expect(envCases).toHaveLength(228);
    expect(wordCases).toHaveLength(24);
  });

  it.each(envCases)('envVarTest line $line: $input', ({ input, expected }) => {
    const lookup = (name: string): string | undefined => ENV_VAR_TEST_ENV.get(name);
    if (expected === 'error') {
      expect(() => expandWord(input, lookup)).toThrow(KilnError);
    } else {
      expect(expandWord(input, lookup)).toBe(expected);
    }
  });

  it.each(wordCases)('wordsTest line $line: $input', ({ input, expected, env }) => {
    let words: string[];
    try {
      words = expandWords(input, (name) => env.get(name));
    } catch (err) {
      if (!(err instanceof KilnError) || err.code !== 'EXPANSION_ERROR') throw err;
      words = ['error'];
    }
    expect(words).toEqual(expected);
  });
});
