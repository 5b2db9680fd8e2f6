import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type FaultProxy, type TestRegistry, registryApi, registryPut, startFaultProxy, startRegistry, tempDocker } from '../helpers/registry.js';

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

describe('push and pull against distribution 2.8', () => {
  let reg: TestRegistry;
  let base: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let docker: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;
  let ctx: string;
  let imageId: string;

  beforeAll(async () => {
    work = tempDir();
    docker = tempDocker();
    env = { DOCKER_CONFIG: docker.dir, KILN_REGISTRY_RETRY_MS: '10' };
    [reg, base] = await Promise.all([startRegistry(), storeWithBase()]);
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo hello > /hello && head -c 300000 /dev/urandom > /big\n');
    const r = await kiln(base.root, ['build', '-q', '-t', `${reg.host}/acc/app:1`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    imageId = r.stdout.trim();
  });

  afterAll(async () => {
    await reg?.stop();
    await base?.cleanup();
    await work?.cleanup();
    docker?.cleanup();
  });

  it('pushes every blob, then the manifest, and a re-run uploads nothing', async () => {
    const first = await kiln(base.root, ['push', `${reg.host}/acc/app:1`], { env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/: Pushed$/m);
    const digest = /digest: (sha256:[a-f0-9]{64})/.exec(first.stdout)![1]!;
    const head = await registryApi(reg.host, '/v2/acc/app/manifests/1', { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['docker-content-digest']).toBe(digest);
    expect(head.headers['content-type']).toBe('application/vnd.oci.image.manifest.v1+json');
    const again = await kiln(base.root, ['push', `${reg.host}/acc/app:1`], { env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/Pushed/);
    expect(again.stdout).toMatch(/Layer already exists/);
  });

  it('mounts blobs from another repository of the same registry', async () => {
    expect((await kiln(base.root, ['tag', `${reg.host}/acc/app:1`, `${reg.host}/other/app:2`])).code).toBe(0);
    const r = await kiln(base.root, ['push', `${reg.host}/other/app:2`], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Mounted from another repository/);
    expect(r.stdout).not.toMatch(/: Pushed$/m);
    const tags = JSON.parse((await registryApi(reg.host, '/v2/other/app/tags/list')).body) as { tags: string[] };
    expect(tags.tags).toEqual(['2']);
  });

  it('uploads large blobs in chunks', async () => {
    expect((await kiln(base.root, ['tag', `${reg.host}/acc/app:1`, `${reg.host}/chunked/app:1`])).code).toBe(0);
    // A fresh repository with no known source: every blob is uploaded, the 300 kB layer in 64 kB PATCHes.
    const r = await kiln(base.root, ['push', `${reg.host}/chunked/app:1`], { env: { ...env, KILN_PUSH_CHUNK_SIZE: '65536' } });
    expect(r.code, r.stderr).toBe(0);
    const skopeo = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.host}/chunked/app:1`], { encoding: 'utf8' })) as { Layers: string[] };
    expect(skopeo.Layers).toHaveLength(2);
  });

  it('pulls into an empty store, verifies, and runs the image', async () => {
    const empty = tempDir('kiln-store-');
    try {
      const r = await kiln(empty.path, ['pull', `${reg.host}/acc/app:1`], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/Pull complete/);
      const images = await kiln(empty.path, ['images', '--no-trunc', '-q']);
      expect(images.stdout.trim()).toBe(imageId);
      const run = await kiln(empty.path, ['run', '--rm', `${reg.host}/acc/app:1`, 'cat', '/hello']);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe('hello\n');
      const again = await kiln(empty.path, ['pull', `${reg.host}/acc/app:1`], { env });
      expect(again.stdout).toMatch(/Image is up to date/);
      expect(again.stdout).not.toMatch(/Pull complete/);
    } finally {
      await empty.cleanup();
    }
  });

  it('builds FROM a registry image on an empty store, and pushes with --push', async () => {
    const empty = tempDir('kiln-store-');
    try {
      const c2 = join(work.path, 'ctx2');
      mkdirSync(c2);
      writeFileSync(join(c2, 'Dockerfile'), `FROM ${reg.host}/acc/app:1\nRUN cat /hello > /again\n`);
      const r = await kiln(empty.path, ['build', '--push', '-t', `${reg.host}/acc/derived:1`, c2], { env });
      expect(r.code, r.stderr).toBe(0);
      const tags = JSON.parse((await registryApi(reg.host, '/v2/acc/derived/tags/list')).body) as { tags: string[] };
      expect(tags.tags).toEqual(['1']);
      const listed = await kiln(empty.path, ['images']);
      expect(listed.stdout).toMatch(new RegExp(`${reg.host.replace('.', '\\.')}/acc/derived\\s+1`));
      const run = await kiln(empty.path, ['run', '--rm', `${reg.host}/acc/derived:1`, 'cat', '/again']);
      expect(run.stdout).toBe('hello\n');
      expect(mountsUnder(empty.path)).toEqual([]);
    } finally {
      await empty.cleanup();
    }
  });

  it('shows the bytes of a base image pulled during a build as transfer events', async () => {
    const empty = tempDir('kiln-store-');
    try {
      const c3 = join(work.path, 'ctx3');
      mkdirSync(c3);
      writeFileSync(join(c3, 'Dockerfile'), `FROM ${reg.host}/acc/app:1\nRUN cat /hello > /third\n`);
      const r = await kiln(empty.path, ['build', '--progress', 'rawjson', c3], { env });
      expect(r.code, r.stderr).toBe(0);
      const events = r.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; id?: number; name?: string; current?: number; total?: number; done?: boolean });
      const start = events.find((e) => e.type === 'vertex.start' && e.name === `pulling ${reg.host}/acc/app:1`);
      expect(start).toBeDefined();
      const manifest = JSON.parse((await registryApi(reg.host, '/v2/acc/app/manifests/1')).body) as { layers: { digest: string; size: number }[] };
      const transfers = events.filter((e) => e.type === 'transfer');
      expect(transfers.length).toBeGreaterThanOrEqual(manifest.layers.length * 2);
      expect(transfers.every((t) => t.id === start!.id)).toBe(true);
      const finished = transfers.filter((t) => t.done).map((t) => ({ name: t.name, current: t.current, total: t.total }));
      expect(finished.sort((x, y) => x.name!.localeCompare(y.name!))).toEqual(manifest.layers.map((l) => ({ name: l.digest, current: l.size, total: l.size })).sort((x, y) => x.name.localeCompare(y.name)));
      const done = events.findIndex((e) => e.type === 'vertex.done' && e.id === start!.id);
      expect(done).toBeGreaterThan(events.lastIndexOf(transfers.at(-1)!));
      expect(events.at(-1)?.type).toBe('result');
    } finally {
      await empty.cleanup();
    }
  });

  it('pushes zstd layers with -o type=registry and pulls them back', async () => {
    const r = await kiln(base.root, ['build', '-q', '-o', `type=registry,name=${reg.host}/acc/zstd:1,compression=zstd`, ctx], { env });
    expect(r.code, r.stderr).toBe(0);
    const raw = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/acc/zstd:1`], { encoding: 'utf8' })) as { layers: { mediaType: string }[] };
    expect(raw.layers.map((l) => l.mediaType)).toEqual(['application/vnd.oci.image.layer.v1.tar+zstd', 'application/vnd.oci.image.layer.v1.tar+zstd']);
    const empty = tempDir('kiln-store-');
    try {
      expect((await kiln(empty.path, ['pull', '-q', `${reg.host}/acc/zstd:1`], { env })).code).toBe(0);
      const run = await kiln(empty.path, ['run', '--rm', `${reg.host}/acc/zstd:1`, 'cat', '/hello']);
      expect(run.stdout).toBe('hello\n');
    } finally {
      await empty.cleanup();
    }
  });

  it('chooses the platform from an index as docker does', async () => {
    // Manifests of an index must be in its repository: push both images there first.
    expect((await kiln(base.root, ['tag', `${reg.host}/acc/app:1`, `${reg.host}/acc/multi:x`])).code).toBe(0);
    expect((await kiln(base.root, ['push', '-q', `${reg.host}/acc/multi:x`], { env })).code).toBe(0);
    expect((await kiln(base.root, ['build', '-q', '-o', `type=registry,name=${reg.host}/acc/multi:z,compression=zstd`, ctx], { env })).code).toBe(0);
    const amd = await registryApi(reg.host, '/v2/acc/multi/manifests/x');
    const zstd = await registryApi(reg.host, '/v2/acc/multi/manifests/z');
    const desc = (r: typeof amd, platform: object) => ({ mediaType: r.headers['content-type'], digest: r.headers['docker-content-digest'], size: Buffer.byteLength(r.body), platform });
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [desc(zstd, { os: 'linux', architecture: 'arm64', variant: 'v8' }), desc(amd, { os: 'linux', architecture: 'amd64' }), desc(zstd, { os: 'unknown', architecture: 'unknown' })],
    };
    expect(await registryPut(reg.host, '/v2/acc/multi/manifests/multi', index.mediaType, JSON.stringify(index))).toBe(201);
    const empty = tempDir('kiln-store-');
    try {
      const amd64 = await kiln(empty.path, ['pull', '-q', `${reg.host}/acc/multi:multi`], { env });
      expect(amd64.code, amd64.stderr).toBe(0);
      expect((await kiln(empty.path, ['images', '-q', '--no-trunc'])).stdout.trim()).toBe(imageId);
      const arm = await kiln(empty.path, ['pull', '--platform', 'linux/arm64', `${reg.host}/acc/multi:multi`], { env });
      expect(arm.code, arm.stderr).toBe(0);
      const none = await kiln(empty.path, ['pull', '--platform', 'linux/s390x', `${reg.host}/acc/multi:multi`], { env });
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/No manifest for linux\/s390x/);
      expect(none.stderr).toMatch(/linux\/arm64\/v8, linux\/amd64/);
    } finally {
      await empty.cleanup();
    }
  });

  it('keeps the registry error code when an image is missing', async () => {
    const r = await kiln(base.root, ['pull', `${reg.host}/acc/nothing:1`], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/MANIFEST_UNKNOWN|NAME_UNKNOWN/);
    noStack(r.stderr);
    const bad = await kiln(base.root, ['pull', 'UPPER/case']);
    expect(bad.code).toBe(2);
  });
});

