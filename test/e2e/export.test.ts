import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });

describe('archive outputs, save and load', () => {
  let base: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let ctx: string;
  let id: string;
  const out = (name: string) => join(work.path, name);

  beforeAll(async () => {
    base = await storeWithBase();
    work = tempDir();
    ctx = out('ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo exported > /e && chown 1001:1001 /e\n');
    // Several outputs at once, each judged by another tool below.
    const r = await kiln(base.root, [
      'build', '-q', '-t', 'acc/exp:1',
      '-o', `type=docker,dest=${out('d.tar')}`,
      '-o', `type=oci,dest=${out('layout')},tar=false`,
      '-o', `type=oci,dest=${out('z.tar')},compression=zstd,compression-level=9`,
      '-o', `type=oci,dest=${out('u.tar')},compression=uncompressed`,
      '-o', `type=tar,dest=${out('rootfs.tar')}`,
      ctx,
    ]);
    expect(r.code, r.stderr).toBe(0);
    id = r.stdout.trim();
  });

  afterAll(async () => {
    await work?.cleanup();
    await base?.cleanup();
  });

  it('type=docker is a docker archive skopeo reads and converts', () => {
    const info = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${out('d.tar')}:acc/exp:1`])) as { Layers: string[] };
    expect(info.Layers).toHaveLength(2);
    const manifest = JSON.parse(sh('tar', ['-xOf', out('d.tar'), 'manifest.json'])) as { Config: string; RepoTags: string[] }[];
    expect(manifest[0]!.Config).toBe(`blobs/sha256/${id.slice(7)}`);
    expect(manifest[0]!.RepoTags).toEqual(['acc/exp:1']);
    sh('skopeo', ['copy', `docker-archive:${out('d.tar')}`, `oci:${out('fromdocker')}:x`]);
    sh('umoci', ['unpack', '--image', `${out('fromdocker')}:x`, out('bundle1')]);
    expect(readFileSync(join(out('bundle1'), 'rootfs/e'), 'utf8')).toBe('exported\n');
  });

  it('type=oci,tar=false writes a layout directory umoci unpacks with owners', () => {
    const index = JSON.parse(readFileSync(join(out('layout'), 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    expect(index.manifests[0]!.annotations['org.opencontainers.image.ref.name']).toBe('1');
    sh('umoci', ['unpack', '--image', `${out('layout')}:1`, out('bundle2')]);
    expect(readFileSync(join(out('bundle2'), 'rootfs/e'), 'utf8')).toBe('exported\n');
    expect(sh('stat', ['-c', '%u:%g', join(out('bundle2'), 'rootfs/e')]).trim()).toBe('1001:1001');
  });

  it('compression=zstd and uncompressed give the right media types and digests', () => {
    const z = JSON.parse(sh('skopeo', ['inspect', '--raw', `oci-archive:${out('z.tar')}`])) as { layers: { mediaType: string }[] };
    expect(z.layers.every((l) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd')).toBe(true);
    const u = JSON.parse(sh('skopeo', ['inspect', '--raw', `oci-archive:${out('u.tar')}`])) as { layers: { mediaType: string; digest: string }[]; config: { digest: string } };
    expect(u.config.digest).toBe(id);
    const config = JSON.parse(sh('skopeo', ['inspect', '--config', `oci-archive:${out('u.tar')}`])) as { rootfs: { diff_ids: string[] } };
    // An uncompressed layer's digest is its diff id.
    expect(u.layers.map((l) => l.digest)).toEqual(config.rootfs.diff_ids);
    expect(u.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
  });

  it('type=tar is the root filesystem', () => {
    expect(sh('tar', ['-xOf', out('rootfs.tar'), './e'])).toBe('exported\n');
    expect(sh('tar', ['--numeric-owner', '-tvf', out('rootfs.tar'), './e'])).toMatch(/1001\/1001/);
  });

  it('save and load round-trip images, keeping their IDs', async () => {
    const save = await kiln(base.root, ['save', 'acc/exp:1', 'test/base:1', '-o', out('s.tar')]);
    expect(save.code, save.stderr).toBe(0);
    const info = JSON.parse(sh('skopeo', ['inspect', `docker-archive:${out('s.tar')}:acc/exp:1`])) as { Layers: string[] };
    expect(info.Layers).toHaveLength(2);
    const empty = tempDir('kiln-store-');
    try {
      const load = await kiln(empty.path, ['load', '-i', out('s.tar')]);
      expect(load.code, load.stderr).toBe(0);
      expect(load.stdout).toBe('Loaded image: acc/exp:1\nLoaded image: test/base:1\n');
      const ids = (await kiln(empty.path, ['images', '-q', '--no-trunc'])).stdout;
      expect(ids).toContain(id);
      const run = await kiln(empty.path, ['run', '--rm', 'acc/exp:1', 'cat', '/e']);
      expect(run.stdout).toBe('exported\n');
    } finally {
      await empty.cleanup();
    }
  });

  it('loads an OCI archive with zstd layers, keeping its manifest, and runs it', async () => {
    const empty = tempDir('kiln-store-');
    try {
      const load = await kiln(empty.path, ['load', '-i', out('z.tar')]);
      expect(load.code, load.stderr).toBe(0);
      expect(load.stdout).toBe('Loaded image: acc/exp:1\n');
      const run = await kiln(empty.path, ['run', '--rm', 'acc/exp:1', 'cat', '/e']);
      expect(run.stdout).toBe('exported\n');
      // A docker archive without index.json (the classic `docker save` layout) loads too.
      const classic = out('classic');
      mkdirSync(classic);
      sh('tar', ['-xf', out('d.tar'), '-C', classic]);
      sh('rm', [join(classic, 'index.json'), join(classic, 'oci-layout')]);
      sh('tar', ['-cf', out('classic.tar'), '-C', classic, '.']);
      const again = await kiln(empty.path, ['load', '-i', out('classic.tar')]);
      expect(again.code, again.stderr).toBe(0);
      expect((await kiln(empty.path, ['images', '-q', '--no-trunc'])).stdout.trim()).toBe(id);
    } finally {
      await empty.cleanup();
    }
  });

  it('SOURCE_DATE_EPOCH gives identical manifests from two empty stores', async () => {
    const c = out('repro');
    mkdirSync(c);
    writeFileSync(join(c, 'Dockerfile'), 'FROM test/base:1\nRUN echo same > /same && mkdir -p /d && touch /d/x\nCOPY f /f\n');
    writeFileSync(join(c, 'f'), 'file\n');
    const digests: string[] = [];
    for (const i of [1, 2]) {
      const store = await storeWithBase();
      try {
        const r = await kiln(store.root, ['build', '-q', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', '-o', `type=oci,dest=${out(`r${i}.tar`)}`, c]);
        expect(r.code, r.stderr).toBe(0);
        digests.push(JSON.parse(sh('skopeo', ['inspect', `oci-archive:${out(`r${i}.tar`)}`])).Digest as string);
      } finally {
        await store.cleanup();
      }
      // Files touched between builds: times never reach the image.
      await new Promise((r) => setTimeout(r, 1100));
      writeFileSync(join(c, 'f'), 'file\n');
    }
    expect(digests[0]).toBe(digests[1]);
    const config = JSON.parse(sh('skopeo', ['inspect', '--config', `oci-archive:${out('r1.tar')}`])) as { created: string; history: { created: string }[] };
    expect(Date.parse(config.created)).toBe(1700000000_000);
    expect(config.history.every((h) => Date.parse(h.created) <= 1700000000_000)).toBe(true);
  });

  it('rejects bad output options as usage errors', async () => {
    const r = await kiln(base.root, ['build', '-o', 'type=oci,dest=x.tar,compression=lz4', ctx]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/compression must be gzip, zstd or uncompressed/);
    const z = await kiln(base.root, ['build', '-o', 'type=docker,dest=x.tar,compression=zstd,oci-mediatypes=false', ctx]);
    expect(z.code).toBe(2);
  });
});
