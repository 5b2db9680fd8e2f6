import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, stepCached, stepRan, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type TestRegistry, registryApi, startRegistry, tempDocker } from '../helpers/registry.js';

/**
 * Cache export and import between stores that share nothing but a registry (or a directory):
 * the second store must reuse every step it can, pulling layers instead of running steps.
 */
describe('cache export and import', () => {
  let reg: TestRegistry;
  let work: ReturnType<typeof tempDir>;
  let docker: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;
  let ctx: string;
  let base: string;
  const stores: { cleanup: () => Promise<void> }[] = [];

  const emptyStore = () => {
    const t = tempDir('kiln-store-');
    stores.push(t);
    return t.path;
  };

  /** Builds `ctx` in `root` with plain progress; returns the log and the image ID. */
  const build = async (root: string, args: string[], context = ctx) => {
    const iid = join(work.path, `iid-${Math.random().toString(36).slice(2)}`);
    const r = await kiln(root, ['build', '--progress', 'plain', '--iidfile', iid, ...args, context], { env });
    expect(r.code, r.stderr).toBe(0);
    return { log: r.stderr, id: readFileSync(iid, 'utf8').trim() };
  };

  const configOf = async (repo: string, tag: string) => {
    const manifest = JSON.parse((await registryApi(reg.host, `/v2/${repo}/manifests/${tag}`)).body) as { config: { mediaType: string; digest: string }; layers: { annotations?: Record<string, string> }[] };
    const config = JSON.parse((await registryApi(reg.host, `/v2/${repo}/blobs/${manifest.config.digest}`)).body) as { records: { key: string }[] };
    return { manifest, config };
  };

  beforeAll(async () => {
    work = tempDir();
    docker = tempDocker();
    env = { DOCKER_CONFIG: docker.dir, KILN_REGISTRY_RETRY_MS: '10' };
    let seed;
    [reg, seed] = await Promise.all([startRegistry(), storeWithBase()]);
    stores.push(seed);
    // Both sides pull the base from the registry, so its manifest digest (part of every key) is the same.
    base = `${reg.host}/cache/base:1`;
    expect((await kiln(seed.root, ['tag', 'test/base:1', base])).code).toBe(0);
    const pushed = await kiln(seed.root, ['push', base], { env });
    expect(pushed.code, pushed.stderr).toBe(0);
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'file.txt'), 'hello\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        `FROM ${base} AS builder`,
        'RUN echo built > /artifact && head -c 1000 /dev/urandom > /noise',
        `FROM ${base}`,
        'COPY --from=builder /artifact /artifact',
        'COPY file.txt /file.txt',
        'RUN cat /artifact /file.txt > /out && head -c 2000 /dev/urandom > /noise2',
        'CMD ["cat", "/out"]',
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    await reg?.stop();
    for (const s of stores) await s.cleanup();
    await work?.cleanup();
    docker?.cleanup();
  });

  it('a registry export lets an empty store reuse every step (mode=max) and only the final chain (mode=min)', async () => {
    const a = emptyStore();
    const first = await build(a, ['-t', 'app:1', '--cache-to', `type=registry,ref=${reg.host}/cache/app:max,mode=max`, '--cache-to', `type=registry,ref=${reg.host}/cache/app:min,mode=min`]);
    expect(stepRan(first.log, 'RUN echo built')).toBe(true);
    expect(first.log).toMatch(/exporting cache to registry/);

    const max = await configOf('cache/app', 'max');
    const min = await configOf('cache/app', 'min');
    expect(max.manifest.config.mediaType).toBe('application/vnd.kiln.cache.config.v1+json');
    // min leaves out the builder stage's step, which the final image has no layer of.
    expect(min.config.records.length).toBeLessThan(max.config.records.length);

    const b = emptyStore();
    const second = await build(b, ['-t', 'app:1', '--cache-from', `type=registry,ref=${reg.host}/cache/app:max`]);
    expect(stepCached(second.log, 'RUN echo built')).toBe(true);
    expect(stepCached(second.log, 'RUN cat /artifact')).toBe(true);
    expect(stepCached(second.log, 'COPY file.txt')).toBe(true);
    expect(second.id).toBe(first.id);
    const run = await kiln(b, ['run', '--rm', 'app:1']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe('built\nhello\n');

    const c = emptyStore();
    const third = await build(c, ['--cache-from', `type=registry,ref=${reg.host}/cache/app:min`]);
    expect(stepRan(third.log, 'RUN echo built')).toBe(true);
    expect(stepCached(third.log, 'RUN cat /artifact')).toBe(true);
    expect(third.id).toBe(first.id);
  });

  it('round-trips through a local directory', async () => {
    const dir = join(work.path, 'cache-dir');
    const a = emptyStore();
    const first = await build(a, ['--cache-to', `type=local,dest=${dir},mode=max`]);
    expect(existsSync(join(dir, 'index.json'))).toBe(true);
    expect(existsSync(join(dir, 'oci-layout'))).toBe(true);
    const b = emptyStore();
    const second = await build(b, ['-t', 'local:1', '--cache-from', `type=local,src=${dir}`]);
    expect(stepCached(second.log, 'RUN echo built')).toBe(true);
    expect(stepCached(second.log, 'RUN cat /artifact')).toBe(true);
    expect(second.id).toBe(first.id);
    const run = await kiln(b, ['run', '--rm', 'local:1']);
    expect(run.stdout).toBe('built\nhello\n');
  });

  it('carries inline cache in a pushed image', async () => {
    const a = emptyStore();
    const ref = `${reg.host}/cache/inline:1`;
    const first = await build(a, ['-t', ref, '--push', '--cache-to', 'type=inline']);
    const b = emptyStore();
    const second = await build(b, ['--cache-to', 'type=inline', '--cache-from', ref]);
    expect(stepCached(second.log, 'RUN cat /artifact')).toBe(true);
    expect(second.id).toBe(first.id);
  });

  it('warns and builds when the cache to import does not exist', async () => {
    const a = emptyStore();
    const r = await kiln(a, ['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${reg.host}/cache/missing:1`, '--cache-from', `type=local,src=${join(work.path, 'nowhere')}`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`Cannot import the cache from "${reg.host}/cache/missing:1"`));
    expect(r.stderr).toMatch(/Cannot import the cache from ".*nowhere": No cache export/);
    expect(stepRan(r.stderr, 'RUN echo built')).toBe(true);
  });

  it('refuses a malformed spec as a usage error', async () => {
    const r = await kiln(emptyStore(), ['build', '--cache-to', 'type=registry', ctx], { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Invalid --cache-to "type=registry": type=registry needs ref=/);
  });

  it('exports RUN cache mounts with cache-mounts=true and seeds them in another store', async () => {
    const mctx = join(work.path, 'mounts');
    mkdirSync(mctx);
    writeFileSync(join(mctx, 'Dockerfile'), `FROM ${base}\nRUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs echo downloaded > /var/cache/pkgs/pkg.txt\n`);
    const ref = `${reg.host}/cache/mounts:1`;
    const a = emptyStore();
    await build(a, ['--cache-to', `type=registry,ref=${ref},cache-mounts=true`], mctx);
    const { manifest } = await configOf('cache/mounts', '1');
    expect(manifest.layers.some((l) => l.annotations?.['dev.kiln.cache.mount.id'] === 'pkgs')).toBe(true);

    const uctx = join(work.path, 'mounts-use');
    mkdirSync(uctx);
    writeFileSync(join(uctx, 'Dockerfile'), `FROM ${base}\nRUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs cat /var/cache/pkgs/pkg.txt > /seen\nCMD ["cat", "/seen"]\n`);
    const b = emptyStore();
    const used = await build(b, ['-t', 'mounts:1', '--cache-from', ref], uctx);
    expect(used.log).toMatch(/Seeded 1 cache mount/);
    const run = await kiln(b, ['run', '--rm', 'mounts:1']);
    expect(run.stdout).toBe('downloaded\n');
  });
});
