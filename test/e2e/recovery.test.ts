import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KILN, kiln, kilnContainers, mountsUnder, REPO, storeWithBase } from '../helpers/kiln.js';

describe('kill -9 of a build mid-RUN', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
  });
  afterAll(async () => {
    await cleanup();
  });

  it('the next command cleans what the dead build left, and the store still works', async () => {
    const ok = await kiln(root, ['build', '-q', '-t', 'test/app:1', join(REPO, 'fixtures/skeleton')]);
    expect(ok.code, ok.stderr).toBe(0);
    const child = spawn(KILN, ['build', '--progress', 'plain', '-f', join(REPO, 'fixtures/skeleton/errors/Dockerfile.sleep'), join(REPO, 'fixtures/skeleton')], {
      env: { ...process.env, KILN_ROOT: root },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
        if (/ started$/m.test(stderr)) resolve();
      });
    });
    const exited = new Promise((r) => child.on('close', r));
    child.kill('SIGKILL');
    await exited;
    // The dead build's overlay and container are still there…
    expect(mountsUnder(root).length).toBeGreaterThan(0);
    expect(kilnContainers(root).length).toBeGreaterThan(0);
    // …until the next command runs recovery.
    const images = await kiln(root, ['images']);
    expect(images.code).toBe(0);
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
    expect(readdirSync(join(root, 'layers')).filter((n) => n.startsWith('.work-'))).toEqual([]);
    expect(readdirSync(join(root, 'run'))).toEqual([]);
    const run = await kiln(root, ['run', '--rm', 'test/app:1']);
    expect(run.stdout).toBe('mode=prod flavor=plain\n');
  });
});
