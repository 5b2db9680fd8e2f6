import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, REPO, storeWithBase, tempDir } from '../helpers/kiln.js';

describe('layers a build makes', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let out: ReturnType<typeof tempDir>;
  let config: { rootfs: { diff_ids: string[] }; history: { created_by: string; empty_layer?: boolean }[] };
  let log: string;

  beforeAll(async () => {
    ({ root, cleanup } = await storeWithBase());
    out = tempDir();
    const tar = join(out.path, 'img.tar');
    const r = await kiln(root, ['build', '--progress', 'plain', '-o', `type=oci,dest=${tar}`, join(REPO, 'fixtures/layers')]);
    log = r.stderr;
    expect(r.code, r.stderr).toBe(0);
    config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${tar}`], { encoding: 'utf8' }));
  });
  afterAll(async () => {
    await out.cleanup();
    await cleanup();
  });

  it('a step that changes nothing adds no layer: mount points made for the run are not changes', () => {
    const runTrue = config.history.find((h) => h.created_by.startsWith('RUN /bin/sh -c true'));
    expect(runTrue?.empty_layer).toBe(true);
    const runCat = config.history.find((h) => h.created_by.startsWith('RUN /bin/sh -c cat /f'));
    expect(runCat?.empty_layer).toBe(true);
  });

  it('the same layer twice in a chain mounts and runs (overlayfs refuses a repeated lowerdir)', () => {
    // base + echo + rm + echo again: the two echo layers are identical.
    expect(config.rootfs.diff_ids).toHaveLength(4);
    expect(config.rootfs.diff_ids[1]).toBe(config.rootfs.diff_ids[3]);
    expect(log).toMatch(/^#\d+ \d+\.\d+ same$/m);
  });
});
