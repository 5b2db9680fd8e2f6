import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { join } from 'node:path';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { netRawCapability } from '../helpers/xattrs.js';
import { freePort, registryApi, startRegistry, tempDocker, type TestRegistry } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

const DOCKERS = ['/usr/bin/docker', '/usr/local/bin/docker'].filter((d) => existsSync(d));
const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

function run(cmd: string, args: string[], env: Record<string, string>, input?: Buffer): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { env: { ...process.env, ...env }, encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr: stderr.toString() });
    });
    child.stdin!.end(input);
  });
}

function request(socket: string, method: string, path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function tarOf(entries: { name: string; type?: 'file' | 'symlink' | 'link'; linkname?: string; body?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', linkname: e.linkname }, e.body ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe.skipIf(DOCKERS.length === 0)('kiln serve: the docker client against the Docker Engine API subset', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served;
  let reg: TestRegistry;
  let dockerConfig: ReturnType<typeof tempDocker>;
  let env: Record<string, string>;
  let ctx: string;

  beforeAll(async () => {
    [store, reg] = await Promise.all([storeWithBase(), startRegistry()]);
    work = tempDir('kiln-serve-docker-');
    dockerConfig = tempDocker();
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
    env = { DOCKER_HOST: `unix://${served.socket}`, DOCKER_CONFIG: dockerConfig.dir, DOCKER_BUILDKIT: '0' };
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nARG WHO=nobody\nCOPY hello.txt /hello.txt\nRUN echo "built by $WHO" > /who\n');
    writeFileSync(join(ctx, 'hello.txt'), 'hello\n');
  });

  afterAll(async () => {
    await served?.stop();
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
    dockerConfig?.cleanup();
  });

  for (const docker of DOCKERS) {
    it(`${docker}: version, build, images, inspect, history, tag, rmi`, async () => {
      const v = await run(docker, ['version', '--format', '{{.Server.Version}} {{.Server.APIVersion}}'], env);
      expect(v.code, v.stderr).toBe(0);
      expect(v.stdout.toString()).toMatch(/^\d+\.\d+\.\d+ 1\.\d+/);
      const b = await run(docker, ['build', '--build-arg', 'WHO=docker', '--label', 'org.test=yes', '-t', 'acc/dk:1', ctx], env);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stdout.toString()).toMatch(/Step \d\/\d : RUN echo "built by \$WHO"/);
      expect(b.stdout.toString()).toMatch(/Successfully tagged acc\/dk:1/);
      const images = await run(docker, ['images'], env);
      expect(images.stdout.toString()).toMatch(/^acc\/dk +1 +[0-9a-f]{12} /m);
      const inspect = await run(docker, ['image', 'inspect', 'acc/dk:1'], env);
      expect(inspect.code, inspect.stderr).toBe(0);
      const [info] = JSON.parse(inspect.stdout.toString()) as [{ Config: { Labels: Record<string, string> }; RepoTags: string[] }];
      expect(info.Config.Labels['org.test']).toBe('yes');
      expect(info.RepoTags).toContain('acc/dk:1');
      const history = await run(docker, ['history', '--no-trunc', 'acc/dk:1'], env);
      expect(history.code, history.stderr).toBe(0);
      expect(history.stdout.toString()).toMatch(/built by/);
      expect((await run(docker, ['tag', 'acc/dk:1', 'acc/dk:2'], env)).code).toBe(0);
      expect((await run(docker, ['images'], env)).stdout.toString()).toMatch(/^acc\/dk +2 /m);
      const rmi = await run(docker, ['rmi', 'acc/dk:2'], env);
      expect(rmi.code, rmi.stderr).toBe(0);
      expect(rmi.stdout.toString()).toMatch(/Untagged: acc\/dk:2/);
      expect((await run(docker, ['images'], env)).stdout.toString()).not.toMatch(/^acc\/dk +2 /m);
      const missing = await run(docker, ['rmi', 'acc/none:1'], env);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toMatch(/No such image/);
    });

    it(`${docker}: builds with the Dockerfile on standard input (-f-), which it sends unpadded at the context's end`, async () => {
      const r = await run(docker, ['build', '-q', '-f-', ctx], env, Buffer.from('FROM test/base:1\nCOPY hello.txt /from-stdin.txt\n'));
      expect(r.code, r.stderr).toBe(0);
      const id = r.stdout.toString().trim();
      expect((await kiln(store.root, ['run', '--rm', id, 'cat', '/from-stdin.txt'])).stdout).toBe('hello\n');
    });

    it(`${docker}: a failing build exits non-zero with the error, quiet build prints the ID`, async () => {
      const bad = join(work.path, `bad-${DOCKERS.indexOf(docker)}`);
      mkdirSync(bad);
      writeFileSync(join(bad, 'Dockerfile'), 'FROM test/base:1\nRUN echo going; exit 3\n');
      const r = await run(docker, ['build', bad], env);
      expect(r.code).not.toBe(0);
      expect(r.stderr + r.stdout.toString()).toMatch(/exit code 3|code: 3|exited with 3/);
      noStack(r.stderr);
      const q = await run(docker, ['build', '-q', ctx], env);
      expect(q.code, q.stderr).toBe(0);
      expect(q.stdout.toString().trim()).toMatch(/^sha256:[0-9a-f]{64}$/);
    });
  }

  it('docker build keeps the file capabilities the docker client sends with the context', async () => {
    const docker = DOCKERS[0]!;
    const capCtx = join(work.path, 'capctx');
    mkdirSync(capCtx);
    writeFileSync(join(capCtx, 'Dockerfile'), 'FROM test/base:1\nCOPY ping /ping\n');
    writeFileSync(join(capCtx, 'ping'), 'ping\n');
    const capability = netRawCapability();
    setAttributeSync(join(capCtx, 'ping'), 'security.capability', capability);
    const b = await run(docker, ['build', '-q', '-t', 'acc/cap:1', capCtx], env);
    expect(b.code, b.stderr).toBe(0);
    // The image's filesystem, written out by a local build on the same store.
    const from = join(work.path, 'capfrom');
    mkdirSync(from);
    writeFileSync(join(from, 'Dockerfile'), 'FROM acc/cap:1\n');
    const out = join(work.path, 'capout');
    const e = await kiln(store.root, ['build', '-q', '-o', `type=local,dest=${out}`, from]);
    expect(e.code, e.stderr).toBe(0);
    expect(getAttributeSync(join(out, 'ping'), 'security.capability')?.toString('hex')).toBe(capability.toString('hex'));
  });

  it('docker images filters by reference, dangling and label; image inspect templates see every Config key', async () => {
    const docker = DOCKERS[0]!;
    const names = async (...filter: string[]) => {
      const r = await run(docker, ['images', ...filter.flatMap((f) => ['--filter', f]), '--format', '{{.Repository}}:{{.Tag}}'], env);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.toString().trim().split('\n').filter(Boolean);
    };
    const all = await names();
    expect(all).toContain('acc/dk:1');
    expect(all).toContain('test/base:1');
    expect(await names('reference=acc/*')).toEqual(expect.arrayContaining(['acc/dk:1']));
    expect((await names('reference=acc/*')).every((n) => n.startsWith('acc/'))).toBe(true);
    expect(await names('reference=test/base:1')).toEqual(['test/base:1']);
    expect(await names('reference=*')).toEqual([]);
    expect(await names('label=org.test=yes')).toEqual(['acc/dk:1']);
    expect(await names('label=org.test=no')).toEqual([]);
    expect((await names('dangling=true')).every((n) => n === '<none>:<none>')).toBe(true);
    expect(await names('dangling=false')).toEqual(expect.arrayContaining(['acc/dk:1', 'test/base:1']));
    const bad = await run(docker, ['images', '--filter', 'since=acc/dk:1'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('Kiln does not filter images by "since"');
    const inspect = await run(docker, ['image', 'inspect', '--format', '{{.Config.Entrypoint}} {{.Config.Labels}} {{.Config.OnBuild}}', 'acc/dk:1'], env);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout.toString()).toContain('map[org.test:yes]');
  });

  it('docker save | docker load round-trips an image', async () => {
    const docker = DOCKERS[0]!;
    const saved = await run(docker, ['save', 'acc/dk:1'], env);
    expect(saved.code, saved.stderr).toBe(0);
    expect((await run(docker, ['rmi', 'acc/dk:1'], env)).code).toBe(0);
    const loaded = await run(docker, ['load'], env, saved.stdout);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout.toString()).toMatch(/Loaded image: acc\/dk:1/);
    expect((await run(docker, ['images'], env)).stdout.toString()).toMatch(/^acc\/dk +1 /m);
  });

  it('docker push sends the image to a registry', async () => {
    const docker = DOCKERS[0]!;
    const name = `${reg.host}/acc/pushed:1`;
    expect((await run(docker, ['tag', 'acc/dk:1', name], env)).code).toBe(0);
    const p = await run(docker, ['push', name], env);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.toString()).toMatch(/1: digest: sha256:[0-9a-f]{64}/);
    const m = await registryApi(reg.host, '/v2/acc/pushed/manifests/1', { accept: 'application/vnd.oci.image.manifest.v1+json' });
    expect(m.status).toBe(200);
  });

  it('docker build passes network, extra hosts, shm size, ulimits and cache-from to the RUN steps', async () => {
    const docker = DOCKERS[0]!;
    const params = join(work.path, 'params');
    mkdirSync(params, { recursive: true });
    writeFileSync(join(params, 'Dockerfile'), "FROM test/base:1\nRUN grep db /etc/hosts > /hosts; ulimit -n > /nofile; df -k /dev/shm | tail -1 | awk '{print $2}' > /shm; ls /sys/class/net > /net\n");
    const b = await run(docker, ['build', '--network', 'none', '--add-host', 'db:10.1.2.3', '--shm-size', '16m', '--ulimit', 'nofile=512:1024', '--cache-from', 'acc/dk:1', '-t', 'acc/params:1', params], env);
    expect(b.code, b.stderr + b.stdout.toString()).toBe(0);
    const r = await kiln(store.root, ['run', 'acc/params:1', 'cat', '/hosts', '/nofile', '/shm', '/net']);
    expect(r.stdout).toBe('10.1.2.3\tdb\n512\n16384\nlo\n');
    const bad = await run(docker, ['build', '--network', 'mynet', params], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/Kiln builds with network "default" \(or "bridge"\), "host" or "none", not "mynet"/);
    // dockerd's bridge is Kiln's default network: the step has an interface of its own.
    const bridge = await run(docker, ['build', '--network', 'bridge', '-t', 'acc/bridge:1', params], env);
    expect(bridge.code, bridge.stderr).toBe(0);
    expect((await kiln(store.root, ['run', 'acc/bridge:1', 'cat', '/net'])).stdout).toBe('eth0\nlo\n');
    const host = await run(docker, ['build', '--network', 'host', params], env);
    expect(host.code).not.toBe(0);
    expect(host.stderr).toContain('The build service does not grant "network.host", which --network host needs');
  });

  it('docker login checks credentials through the API, and docker push sends them to an authenticated registry', async () => {
    const docker = DOCKERS[0]!;
    const user = { user: 'kiln', password: 'pass-w0rd' };
    const authed = await startRegistry({ htpasswd: user });
    const config = tempDocker();
    const authEnv = { ...env, DOCKER_CONFIG: config.dir };
    try {
      const name = `${authed.host}/acc/private:1`;
      expect((await run(docker, ['tag', 'acc/dk:1', name], authEnv)).code).toBe(0);
      const denied = await run(docker, ['push', name], authEnv);
      expect(denied.code).not.toBe(0);
      expect(denied.stdout.toString() + denied.stderr).toMatch(/unauthorized|authentication required|credentials/i);

      const wrong = await run(docker, ['login', authed.host, '-u', user.user, '--password-stdin'], authEnv, Buffer.from('nope\n'));
      expect(wrong.code).not.toBe(0);
      expect(wrong.stderr).toContain(`Login to "${authed.host}" failed: the registry refused the credentials of "kiln"`);
      const login = await run(docker, ['login', authed.host, '-u', user.user, '--password-stdin'], authEnv, Buffer.from(`${user.password}\n`));
      expect(login.code, login.stderr).toBe(0);
      expect(login.stdout.toString()).toMatch(/Login Succeeded/);

      const pushed = await run(docker, ['push', name], authEnv);
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(pushed.stdout.toString()).toMatch(/1: digest: sha256:[0-9a-f]{64}/);
      const m = await registryApi(authed.host, '/v2/acc/private/manifests/1', { auth: `${user.user}:${user.password}` });
      expect(m.status).toBe(200);
    } finally {
      config.cleanup();
      await authed.stop();
    }
  });

  it('answers endpoints it does not serve with Docker error JSON naming them', async () => {
    const r = await request(served.socket, 'GET', '/v1.43/containers/json');
    expect(r.status).toBe(501);
    expect(JSON.parse(r.body).message).toMatch(/GET \/containers\/json/);
    const n = await request(served.socket, 'GET', '/v1.43/nothing/here');
    expect(n.status).toBe(404);
    expect(JSON.parse(n.body).message).toMatch(/\/nothing\/here/);
    const ping = await request(served.socket, 'GET', '/_ping');
    expect(ping.body).toBe('OK');
  });

  it('docker images hides intermediate images without -a; docker image prune removes dangling images, keeping one a named image is built on', async () => {
    const docker = DOCKERS[0]!;
    const dir = join(work.path, 'prune');
    mkdirSync(dir, { recursive: true });
    const build = async (dockerfile: string, ...args: string[]) => {
      writeFileSync(join(dir, 'Dockerfile'), dockerfile);
      const r = await kiln(store.root, ['build', '-q', ...args, dir]);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const parent = await build('FROM test/base:1\nRUN echo p > /p\n');
    const child = await build('FROM test/base:1\nRUN echo p > /p\nRUN echo c > /c\n', '-t', 'acc/child:1');
    const loose = await build('FROM test/base:1\nRUN echo loose > /l\n');
    const ids = async () => (await run(docker, ['images', '-a', '-q', '--no-trunc'], env)).stdout.toString();
    expect(await ids()).toContain(loose);
    // Without -a, as dockerd lists them: the nameless image another is built on is left out.
    const shown = (await run(docker, ['images', '-q', '--no-trunc'], env)).stdout.toString();
    expect(shown).not.toContain(parent);
    expect(shown).toContain(loose);
    expect(shown).toContain(child);
    // Nothing is older than 1000 hours: -a with that filter removes nothing.
    const none = await run(docker, ['image', 'prune', '-a', '-f', '--filter', 'until=1000h'], env);
    expect(none.code, none.stderr).toBe(0);
    expect(await ids()).toContain(child);
    const pruned = await run(docker, ['image', 'prune', '-f'], env);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout.toString()).toContain(`deleted: ${loose}`);
    const left = await ids();
    expect(left).not.toContain(loose);
    expect(left).toContain(parent);
    expect(left).toContain(child);
    const bad = await run(docker, ['image', 'prune', '-f', '--filter', 'label=x'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('Kiln does not prune images by "label"');
  });

  it('docker system df counts the images and lists the build cache', async () => {
    const docker = DOCKERS[0]!;
    const count = (JSON.parse((await request(served.socket, 'GET', '/v1.43/images/json?all=1')).body) as unknown[]).length;
    expect(count).toBeGreaterThan(0);
    const df = await run(docker, ['system', 'df'], env);
    expect(df.code, df.stderr).toBe(0);
    expect(df.stdout.toString()).toMatch(new RegExp(`^Images\\s+${count}\\s`, 'm'));
    const verbose = await run(docker, ['system', 'df', '-v'], env);
    expect(verbose.code, verbose.stderr).toBe(0);
    expect(verbose.stdout.toString()).toMatch(/^[0-9a-f]{12}\s+regular\s/m);
  });

  it('docker builder prune collects the build cache as kiln prune does', async () => {
    const docker = DOCKERS[0]!;
    const records = async () => {
      const du = await kiln(store.root, ['du']);
      expect(du.code, du.stderr).toBe(0);
      return Number(/^Records:\s+(\d+)$/m.exec(du.stdout)?.[1]);
    };
    expect(await records()).toBeGreaterThan(0);
    const bad = await run(docker, ['builder', 'prune', '-f', '--filter', 'type=regular'], env);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('Kiln does not prune the build cache by "type"');
    const all = await run(docker, ['builder', 'prune', '-a', '-f'], env);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout.toString()).toMatch(/Total reclaimed space: [\d.]+[kMG]?B/);
    expect(await records()).toBe(0);
  });

  it.each([
    ['a ".." path', [{ name: 'Dockerfile', body: 'FROM test/base:1\n' }, { name: '../escape', body: 'x' }], /climbs out of the context/],
    ['an absolute path', [{ name: '/etc/escape', body: 'x' }], /absolute path/],
    ['a symbolic link outside', [{ name: 'link', type: 'symlink' as const, linkname: '../../etc' }], /symbolic link to "..\/..\/etc" outside the context/],
    ['an absolute symbolic link', [{ name: 'link', type: 'symlink' as const, linkname: '/etc/passwd' }], /outside the context/],
    ['a hard link outside', [{ name: 'hard', type: 'link' as const, linkname: '../x' }], /climbs out/],
  ])('refuses a context with %s', async (_what, entries, message) => {
    const body = await tarOf(entries);
    const r = await request(served.socket, 'POST', '/v1.43/build?t=acc/evil:1', body, { 'Content-Type': 'application/x-tar' });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).message).toMatch(message);
    const k = await request(served.socket, 'POST', '/v1/build', Buffer.concat([Buffer.from('{}\n'), body]));
    expect(k.status).toBe(400);
    expect(JSON.parse(k.body).error.code).toBe('UNSAFE_CONTEXT');
  });
});

