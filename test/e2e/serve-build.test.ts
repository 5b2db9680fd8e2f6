import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

const SECRET = 'remote-secret-7f3a9c';

/** Every file under `dir` whose bytes hold `needle`. */
function filesHolding(dir: string, needle: string): string[] {
  const out = execFileSync('grep', ['-rlF', '--no-messages', needle, dir], { encoding: 'utf8' }).trim();
  return out === '' ? [] : out.split('\n');
}

function grepOrNothing(dir: string, needle: string): string[] {
  try {
    return filesHolding(dir, needle);
  } catch (err) {
    // grep exits 1 when nothing matches.
    if ((err as { status?: number }).status === 1) return [];
    throw err;
  }
}

/**
 * `kiln --host … build` takes the flags a local build takes: the client reads secrets and writes
 * client-side outputs and the metadata file; the server applies the RUN settings and runs
 * registry caches.
 */
describe('kiln --host build: the flags of a local build', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let second: Served | undefined;
  let reg: TestRegistry | undefined;
  let ctx: string;

  const env = () => ({ XDG_CACHE_HOME: join(work.path, 'cache'), KILN_TEST_SECRET: SECRET });
  const remote = (args: string[], socket = served!.socket) => kiln(join(work.path, 'no-store'), ['--host', `unix://${socket}`, ...args], { env: env() });
  const local = (args: string[]) => kiln(store.root, args, { env: env() });

  beforeAll(async () => {
    [store, work, reg] = [await storeWithBase(), tempDir('kiln-serve-build-'), await startRegistry()];
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(work.path, 'secret.txt'), SECRET);
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM test/base:1',
        // Only the secret's length reaches the image: its value must be nowhere but the step's tmpfs.
        'RUN --mount=type=secret,id=file wc -c < /run/secrets/file > /secret-file-len',
        'RUN --mount=type=secret,id=env,env=TOKEN sh -c \'echo ${#TOKEN} > /secret-env-len\'',
        'RUN grep db /etc/hosts > /hosts; ulimit -n > /nofile; df -k /dev/shm | tail -1 | awk \'{print $2}\' > /shm; ls /sys/class/net > /net',
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    await served?.stop();
    await second?.stop();
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('keeps hard links, fifos, owners and setuid bits of a -o type=local result made on the server', async () => {
    const links = join(work.path, 'links');
    mkdirSync(links);
    writeFileSync(join(links, 'Dockerfile'), 'FROM test/base:1\nRUN mkdir /t && echo shared > /t/a && ln /t/a /t/b && mkfifo /t/pipe && echo s > /t/suid && chmod 4755 /t/suid && chown 1234:5678 /t/a\n');
    const dest = join(work.path, 'links-out');
    const r = await remote(['build', '-o', `type=local,dest=${dest}`, links]);
    expect(r.code, r.stderr).toBe(0);
    const a = statSync(join(dest, 't/a'));
    const b = statSync(join(dest, 't/b'));
    expect(readFileSync(join(dest, 't/b'), 'utf8')).toBe('shared\n');
    expect(b.ino).toBe(a.ino);
    expect(a.nlink).toBe(2);
    expect([a.uid, a.gid]).toEqual([1234, 5678]);
    expect(statSync(join(dest, 't/pipe')).isFIFO()).toBe(true);
    expect(statSync(join(dest, 't/suid')).mode & 0o7777).toBe(0o4755);
  });

  it('passes secrets, RUN settings, client outputs and the metadata file, and keeps the secret off the server\'s disk', async () => {
    const flags = [
      '--secret', `id=file,src=${join(work.path, 'secret.txt')}`,
      '--secret', 'id=env,env=KILN_TEST_SECRET',
      '--add-host', 'db:10.1.2.3',
      '--ulimit', 'nofile=512:1024',
      '--shm-size', '16m',
      '--network', 'none',
    ];
    const out = (name: string) => join(work.path, name);
    const r = await remote([
      'build', '--progress', 'plain', '-t', 'remote/flags:1', ...flags,
      '--metadata-file', out('meta.json'),
      '-o', `type=local,dest=${out('rootfs')}`,
      '-o', `type=tar,dest=${out('rootfs.tar')}`,
      '-o', `type=oci,dest=${out('oci.tar')},name=remote/oci:1`,
      '-o', `type=docker,dest=${out('docker.tar')}`,
      ctx,
    ]);
    expect(r.code, r.stderr).toBe(0);
    const root = out('rootfs');
    expect(readFileSync(join(root, 'secret-file-len'), 'utf8').trim()).toBe(String(SECRET.length));
    expect(readFileSync(join(root, 'secret-env-len'), 'utf8').trim()).toBe(String(SECRET.length));
    expect(readFileSync(join(root, 'hosts'), 'utf8')).toBe('10.1.2.3\tdb\n');
    expect(readFileSync(join(root, 'nofile'), 'utf8')).toBe('512\n');
    expect(readFileSync(join(root, 'shm'), 'utf8')).toBe('16384\n');
    expect(readFileSync(join(root, 'net'), 'utf8')).toBe('lo\n');
    expect(readdirSync(join(root, 'bin')).length).toBeGreaterThan(10);

    // The same build locally gives the same image: the flags meant the same thing on the server.
    const l = await local(['build', '-q', ...flags, ctx]);
    expect(l.code, l.stderr).toBe(0);
    const meta = JSON.parse(readFileSync(out('meta.json'), 'utf8')) as Record<string, unknown>;
    expect(meta['containerimage.config.digest']).toBe(l.stdout.trim());
    expect(meta['image.name']).toBe('docker.io/remote/flags:1');
    const descriptor = meta['containerimage.descriptor'] as { digest: string; size: number; mediaType: string };
    expect(descriptor.digest).toBe(meta['containerimage.digest']);
    expect(descriptor.size).toBeGreaterThan(100);

    const list = (tarFile: string) => execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' });
    expect(list(out('rootfs.tar'))).toMatch(/^(\.\/)?nofile$/m);
    expect(list(out('oci.tar'))).toMatch(/^index\.json$/m);
    expect(list(out('oci.tar'))).toMatch(/^oci-layout$/m);
    expect(list(out('docker.tar'))).toMatch(/^manifest\.json$/m);
    const index = JSON.parse(execFileSync('tar', ['-xOf', out('oci.tar'), 'index.json'], { encoding: 'utf8' })) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    expect(index.manifests[0]!.annotations?.['io.containerd.image.name']).toBe('remote/oci:1');

    expect(grepOrNothing(store.root, SECRET)).toEqual([]);
    expect(served!.log()).not.toContain(SECRET);
    expect(r.stderr).not.toContain(SECRET);
  });

  it('refuses, by name and before sending anything, what would need this machine from the server', async () => {
    const cases: [string[], RegExp][] = [
      [['--ssh', 'default=/tmp/agent.sock'], /"--ssh" does not work against a build service \(--host\): the agent socket is on this machine/],
      [['--cache-to', `type=local,dest=${work.path}/c`], /"--cache-to type=local,dest=.*" names a directory on this machine, which the build service cannot reach/],
      [['--cache-from', `type=local,src=${work.path}/c`], /"--cache-from type=local,src=.*" names a directory on this machine/],
      [['--secret', 'id=x,src=/nonexistent/secret'], /Cannot read the secret "x" from "\/nonexistent\/secret": no such file/],
      [['--ulimit', 'nofile=abc'], /Invalid --ulimit/],
      [['-o', 'type=bogus,dest=x'], /type must be one of/],
    ];
    for (const [flags, message] of cases) {
      const r = await remote(['build', ...flags, ctx]);
      const l = await local(['build', ...flags, ctx]);
      expect(r.stderr).toMatch(message);
      // Refusals that a local build shares give the same text and code.
      if (!/--host/.test(r.stderr) && !/this machine/.test(r.stderr)) {
        expect(r.stderr).toBe(l.stderr);
        expect(r.code).toBe(l.code);
      } else {
        expect(r.code).toBe(2);
      }
    }
    expect(existsSync(join(work.path, 'c'))).toBe(false);
  });

  it('grants --allow only when the server was started to', async () => {
    const insecure = join(work.path, 'insecure');
    mkdirSync(insecure);
    writeFileSync(join(insecure, 'Dockerfile'), 'FROM test/base:1\nRUN --security=insecure grep CapEff /proc/self/status > /caps\n');
    const denied = await remote(['build', '--allow', 'security.insecure', insecure]);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/The build service does not grant "security.insecure"/);
    expect(denied.stderr).toMatch(/--allow-entitlement security.insecure/);
    second = await startServe(store.root, join(work.path, 'allow.sock'), ['--allow-entitlement', 'security.insecure']);
    const granted = await remote(['build', '--allow', 'security.insecure', '-o', `type=local,dest=${join(work.path, 'caps')}`, insecure], second.socket);
    expect(granted.code, granted.stderr).toBe(0);
    // An insecure step has every capability the server has: the same set as this process, as root here.
    const own = /^CapEff:\s+(\w+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1];
    expect(readFileSync(join(work.path, 'caps', 'caps'), 'utf8')).toBe(`CapEff:\t${own}\n`);
    await second.stop();
    second = undefined;
  });

  it('exports the cache to a registry and reuses it once the server\'s own cache is gone', async () => {
    const cached = join(work.path, 'cached');
    mkdirSync(cached);
    writeFileSync(join(cached, 'Dockerfile'), 'FROM test/base:1\nRUN head -c 64 /dev/urandom | od -x > /random\n');
    const ref = `${reg!.host}/cache/served:1`;
    const first = await remote(['build', '-q', '--cache-to', `type=registry,ref=${ref},mode=max`, cached]);
    expect(first.code, first.stderr).toBe(0);
    // Forget the image and every cache record on the server: only the registry holds the steps now.
    expect((await remote(['rmi', first.stdout.trim()])).code).toBe(0);
    expect((await remote(['prune', '-f', '-a'])).code).toBe(0);
    expect((await local(['du'])).stdout).not.toMatch(/RUN head -c 64/);
    const again = await remote(['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${ref}`, cached]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/RUN head -c 64[^\n]*\n#\d+ CACHED/);
    expect(again.stderr).toContain(`Built ${first.stdout.trim()}`);
  });
});
