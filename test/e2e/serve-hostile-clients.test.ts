import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GATEWAY } from '../../src/executor/network.js';
import { kiln, kilnContainers, mountsUnder, storeWithBase, tempDir, type KilnResult } from '../helpers/kiln.js';
import { packTar } from '../helpers/tar.js';
import type { Served } from './serve-helpers.js';
import { buildEvents, send, startHostileServe, type Target, tmpLeftovers } from './serve-hostile.js';

/**
 * One shared server, many hostile clients at once, and one honest client whose build runs
 * through all of it: each attack gets its own clear refusal, the honest build finishes with the
 * right content, and the store verifies clean afterwards with nothing left behind.
 */
const MARKER = `KILN-HOSTILE-CANARY-${process.pid}`;

describe('kiln serve: hostile clients at once, and an honest one', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let unix: Target;
  let hostService: http.Server;
  let hostPort = 0;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-hostile-')];
    mkdirSync(join(work.path, 'outside'));
    writeFileSync(join(work.path, 'outside', 'secret'), `FROM test/base:1\nLABEL leaked=${MARKER}\n`);
    // A service on the server's loopback, which no client may read.
    hostService = http.createServer((_, res) => res.end(`${MARKER}\n`));
    await new Promise<void>((r) => hostService.listen(0, '0.0.0.0', r));
    hostPort = (hostService.address() as AddressInfo).port;
    const s = await startHostileServe(store.root, work.path, ['--step-pids', '64', '--step-memory', '256m']);
    served = s.served;
    unix = s.unix;
  });

  afterAll(async () => {
    await served?.stop();
    await new Promise((r) => hostService?.close(r));
    await store?.cleanup();
    await work?.cleanup();
  });

  const remote = (args: string[]) => kiln(join(work.path, 'no-store'), ['--host', `unix://${served!.socket}`, '--token-file', join(work.path, 'tokens'), ...args], { env: { XDG_CACHE_HOME: join(work.path, 'cache') } });

  function context(name: string, dockerfile: string, files: Record<string, string | Buffer> = {}): string {
    const dir = join(work.path, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'Dockerfile'), dockerfile);
    for (const [f, body] of Object.entries(files)) writeFileSync(join(dir, f), body);
    return dir;
  }

  /** Each attack: how it is made, and what its refusal must say. */
  async function attacks(): Promise<{ name: string; run: () => Promise<KilnResult>; expect: RegExp }[]> {
    const tar = await packTar([[{ name: 'big.bin', mode: 0o644 }, Buffer.alloc(64 * 1024, 7)]]);
    const deepLinks = context('links', 'FROM test/base:1\n');
    symlinkSync('.', join(deepLinks, 'd'));
    const raw = async (body: Buffer | string) => {
      const a = await send(unix, 'POST', '/v1/build', body);
      const e = buildEvents(a).error;
      return { code: a.status >= 400 || e ? 1 : 0, stdout: '', stderr: `${a.status} ${e?.code ?? ''} ${e?.message ?? a.body}` };
    };
    const outputDest = join(work.path, 'written-by-server');
    return [
      {
        name: 'a Dockerfile option climbing out through d -> .',
        run: async () => raw(Buffer.concat([Buffer.from(`${JSON.stringify({ dockerfile: `${'d/'.repeat(12)}${'../'.repeat(12)}${join(work.path, 'outside', 'secret').slice(1)}` })}\n`), await packTar([[{ name: 'd', type: 'symlink', linkname: '.' }]])])),
        expect: /holds no Dockerfile at/,
      },
      {
        name: 'several outputs in one value, one of them a server path',
        run: () => remote(['build', '-o', `type=image,name=h/x:1, type=local,dest=${outputDest}`, context('outputs', 'FROM test/base:1\n')]),
        expect: /type=/,
      },
      {
        name: 'an ADD of a truncated tar',
        run: () => remote(['build', context('truncated', 'FROM test/base:1\nADD cut.tar /x/\n', { 'cut.tar': tar.subarray(0, 700) })]),
        expect: /ARCHIVE_INVALID|cut short|truncated|ends before/i,
      },
      {
        name: 'a pathological COPY glob',
        run: () => remote(['build', context('glob', `FROM test/base:1\nCOPY ${'a*'.repeat(30)}b /x/\n`, { [`${'a'.repeat(60)}`]: 'x' })]),
        expect: /no source files were specified|not found|no files|matched/i,
      },
      { name: 'garbage as a context', run: () => raw(Buffer.concat([Buffer.from('{}\n'), Buffer.from('\x1f\x8b\x08 not really gzip at all')])), expect: /^400 CONTEXT_CORRUPT/ },
      { name: 'build options of the wrong JSON types', run: () => raw('{"tags": "x", "dockerfile": 5}\n'), expect: /^400 .*"(tags|dockerfile)"/ },
      {
        name: 'a fork bomb',
        run: () => remote(['build', context('bomb', "FROM test/base:1\nRUN sh -c 'f(){ f|f& }; f' 2>/dev/null; sleep 2; exit 3\n")]),
        expect: /exit code 3/,
      },
      {
        name: 'a RUN reading a service on the host',
        run: () =>
          remote(['build', '--progress', 'plain', context('loopback', `FROM test/base:1\nRUN wget -q -T 3 -O- http://127.0.0.1:${hostPort}/ || wget -q -T 3 -O- http://${GATEWAY}:${hostPort}/; exit 4\n`)]),
        expect: /exit code 4/,
      },
      {
        name: 'an ADD of a URL on the host',
        run: () => remote(['build', context('add-host', `FROM test/base:1\nADD http://localhost:${hostPort}/ /x\n`)]),
        expect: /is the build service's own host/,
      },
      { name: 'the host network without the entitlement', run: () => remote(['build', '--network', 'host', context('net-host', 'FROM test/base:1\nRUN true\n')]), expect: /does not grant "network\.host"/ },
      { name: 'a deep chain of links as the Dockerfile', run: () => remote(['build', '-f', join(deepLinks, `${'d/'.repeat(300)}Dockerfile`), deepLinks]), expect: /Cannot read the Dockerfile ".*": too many levels of symbolic links/ },
    ];
  }

  it('refuses every attack with its own error while an honest build finishes with the right content', async () => {
    const honest = remote(['build', '--progress', 'plain', '-t', 'honest/app:1', context('honest', 'FROM test/base:1\nCOPY data /data\nRUN sleep 3; grep Seccomp: /proc/self/status > /seccomp; cat /data > /copy\n', { data: 'honest-data\n' })]);
    const list = await attacks();
    const results = await Promise.all(list.map(async (a) => ({ a, r: await a.run() })));
    for (const { a, r } of results) {
      expect(r.code, `${a.name}: ${r.stderr}`).not.toBe(0);
      expect(r.stderr, a.name).toMatch(a.expect);
      expect(r.stderr, a.name).not.toContain(MARKER);
      expect(r.stderr, a.name).not.toMatch(/This is a bug in Kiln|failed unexpectedly/);
    }
    const h = await honest;
    expect(h.code, h.stderr).toBe(0);
    const out = await remote(['run', 'honest/app:1', 'cat', '/copy', '/seccomp']);
    expect(out.stdout).toBe('honest-data\nSeccomp:\t2\n');
    expect(existsSync(join(work.path, 'written-by-server'))).toBe(false);
  });

  it('keeps serving, and leaves a store that verifies clean with nothing left behind', async () => {
    const ping = await send(unix, 'GET', '/_ping');
    expect(ping.status).toBe(200);
    const verify = await remote(['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    for (let i = 0; i < 50 && tmpLeftovers(store.root).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(tmpLeftovers(store.root)).toEqual([]);
    expect(kilnContainers(store.root)).toEqual([]);
    expect(mountsUnder(store.root)).toEqual([]);
    expect(served!.log()).not.toMatch(/^error /m);
    expect(await served!.stop()).toBe(0);
    served = undefined;
  });
});