describe('kiln serve: listeners and tokens', () => {
  let work: ReturnType<typeof tempDir>;
  let store: { root: string; cleanup: () => Promise<void> };

  beforeAll(async () => {
    work = tempDir('kiln-serve-tcp-');
    store = await storeWithBase();
  });

  afterAll(async () => {
    await store?.cleanup();
    await work?.cleanup();
  });

  it('refuses plain TCP without --insecure', async () => {
    const port = await freePort();
    const r = await kiln(store.root, ['serve', '--addr', `tcp://127.0.0.1:${port}`], { timeoutMs: 10_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/Refusing to listen on tcp:\/\/127\.0\.0\.1:\d+ without TLS/);
    noStack(r.stderr);
  });

  it('needs the bearer token on TCP, and kiln --host --token-file builds with it', async () => {
    const port = await freePort();
    // The client keeps its context memo under XDG_CACHE_HOME: in the test's directory, not the user's.
    const clientEnv = { XDG_CACHE_HOME: join(work.path, 'cache') };
    writeFileSync(join(work.path, 'tokens'), '# clients\nsecret-token-1\n');
    const socket = join(work.path, 'tcp.sock');
    const served = await startServe(store.root, socket, ['--addr', `tcp://127.0.0.1:${port}`, '--insecure', '--token-file', join(work.path, 'tokens')]);
    try {
      const denied = await new Promise<number>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/v1/version' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', reject);
      });
      expect(denied).toBe(401);
      const ctx = join(work.path, 'ctx');
      mkdirSync(ctx, { recursive: true });
      writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo tcp > /t\n');
      const noToken = await kiln(join(work.path, 'none'), ['--host', `tcp://127.0.0.1:${port}`, 'images'], { env: clientEnv });
      expect(noToken.code).toBe(1);
      expect(noToken.stderr).toMatch(/needs a valid bearer token/);
      const b = await kiln(join(work.path, 'none'), ['--host', `tcp://127.0.0.1:${port}`, '--token-file', join(work.path, 'tokens'), 'build', '-t', 'acc/tcp:1', ctx], { env: clientEnv });
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).toMatch(/Built sha256:[0-9a-f]{64} as acc\/tcp:1/);
      expect(existsSync(join(work.path, 'none'))).toBe(false);
      const bad = join(work.path, 'bad');
      mkdirSync(bad);
      writeFileSync(join(bad, 'Dockerfile'), 'FROM test/base:1\nRUN exit 4\n');
      const local = await kiln(store.root, ['build', '--progress', 'plain', bad]);
      const remote = await kiln(join(work.path, 'none'), ['--host', `tcp://127.0.0.1:${port}`, '--token-file', join(work.path, 'tokens'), 'build', '--progress', 'plain', bad], { env: clientEnv });
      expect(remote.code).toBe(local.code);
      const tail = (s: string) => s.slice(s.indexOf('error:'));
      expect(tail(remote.stderr)).toBe(tail(local.stderr));
    } finally {
      expect(await served.stop()).toBe(0);
    }
    expect(spawnSync('test', ['-S', socket]).status).not.toBe(0);
  });
});
