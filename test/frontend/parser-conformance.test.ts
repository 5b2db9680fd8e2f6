import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { formatParseTree, parseDockerfile } from '../../frontend/parser/index.js';
import { CONFORMANCE_DIR } from './conformance-dir.js';

const PARSER_DIR = path.join(CONFORMANCE_DIR, 'dockerfile-parser');
const caseNames = (kind: string): string[] => readdirSync(path.join(PARSER_DIR, kind)).sort();
const read = (...parts: string[]): string => readFileSync(path.join(PARSER_DIR, ...parts), 'utf8');

describe('dockerfile parser conformance', () => {
  const okCases = caseNames('ok');
  const errorCases = caseNames('error');

  it('finds the whole corpus', () => {
    expect(okCases).toHaveLength(33);
    expect(errorCases).toHaveLength(4);
  });

  it.each(okCases)('ok/%s prints the reference tree', (name) => {
    const parsed = parseDockerfile(read('ok', name, 'Dockerfile'), { file: 'Dockerfile' });
    expect(formatParseTree(parsed)).toBe(read('ok', name, 'result'));
  });

  it.each(errorCases)('error/%s fails', (name) => {
    const run = (): unknown => parseDockerfile(read('error', name, 'Dockerfile'), { file: 'Dockerfile' });
    expect(run).toThrow(KilnError);
    try {
      run();
    } catch (err) {
      expect((err as KilnError).code).toBe('PARSE_ERROR');
      expect((err as KilnError).location).toMatchObject({ file: 'Dockerfile' });
    }
  });

  it('line-numbers: instruction ranges match', () => {
    const expected = JSON.parse(read('line-numbers', 'expected.json')) as { file: [number, number]; instructions: [number, number][] };
    const parsed = parseDockerfile(read('line-numbers', 'Dockerfile'), { file: 'Dockerfile' });
    expect(parsed.instructions.map((node) => [node.startLine, node.endLine])).toEqual(expected.instructions);
    expect([parsed.instructions[0]!.startLine, parsed.instructions.at(-1)!.endLine]).toEqual(expected.file);
  });
});
