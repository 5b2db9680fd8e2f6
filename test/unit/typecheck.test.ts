import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from '../helpers/kiln.js';

/** The whole tree typechecks, tests included (`npm run typecheck`), as part of the suite CI runs. */
describe('types', () => {
  it('tsc -p tsconfig.test.json finds no error in the code or the tests', () => {
    const r = spawnSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'tsconfig.test.json')], { cwd: REPO, encoding: 'utf8', timeout: 240_000 });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 300_000);
});