describe('basic auth and the docker config', () => {
  let reg: TestRegistry;
  let base: { root: string; cleanup: () => Promise<void> };
  let docker: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;

  beforeAll(async () => {
    docker = tempDocker();
    env = { DOCKER_CONFIG: docker.dir, KILN_REGISTRY_RETRY_MS: '10' };
    [reg, base] = await Promise.all([startRegistry({ htpasswd: { user: 'alice', password: 's3cret' } }), storeWithBase()]);
  });

  afterAll(async () => {
    await reg?.stop();
    await base?.cleanup();
    docker?.cleanup();
  });

  it('refuses anonymous pushes with the registry code and a hint', async () => {
    expect((await kiln(base.root, ['tag', 'test/base:1', `${reg.host}/priv/base:1`])).code).toBe(0);
    const r = await kiln(base.root, ['push', `${reg.host}/priv/base:1`], { env });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/UNAUTHORIZED/);
    expect(r.stderr).toMatch(/hint: Log in with "kiln login REGISTRY"/);
    noStack(r.stderr);
  });

  it('login checks the password, writes the docker config, and push and pull use it', async () => {
    const wrong = await kiln(base.root, ['login', reg.host, '-u', 'alice', '--password-stdin'], { env, input: 'nope\n' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/refused the credentials of "alice"/);
    expect(existsSync(join(docker.dir, 'config.json'))).toBe(false);
    const ok = await kiln(base.root, ['login', reg.host, '-u', 'alice', '--password-stdin'], { env, input: 's3cret\n' });
    expect(ok.code, ok.stderr).toBe(0);
    const config = JSON.parse(readFileSync(join(docker.dir, 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
    expect(Buffer.from(config.auths[reg.host]!.auth, 'base64').toString()).toBe('alice:s3cret');
    const push = await kiln(base.root, ['push', `${reg.host}/priv/base:1`], { env });
    expect(push.code, push.stderr).toBe(0);
    const api = await registryApi(reg.host, '/v2/priv/base/tags/list', { auth: 'alice:s3cret' });
    expect(JSON.parse(api.body)).toEqual({ name: 'priv/base', tags: ['1'] });
    const empty = tempDir('kiln-store-');
    try {
      const pull = await kiln(empty.path, ['pull', `${reg.host}/priv/base:1`], { env });
      expect(pull.code, pull.stderr).toBe(0);
    } finally {
      await empty.cleanup();
    }
    const out = await kiln(base.root, ['logout', reg.host], { env });
    expect(out.stdout).toMatch(/Removing login credentials/);
    const after = JSON.parse(readFileSync(join(docker.dir, 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    expect(after.auths[reg.host]).toBeUndefined();
  });

  it('reads credentials written by docker under a URL key', async () => {
    const dir = tempDocker();
    try {
      writeFileSync(join(dir.dir, 'config.json'), JSON.stringify({ auths: { [`http://${reg.host}/v1/`]: { auth: Buffer.from('alice:s3cret').toString('base64') } } }));
      const r = await kiln(base.root, ['push', '-q', `${reg.host}/priv/base:1`], { env: { ...env, DOCKER_CONFIG: dir.dir } });
      expect(r.code, r.stderr).toBe(0);
    } finally {
      dir.cleanup();
    }
  });
});

describe('faults between Kiln and the registry', () => {
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let base: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let rule: (method: string, path: string) => 500 | 429 | 'reset' | 'pass' = () => 'pass';
  const env = { KILN_REGISTRY_RETRY_MS: '5' };

  beforeAll(async () => {
    work = tempDir();
    [reg, base] = await Promise.all([startRegistry(), storeWithBase()]);
    proxy = await startFaultProxy(reg.host, (m, p) => rule(m, p));
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo faulty > /f\n');
    const r = await kiln(base.root, ['build', '-q', '-t', `${proxy.host}/acc/f:1`, '-t', `${proxy.host}/acc/f:2`, ctx]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    await base?.cleanup();
    await work?.cleanup();
  });

  /** Fails the first `n` requests that match, then lets them through. */
  function failing(n: number, fault: 500 | 429 | 'reset', match: (m: string, p: string) => boolean) {
    let left = n;
    return (m: string, p: string) => (match(m, p) && left-- > 0 ? fault : 'pass');
  }

  it('push completes through 500s, 429s and resets', async () => {
    const uploads = failing(2, 'reset', (m) => m === 'PUT' || m === 'PATCH');
    const heads = failing(2, 429, (m) => m === 'HEAD');
    const manifests = failing(2, 500, (m, p) => m === 'PUT' && p.includes('/manifests/'));
    rule = (m, p) => {
      for (const f of [manifests, uploads, heads]) {
        const v = f(m, p);
        if (v !== 'pass') return v;
      }
      return 'pass';
    };
    const r = await kiln(base.root, ['push', `${proxy.host}/acc/f:1`], { env });
    rule = () => 'pass';
    expect(r.code, r.stderr).toBe(0);
    const head = await registryApi(reg.host, '/v2/acc/f/manifests/1', { method: 'HEAD' });
    expect(head.status).toBe(200);
  });

  it('pull completes through resets in the middle of blobs and 503s', async () => {
    const resets = failing(2, 'reset', (m, p) => m === 'GET' && p.includes('/blobs/'));
    const manifests = failing(2, 500, (m, p) => p.includes('/manifests/'));
    rule = (m, p) => (resets(m, p) !== 'pass' ? 'reset' : manifests(m, p));
    const empty = tempDir('kiln-store-');
    try {
      const r = await kiln(empty.path, ['pull', `${proxy.host}/acc/f:1`], { env });
      rule = () => 'pass';
      expect(r.code, r.stderr).toBe(0);
      const run = await kiln(empty.path, ['run', '--rm', `${proxy.host}/acc/f:1`, 'cat', '/f']);
      expect(run.stdout).toBe('faulty\n');
    } finally {
      rule = () => 'pass';
      await empty.cleanup();
    }
  });

  it('a fault that never clears fails clearly and tags nothing', async () => {
    rule = (m, p) => (m === 'PUT' && p.includes('/manifests/') ? 500 : 'pass');
    const push = await kiln(base.root, ['push', `${proxy.host}/acc/f:2`], { env });
    expect(push.code).toBe(1);
    expect(push.stderr).toMatch(/^error: Cannot push the manifest of ".*acc\/f:2": UNAVAILABLE: injected 500 \(gave up after 5 attempts\)$/m);
    noStack(push.stderr);
    const tags = JSON.parse((await registryApi(reg.host, '/v2/acc/f/tags/list')).body) as { tags: string[] };
    expect(tags.tags).toEqual(['1']);

    rule = (m, p) => (m === 'GET' && p.includes('/blobs/') ? 'reset' : 'pass');
    const empty = tempDir('kiln-store-');
    try {
      const pull = await kiln(empty.path, ['pull', `${proxy.host}/acc/f:1`], { env });
      expect(pull.code).toBe(1);
      expect(pull.stderr).toMatch(/Cannot fetch blob/);
      noStack(pull.stderr);
      expect((await kiln(empty.path, ['images', '-q'])).stdout).toBe('');
      expect(existsSync(join(empty.path, 'tmp')) ? execFileSync('ls', [join(empty.path, 'tmp')], { encoding: 'utf8' }) : '').toBe('');
    } finally {
      rule = () => 'pass';
      await empty.cleanup();
    }
  });
});
