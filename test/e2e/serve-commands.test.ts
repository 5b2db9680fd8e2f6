import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, storeWithBase, tempDir, type KilnResult } from '../helpers/kiln.js';
import { registryApi, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { type Served, startServe } from './serve-helpers.js';

const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);

/**
 * The image commands with `--host`: the same output and exit code as the same command run
 * locally on the server's store, and no local store opened.
 */
describe('kiln --host: image commands against a build service', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let reg: TestRegistry | undefined;
  let noStore: string;

  // The client keeps its context memo under XDG_CACHE_HOME: in the test's directory, not the user's.
  const remote = (args: string[], input?: string) => kiln(noStore, ['--host', `unix://${served!.socket}`, ...args], { input, env: { XDG_CACHE_HOME: join(work.path, 'cache') } });
  const local = (args: string[]) => kiln(store.root, args);
  // Ages are printed relative to now: the two runs may fall on either side of a second, and
  // "1 second ago" is a column narrower than "2 seconds ago" (the header's spacing follows it).
  const aged = (s: string) => s.replace(/\d+ seconds? ago/g, 'N seconds ago').replace(/ {2,}/g, '  ');
  const same = (r: KilnResult, l: KilnResult) => {
    expect(aged(r.stdout)).toBe(aged(l.stdout));
    expect(r.stderr).toBe(l.stderr);
    expect(r.code).toBe(l.code);
    noStack(r.stderr);
  };

  beforeAll(async () => {
    [store, work, reg] = [await storeWithBase(), tempDir('kiln-serve-cmd-'), await startRegistry()];
    noStore = join(work.path, 'no-store');
    served = await startServe(store.root, join(work.path, 'kiln.sock'));
    const ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo one > /one\nLABEL app=cmd\n');
    const b = await remote(['build', '-q', '-t', 'cmd/app:1', ctx]);
    if (b.code !== 0) throw new Error(b.stderr);
  });

  afterAll(async () => {
    await served?.stop();
    await reg?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  it('tag names an image on the server', async () => {
    const r = await remote(['tag', 'cmd/app:1', 'cmd/app:2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect((await local(['images'])).stdout).toMatch(/^cmd\/app +2 /m);
    same(await remote(['tag', 'cmd/none:1', 'cmd/x:1']), await local(['tag', 'cmd/none:1', 'cmd/x:1']));
    same(await remote(['tag', 'cmd/app:1', 'Bad Name']), await local(['tag', 'cmd/app:1', 'Bad Name']));
  });

  it('inspect and history print what they print locally', async () => {
    for (const args of [
      ['inspect', 'cmd/app:1'],
      ['inspect', '--format', 'json', 'cmd/app:1', 'test/base:1'],
      ['inspect', '-f', '{{.Id}} {{index .Config.Labels "app"}} {{join .RepoTags ","}}', 'cmd/app:1'],
      ['inspect', 'cmd/app:1', 'cmd/none:1'],
      ['inspect', 'cmd/none:1'],
      ['history', 'cmd/app:1'],
      ['history', '--no-trunc', 'cmd/app:1'],
      ['history', '-q', 'cmd/app:1'],
      ['history', 'cmd/none:1'],
    ]) {
      same(await remote(args), await local(args));
    }
  });

  it('version shows the server\'s runtime and store', async () => {
    const r = await remote(['version']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(` Store:        ${store.root}\n`);
    expect(r.stdout.replace(/ Store: .*/, '')).toBe((await local(['version'])).stdout.replace(/ Store: .*/, ''));
    const j = JSON.parse((await remote(['version', '--format', 'json'])).stdout) as { engine: { store: string } };
    expect(j.engine.store).toBe(store.root);
  });

  it('push and pull go through the server', async () => {
    const name = `${reg!.host}/cmd/pushed:1`;
    expect((await remote(['tag', 'cmd/app:1', name])).code).toBe(0);
    const p = await remote(['push', '--progress', 'plain', name]);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(new RegExp(`^The push refers to repository \\[${reg!.host}/cmd/pushed\\]$`, 'm'));
    expect(p.stdout).toMatch(/^1: digest: sha256:[0-9a-f]{64} size: \d+$/m);
    expect((await registryApi(reg!.host, '/v2/cmd/pushed/manifests/1', { accept: 'application/vnd.oci.image.manifest.v1+json' })).status).toBe(200);
    same(await remote(['push', `${reg!.host}/cmd/none:1`]), await local(['push', `${reg!.host}/cmd/none:1`]));

    expect((await remote(['rmi', name])).code).toBe(0);
    const pl = await remote(['pull', '--progress', 'plain', name]);
    expect(pl.code, pl.stderr).toBe(0);
    expect(pl.stdout).toMatch(/^Digest: sha256:[0-9a-f]{64}$/m);
    expect(pl.stdout.trim().split('\n').at(-1)).toBe(`${reg!.host}/cmd/pushed:1`);
    expect((await local(['images'])).stdout).toContain(`${reg!.host}/cmd/pushed`);
    same(await remote(['pull', '--platform', 'nope', name]), await local(['pull', '--platform', 'nope', name]));
  });

  it('rmi removes on the server and fails as the local command does', async () => {
    const r = await remote(['rmi', 'cmd/app:2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('Untagged: cmd/app:2\n');
    expect((await local(['images'])).stdout).not.toMatch(/^cmd\/app +2 /m);
    same(await remote(['rmi', 'cmd/none:1']), await local(['rmi', 'cmd/none:1']));
    same(await remote(['rmi', 'cmd/none:1', 'cmd/none:2']), await local(['rmi', 'cmd/none:1', 'cmd/none:2']));
  });

  it('info, du and store verify print what they print locally', async () => {
    // Free space moves with whatever else writes to the disk between the two runs; the server
    // has step limits of its own (kiln serve's defaults), a local build none.
    const free = (s: string) =>
      s
        .replace(/ Disk free: .*/, '')
        .replace(/"diskFree":\d+/, '')
        .replace(/^Step limits: .*/m, '')
        .replace(/"stepLimits":(null|\{[^}]*\})/, '');
    for (const args of [['info'], ['info', '--format', 'json']]) {
      const [r, l] = [await remote(args), await local(args)];
      expect(r.code, r.stderr).toBe(0);
      expect(free(r.stdout)).toBe(free(l.stdout));
      expect(r.stdout).toContain(store.root);
    }
    expect((await remote(['info'])).stdout).toMatch(/^Step limits: +memory \d+[MG]iB, 4096 processes$/m);
    expect((await local(['info'])).stdout).toMatch(/^Step limits: +none$/m);
    for (const args of [['du'], ['du', '-v'], ['store', 'verify']]) same(await remote(args), await local(args));
    expect((await remote(['du', '-v'])).stdout).toMatch(/RUN echo one > \/one/);
  });

  it('run runs the container on the server: output, exit code, standard input, options', async () => {
    for (const args of [
      ['run', 'cmd/app:1', 'sh', '-c', 'cat /one; echo to-stderr >&2; exit 3'],
      ['run', '-e', 'A=1', '-w', '/tmp', '-u', '1:2', 'cmd/app:1', 'sh', '-c', 'echo $A $(pwd) $(id -u):$(id -g)'],
      ['run', '--add-host', 'db:10.0.0.5', '--ulimit', 'nofile=1000:2000', '--network', 'none', 'cmd/app:1', 'sh', '-c', 'grep db /etc/hosts; ulimit -n; ls /sys/class/net'],
      ['run', 'cmd/none:1'],
      ['run', '--entrypoint', '', 'cmd/app:1'],
      ['run', '--network', 'bogus', 'cmd/app:1', 'true'],
    ]) {
      same(await remote(args), await local(args));
    }
    const three = await remote(['run', 'cmd/app:1', 'sh', '-c', 'exit 3']);
    expect(three.code).toBe(3);
    const echoed = await remote(['run', 'cmd/app:1', 'sh', '-c', 'tr a-z A-Z; echo done'], 'from the client\n');
    expect(echoed.stdout).toBe('FROM THE CLIENT\ndone\n');
    expect(echoed.code).toBe(0);
    const v = await remote(['run', '-v', `${work.path}:/x`, 'cmd/app:1', 'ls', '/x']);
    expect(v.code).toBe(125);
    expect(v.stderr).toMatch(/"--volume" does not work against a build service \(--host\): the container runs on the server/);
  });

  it('checks a run request\'s settings on the server, whatever the client sent', async () => {
    const http = await import('node:http');
    const post = (body: unknown) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = http.request({ socketPath: served!.socket, path: '/v1/run', method: 'POST' }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('error', reject);
        req.end(`${JSON.stringify(body)}\n`);
      });
    const base = { ref: 'cmd/app:1', cmd: ['true'], env: [], network: 'default' };
    const injected = await post({ ...base, extraHosts: [{ host: 'a\n1.2.3.4 evil', ip: '10.0.0.1' }] });
    expect(injected.status).toBe(400);
    expect(JSON.parse(injected.text).error.message).toMatch(/^Invalid --add-host/);
    const huge = await post({ ...base, ulimits: [{ name: 'nofile', soft: 1, hard: 2 ** 40 }] });
    expect(huge.status).toBe(400);
    expect(JSON.parse(huge.text).error.code).toBe('ULIMIT_TOO_HIGH');
    const mounts = await post({ ...base, cmd: ['ls', '/host'], mounts: [{ destination: '/host', type: 'bind', source: '/', options: ['rbind', 'rw'] }] });
    expect(mounts.status).toBe(200);
    expect(mounts.text).toMatch(/"type":"exit","code":[1-9]/);
  });

  it('save streams the archive to the client, load and import stream it up', async () => {
    const [r, l] = [join(work.path, 'remote.tar'), join(work.path, 'local.tar')];
    expect((await remote(['save', '-o', r, 'cmd/app:1'])).code).toBe(0);
    expect((await local(['save', '-o', l, 'cmd/app:1'])).code).toBe(0);
    const { readFileSync, existsSync } = await import('node:fs');
    expect(readFileSync(r).equals(readFileSync(l))).toBe(true);
    same(await remote(['save', '-o', join(work.path, 'none.tar'), 'cmd/none:1']), await local(['save', '-o', join(work.path, 'none.tar'), 'cmd/none:1']));
    expect(existsSync(join(work.path, 'none.tar'))).toBe(false);

    expect((await local(['rmi', 'cmd/app:1'])).code).toBe(0);
    const loaded = await remote(['load', '-i', r]);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toBe('Loaded image: cmd/app:1\n');
    same(await remote(['load', '-i', r]), await local(['load', '-i', r]));
    same(await remote(['load', '-i', join(work.path, 'nothing.tar')]), await local(['load', '-i', join(work.path, 'nothing.tar')]));
    const base = (await import('../helpers/kiln.js')).baseTar();
    same(await remote(['load', '-i', base]), await local(['load', '-i', base]));

    const imp = await remote(['import', '-m', 'sent up', '-c', 'CMD ["true"]', base, 'cmd/imported:1']);
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    const h = await local(['history', 'cmd/imported:1']);
    expect(h.stdout).toMatch(/kiln import +1\.\d+MB +sent up/);
    expect((await local(['inspect', '-f', '{{.Id}} {{json .Config.Cmd}}', 'cmd/imported:1'])).stdout).toBe(`${imp.stdout.trim()} ["true"]\n`);
    same(await remote(['import', join(work.path, 'nothing.tar')]), await local(['import', join(work.path, 'nothing.tar')]));
  });

  it('prune asks on the client, and -f prunes the server\'s cache', async () => {
    same(await remote(['prune']), await local(['prune']));
    const ctx = join(work.path, 'prune-ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo prunable > /p\n');
    expect((await remote(['build', '-q', ctx])).code).toBe(0);
    expect((await local(['du'])).stdout).toMatch(/RUN echo prunable/);
    const p = await remote(['prune', '-f', '-a', '--filter', 'until=0s']);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toMatch(/^Deleted build cache objects:\n(.*\n)*.*RUN echo prunable > \/p\n/);
    expect((await local(['du'])).stdout).not.toMatch(/RUN echo prunable/);
    same(await remote(['prune', '-f', '-a']), await local(['prune', '-f', '-a']));
    same(await remote(['prune', '-f', '--filter', 'until=soon']), await local(['prune', '-f', '--filter', 'until=soon']));
  });

  it('refuses the commands whose work belongs to one machine, by name', async () => {
    for (const [cmd, why] of [
      [['login', 'example.com', '-u', 'u', '-p', 'p'], /"kiln login" does not run against a build service \(--host\): the build service pushes and pulls with its own credentials/],
      [['logout'], /"kiln logout" does not run against a build service/],
      [['serve'], /"kiln serve" does not run against a build service \(--host\): it starts a build service/],
      [['debug', 'graph', work.path], /"kiln debug graph" does not work against a build service \(--host\)/],
    ] as const) {
      const r = await remote([...cmd]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(why);
      noStack(r.stderr);
    }
  });

  it('opened no store on the client', async () => {
    const { existsSync } = await import('node:fs');
    expect(existsSync(noStore)).toBe(false);
  });
});
