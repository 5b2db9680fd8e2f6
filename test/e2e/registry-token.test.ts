import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';
import { type FaultProxy, type TokenRegistry, registryApi, startFaultProxy, startTokenRegistry, tempDocker } from '../helpers/registry.js';

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

/**
 * Bearer tokens against distribution 2.8 with `auth: token`: a token server in this process
 * grants alice pull and push on secret/app, bob only pull. Kiln reaches the registry through a
 * recording proxy, so the test sees every Authorization header the registry got.
 */
describe('bearer tokens against distribution 2.8', () => {
  let reg: TokenRegistry;
  let proxy: FaultProxy;
  let base: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let aliceDocker: ReturnType<typeof tempDocker>;
  let bobDocker: ReturnType<typeof tempDocker>;
  const aliceEnv = () => ({ DOCKER_CONFIG: aliceDocker.dir, KILN_REGISTRY_RETRY_MS: '10' });
  const bobEnv = () => ({ DOCKER_CONFIG: bobDocker.dir, KILN_REGISTRY_RETRY_MS: '10' });
  const image = () => `${proxy.host}/secret/app:1`;
  const tags = async () => {
    const r = await registryApi(reg.host, '/v2/secret/app/tags/list', { bearer: reg.mint(['repository:secret/app:pull']) });
    return r.status === 200 ? (JSON.parse(r.body) as { tags: string[] }).tags : [];
  };

  beforeAll(async () => {
    work = tempDir();
    aliceDocker = tempDocker();
    bobDocker = tempDocker();
    [reg, base] = await Promise.all([
      startTokenRegistry({
        alice: { password: 'alice-pw-1', grants: { 'secret/app': ['pull', 'push'] } },
        bob: { password: 'bob-pw-2', grants: { 'secret/app': ['pull'] } },
      }),
      storeWithBase(),
    ]);
    proxy = await startFaultProxy(reg.host, () => 'pass');
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo token-secret > /secret.txt\n');
    const r = await kiln(base.root, ['build', '-q', '-t', image(), ctx]);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    await base?.cleanup();
    await work?.cleanup();
    aliceDocker?.cleanup();
    bobDocker?.cleanup();
  });

  it('refuses a wrong password at login with exit 1 and writes nothing', async () => {
    const before = reg.requests.length;
    const r = await kiln(base.root, ['login', proxy.host, '-u', 'alice', '--password-stdin'], { env: aliceEnv(), input: 'wrong-pw\n' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error: Login to "${proxy.host}" failed: the registry refused the credentials of "alice"`, 'm'));
    noStack(r.stderr);
    expect(existsSync(join(aliceDocker.dir, 'config.json'))).toBe(false);
    expect(reg.requests.slice(before).map((q) => [q.user, q.authenticated])).toContainEqual(['alice', false]);
  });

  it('logs in, pushes, pulls and builds FROM the image with tokens; the registry never sees the password', async () => {
    const login = await kiln(base.root, ['login', proxy.host, '-u', 'alice', '--password-stdin'], { env: aliceEnv(), input: 'alice-pw-1\n' });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toMatch(/Login Succeeded/);
    const push = await kiln(base.root, ['push', image()], { env: aliceEnv() });
    expect(push.code, push.stderr).toBe(0);
    expect(await tags()).toEqual(['1']);
    const pushTokens = reg.requests.filter((q) => q.scopes.includes('repository:secret/app:pull,push'));
    expect(pushTokens.length).toBeGreaterThan(0);
    for (const q of pushTokens) expect(q).toMatchObject({ user: 'alice', authenticated: true, service: 'kiln-test-registry', granted: ['repository:secret/app:pull,push'] });

    const empty = tempDir('kiln-store-');
    try {
      const pull = await kiln(empty.path, ['pull', image()], { env: aliceEnv() });
      expect(pull.code, pull.stderr).toBe(0);
      const run = await kiln(empty.path, ['run', '--rm', image(), 'cat', '/secret.txt']);
      expect(run.stdout).toBe('token-secret\n');
    } finally {
      await empty.cleanup();
    }
    const pullTokens = reg.requests.filter((q) => q.scopes.length === 1 && q.scopes[0] === 'repository:secret/app:pull');
    expect(pullTokens.length).toBeGreaterThan(0);
    for (const q of pullTokens) expect(q).toMatchObject({ user: 'alice', authenticated: true, granted: ['repository:secret/app:pull'] });

    const store = tempDir('kiln-store-');
    try {
      const ctx = join(work.path, 'from');
      mkdirSync(ctx);
      writeFileSync(join(ctx, 'Dockerfile'), `FROM ${image()}\nRUN cat /secret.txt /secret.txt > /twice\n`);
      const build = await kiln(store.path, ['build', '-q', '-t', 'derived:1', ctx], { env: aliceEnv() });
      expect(build.code, build.stderr).toBe(0);
      const run = await kiln(store.path, ['run', '--rm', 'derived:1', 'cat', '/twice']);
      expect(run.stdout).toBe('token-secret\ntoken-secret\n');
      expect(mountsUnder(store.path)).toEqual([]);
    } finally {
      await store.cleanup();
    }

    // The password went to the token server only: the registry saw bearer tokens and nothing else.
    expect(proxy.authorizations.length).toBeGreaterThan(0);
    for (const a of proxy.authorizations) {
      expect(a).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
      expect(a).not.toContain(Buffer.from('alice:alice-pw-1').toString('base64'));
    }
    expect(reg.requests.every((q) => q.user === undefined || q.user === 'alice')).toBe(true);
  });

  it("refuses bob's push with a clear error and tags nothing, while his pull works", async () => {
    const login = await kiln(base.root, ['login', proxy.host, '-u', 'bob', '--password-stdin'], { env: bobEnv(), input: 'bob-pw-2\n' });
    expect(login.code, login.stderr).toBe(0);
    const before = reg.requests.length;
    // Every blob is already there (alice pushed them): only the manifest needs push access.
    expect((await kiln(base.root, ['tag', image(), `${proxy.host}/secret/app:bob`])).code).toBe(0);
    const retag = await kiln(base.root, ['push', `${proxy.host}/secret/app:bob`], { env: bobEnv() });
    expect(retag.code).toBe(1);
    expect(retag.stderr).toMatch(new RegExp(`^error: Cannot push the manifest of "${proxy.host}/secret/app:bob": DENIED: the registry's token server does not grant "bob" "repository:secret/app:pull,push"$`, 'm'));
    expect(retag.stderr).toMatch(/^hint: Ask for that access, or log in as a user who has it/m);
    noStack(retag.stderr);
    // A new layer: refused at its upload, before any manifest.
    const ctx = join(work.path, 'bob');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo from-bob > /bob.txt\n');
    const built = await kiln(base.root, ['build', '-q', '-t', `${proxy.host}/secret/app:bob2`, ctx]);
    expect(built.code, built.stderr).toBe(0);
    const fresh = await kiln(base.root, ['push', `${proxy.host}/secret/app:bob2`], { env: bobEnv() });
    expect(fresh.code).toBe(1);
    expect(fresh.stderr).toMatch(/^error: Cannot upload blob "sha256:[a-f0-9]{64}" to ".*\/secret\/app": DENIED: the registry's token server does not grant "bob"/m);
    noStack(fresh.stderr);
    const asked = reg.requests.slice(before);
    expect(asked.length).toBeGreaterThan(0);
    for (const q of asked) expect(q).toMatchObject({ user: 'bob', authenticated: true });
    expect(new Set(asked.flatMap((q) => q.granted))).toEqual(new Set(['repository:secret/app:pull']));
    expect(await tags()).toEqual(['1']);
    const empty = tempDir('kiln-store-');
    try {
      const pull = await kiln(empty.path, ['pull', '-q', image()], { env: bobEnv() });
      expect(pull.code, pull.stderr).toBe(0);
    } finally {
      await empty.cleanup();
    }
  });
});
