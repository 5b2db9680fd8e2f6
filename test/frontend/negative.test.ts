import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { compileDockerfile } from '../../frontend/dockerfile/compile.js';
import { fakeResolver } from './fake-resolver.js';

const DIR = join(import.meta.dirname, 'negative');

interface Expected {
  code: string;
  message: string;
  line: number;
  column: number;
  hint?: string;
}

const cases = JSON.parse(readFileSync(join(DIR, 'cases.json'), 'utf8')) as Record<string, Expected>;

describe('Dockerfiles the frontend rejects, with the exact message and location', () => {
  it('has an expectation for every Dockerfile in the folder', () => {
    expect(Object.keys(cases).sort()).toEqual(readdirSync(DIR).filter((f) => f.endsWith('.Dockerfile')).sort());
  });

  for (const [file, expected] of Object.entries(cases)) {
    it(file, async () => {
      const text = readFileSync(join(DIR, file), 'utf8');
      let error: unknown;
      try {
        await compileDockerfile({
          dockerfile: text,
          file,
          buildArgs: {},
          context: { name: 'context', source: '/nonexistent', exclude: [] },
          platform: { os: 'linux', architecture: 'amd64' },
          resolver: fakeResolver(),
        });
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(KilnError);
      const err = error as KilnError;
      expect({ code: err.code, message: err.message, line: err.location?.line, column: err.location?.column, ...(err.hint ? { hint: err.hint } : {}) }).toEqual(expected);
      expect(err.location?.file).toBe(file);
      expect(err.location?.text).toBe(text.split('\n')[expected.line - 1]);
    });
  }
});
