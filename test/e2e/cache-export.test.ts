import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, stepCached, stepRan, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type TestRegistry, registryApi, startFaultProxy, startRegistry, tempDocker } from '../helpers/registry.js';
import { startServe } from './serve-helpers.js';

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

  it('downloads an imported layer only when a step needs its files or the image its blob', async () => {
    // The cache goes through a proxy that counts blob downloads; the base comes from the registry itself.
    const proxy = await startFaultProxy(reg.host, () => 'pass');
    try {
      const lctx = join(work.path, 'lazy');
      mkdirSync(lctx);
      writeFileSync(
        join(lctx, 'Dockerfile'),
        [
          `FROM ${base} AS builder`,
          'RUN head -c 300000 /dev/urandom > /big1 && echo lazy-built > /artifact',
          'RUN head -c 200000 /dev/urandom > /big2',
          `FROM ${base}`,
          'ARG V=1',
          'RUN echo "v$V" > /v',
          'COPY --from=builder /artifact /artifact',
          'CMD ["cat", "/artifact", "/v"]',
          '',
        ].join('\n'),
      );
      const ref = `${proxy.host}/cache/lazy:max`;
      const a = emptyStore();
      const first = await build(a, ['-t', 'lazy:1', '--cache-to', `type=registry,ref=${ref},mode=max`], lctx);
      const { manifest } = await configOf('cache/lazy', 'max');
      const cacheLayers = (manifest as unknown as { layers: { digest: string }[] }).layers.map((l) => l.digest);
      const inspect = JSON.parse((await kiln(a, ['inspect', '--format', 'json', 'lazy:1'])).stdout) as { Manifest: { layers: { digest: string }[] } };
      const imageLayers = new Set(inspect.Manifest.layers.map((l) => l.digest));
      const finalLayers = cacheLayers.filter((d) => imageLayers.has(d));
      const builderLayers = cacheLayers.filter((d) => !imageLayers.has(d));
      expect(finalLayers).toHaveLength(2);
      expect(builderLayers).toHaveLength(2);
      const blobGets = (from: number) => proxy.seen.slice(from).flatMap((s) => /^GET \/v2\/cache\/lazy\/blobs\/(sha256:[a-f0-9]{64})$/.exec(s)?.[1] ?? []);

      // Everything cached: the final stage's layers are downloaded for the image, the builder's never.
      let mark = proxy.seen.length;
      const b = emptyStore();
      const second = await build(b, ['-t', 'lazy:1', '--cache-from', ref], lctx);
      expect(stepCached(second.log, 'RUN head -c 300000')).toBe(true);
      expect(stepCached(second.log, 'COPY --from=builder')).toBe(true);
      expect(second.id).toBe(first.id);
      expect(blobGets(mark).sort()).toEqual([manifest.config.digest, ...finalLayers].sort());
      expect((await kiln(b, ['run', '--rm', 'lazy:1'])).stdout).toBe('lazy-built\nv1\n');
      const verifyB = await kiln(b, ['store', 'verify']);
      expect(verifyB.code, verifyB.stdout + verifyB.stderr).toBe(0);

      // A changed final stage runs COPY --from, which mounts the builder's chain: now its layers come, once each.
      mark = proxy.seen.length;
      const c = emptyStore();
      const third = await build(c, ['-t', 'lazy:2', '--build-arg', 'V=2', '--cache-from', ref], lctx);
      expect(stepCached(third.log, 'RUN head -c 200000')).toBe(true);
      expect(stepRan(third.log, 'COPY --from=builder')).toBe(true);
      expect(blobGets(mark).sort()).toEqual([manifest.config.digest, ...builderLayers].sort());
      expect((await kiln(c, ['run', '--rm', 'lazy:2'])).stdout).toBe('lazy-built\nv2\n');
      const verifyC = await kiln(c, ['store', 'verify']);
      expect(verifyC.code, verifyC.stdout + verifyC.stderr).toBe(0);
      expect(mountsUnder(c)).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });

  it('SOURCE_DATE_EPOCH: each layer is written once with clamped times, keyed by the epoch', async () => {
    const epoch = 1700000000;
    const sctx = join(work.path, 'epoch');
    mkdirSync(sctx);
    writeFileSync(join(sctx, 'f.txt'), 'f\n');
    writeFileSync(join(sctx, 'Dockerfile'), `FROM ${base}\nRUN echo x > /x && mkdir /d && touch /d/y\nCOPY f.txt /f.txt\n`);
    const dir = join(work.path, 'epoch-cache');
    const records = async (root: string) => (JSON.parse((await kiln(root, ['info', '--format', 'json'])).stdout) as { store: { records: { layers: number; blobs: number } } }).store.records;
    const a = emptyStore();
    const pulled = await kiln(a, ['pull', '-q', base], { env });
    expect(pulled.code, pulled.stderr).toBe(0);
    const before = await records(a);
    const first = await build(a, ['-t', 'epoch:1', '--build-arg', `SOURCE_DATE_EPOCH=${epoch}`, '--cache-to', `type=local,dest=${dir},mode=max`], sctx);
    // Two steps, two layers, two blobs: none written a second time to clamp it.
    expect((await records(a)).layers - before.layers).toBe(2);
    const oci = join(work.path, 'epoch.tar');
    expect((await kiln(a, ['save', '-o', oci, 'epoch:1'])).code).toBe(0);
    const index = JSON.parse(execFileSync('tar', ['-xOf', oci, 'manifest.json'], { encoding: 'utf8' })) as { Layers: string[] }[];
    const layers = index[0]!.Layers;
    expect(layers).toHaveLength(3);
    for (const layer of layers.slice(1)) {
      const listing = execFileSync('sh', ['-c', `tar -xOf "${oci}" "${layer}" | tar -tv --full-time -f -`], { encoding: 'utf8' });
      const times = [...listing.matchAll(/ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) /g)].map((m) => Date.parse(`${m[1]}Z`) / 1000);
      expect(times.length).toBeGreaterThan(0);
      expect(times.every((t) => t <= epoch)).toBe(true);
    }
    // Without the epoch the steps make other layers: they run again rather than reuse the clamped ones.
    const plain = await build(a, [], sctx);
    expect(stepRan(plain.log, 'RUN echo x')).toBe(true);
    expect(plain.id).not.toBe(first.id);
    // With it, another store reuses the clamped layers from the export and makes the same image.
    const b = emptyStore();
    const second = await build(b, ['--build-arg', `SOURCE_DATE_EPOCH=${epoch}`, '--cache-from', `type=local,src=${dir}`], sctx);
    expect(stepCached(second.log, 'RUN echo x')).toBe(true);
    expect(stepCached(second.log, 'COPY f.txt')).toBe(true);
    expect(second.id).toBe(first.id);
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

  it('refuses an imported layer whose blob does not unpack to the diff id its cache names, and records nothing of it', async () => {
    const dir = join(work.path, 'cache-tampered');
    const a = emptyStore();
    await build(a, ['--cache-to', `type=local,dest=${dir},mode=max`]);
    // The export's last layer blob swapped for another archive; the records still name the genuine diff id.
    const blobs = join(dir, 'blobs', 'sha256');
    const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number }[] };
    const manifestHex = index.manifests[0]!.digest.slice(7);
    const manifest = JSON.parse(readFileSync(join(blobs, manifestHex), 'utf8')) as { layers: { digest: string; size: number }[] };
    const evilDir = join(work.path, 'evil');
    mkdirSync(evilDir, { recursive: true });
    writeFileSync(join(evilDir, 'out'), 'evil\n');
    const evil = execFileSync('sh', ['-c', `tar -C ${evilDir} -c out | gzip -n`]);
    const evilHex = createHash('sha256').update(evil).digest('hex');
    writeFileSync(join(blobs, evilHex), evil);
    for (const l of manifest.layers) Object.assign(l, { digest: `sha256:${evilHex}`, size: evil.length });
    const text = JSON.stringify(manifest);
    const newHex = createHash('sha256').update(text).digest('hex');
    writeFileSync(join(blobs, newHex), text);
    Object.assign(index.manifests[0]!, { digest: `sha256:${newHex}`, size: Buffer.byteLength(text) });
    writeFileSync(join(dir, 'index.json'), JSON.stringify(index));
    const b = emptyStore();
    const out = join(work.path, 'tampered-out');
    const r = await kiln(b, ['build', '--progress', 'plain', '--cache-from', `type=local,src=${dir}`, '-o', `type=local,dest=${out}`, ctx], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/The imported layer blob "sha256:[0-9a-f]{64}" does not unpack to the diff id "sha256:[0-9a-f]{64}" its cache names/);
    expect(existsSync(join(out, 'out')) ? readFileSync(join(out, 'out'), 'utf8') : '').not.toBe('evil\n');
    // Nothing of the import stays: the same build without it runs its steps and gets the real files.
    const again = await build(b, ['-t', 'real:1']);
    expect(stepRan(again.log, 'RUN cat /artifact')).toBe(true);
    expect((await kiln(b, ['run', '--rm', 'real:1'])).stdout).toBe('built\nhello\n');
    expect((await kiln(b, ['store', 'verify'])).code).toBe(0);
  });

  it('on a build service, a hit from one build\'s --cache-from stays that build\'s', async () => {
    const ref = `${reg.host}/cache/served:1`;
    const a = emptyStore();
    await build(a, ['--cache-to', `type=registry,ref=${ref},mode=max`]);
    const b = emptyStore();
    const served = await startServe(b, join(work.path, 'cache-serve.sock'));
    try {
      const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served.socket}`, 'build', '--progress', 'plain', ...args, ctx], { env: { ...env, XDG_CACHE_HOME: join(work.path, 'xdg') } });
      const first = await remote(['--cache-from', `type=registry,ref=${ref}`]);
      expect(first.code, first.stderr).toBe(0);
      expect(stepCached(first.stderr, 'RUN cat /artifact')).toBe(true);
      // Another client, without the import: it runs what the import claimed.
      const second = await remote([]);
      expect(second.code, second.stderr).toBe(0);
      expect(stepRan(second.stderr, 'RUN echo built')).toBe(true);
      expect(stepRan(second.stderr, 'RUN cat /artifact')).toBe(true);
    } finally {
      await served.stop();
    }
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
