import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar } from '../helpers/tar.js';
import type { Served } from './serve-helpers.js';
import { type Answer, buildEvents, contextLeftovers, send, startHostileServe, type Target, tmpLeftovers } from './serve-hostile.js';

/**
 * Malformed input to a build service: broken context archives, options of the wrong JSON type,
 * JSON nested without end, names too long. Each is a 4xx with a typed error that names what
 * was wrong, leaves nothing in the store's tmp/, and another client's build finishes meanwhile.
 */
describe('kiln serve: malformed input', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let targets: Target[];
  let good: Buffer;
  const MAX_CONTEXT = 256 * 1024;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-malformed-')];
    const s = await startHostileServe(store.root, work.path, ['--max-context-size', String(MAX_CONTEXT)]);
    served = s.served;
    targets = [s.unix, s.tcp];
    good = await packTar([[{ name: 'Dockerfile', mode: 0o644 }, 'FROM test/base:1\nRUN sleep 2 && echo second > /second\n']]);
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  /** The error of a refused Kiln request: its status must be a 4xx, its code a typed one. */
  const kilnError = (a: Answer) => {
    expect(a.status, a.body).toBeGreaterThanOrEqual(400);
    expect(a.status, a.body).toBeLessThan(500);
    return (JSON.parse(a.body) as { error: { code: string; message: string } }).error;
  };
  const dockerError = (a: Answer) => {
    expect(a.status, a.body).toBeGreaterThanOrEqual(400);
    expect(a.status, a.body).toBeLessThan(500);
    return (JSON.parse(a.body) as { message: string }).message;
  };
  const kilnBuild = (t: Target, options: string, context: Buffer = good) => send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from(`${options}\n`), context]));

  /** Another client's build, started before and finishing while the malformed requests come. */
  const secondClient = (t: Target) => kilnBuild(t, '{"tags":["malformed/second:1"]}');

  const contextsUnder = async () => {
    for (let i = 0; i < 50 && tmpLeftovers(store.root).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    return tmpLeftovers(store.root);
  };

  it('answers broken context archives with a 400 naming the problem, through both APIs', async () => {
    const tgz = gzipSync(good);
    const contexts: [string, Buffer, string, RegExp][] = [
      ['truncated gzip', tgz.subarray(0, 30), 'CONTEXT_CORRUPT', /is not valid gzip: unexpected end of file/],
      ['garbage gzip', Buffer.concat([Buffer.from([0x1f, 0x8b]), randomBytes(4096)]), 'CONTEXT_CORRUPT', /is not valid gzip/],
      ['random bytes', randomBytes(4096), 'CONTEXT_CORRUPT', /The build context archive has an invalid/],
      ['an empty body', Buffer.alloc(0), 'CONTEXT_CORRUPT', /The build context archive is empty/],
      ['a gzip over the size limit', gzipSync(await packTar([[{ name: 'big', mode: 0o644 }, randomBytes(2 * MAX_CONTEXT)]]), { level: 1 }), 'CONTEXT_TOO_LARGE', /larger than the server's limit/],
    ];
    for (const t of targets) {
      const second = secondClient(t);
      for (const [what, body, code, message] of contexts) {
        const e = kilnError(await kilnBuild(t, '{}', body));
        expect(e.code, `${t.name} ${what}`).toBe(code);
        expect(e.message, `${t.name} ${what}`).toMatch(message);
        expect(dockerError(await send(t, 'POST', '/build', body)), `${t.name} ${what}`).toMatch(message);
      }
      const { error, events } = buildEvents(await second);
      expect(error, t.name).toBeUndefined();
      expect(events.at(-1)?.type).toBe('result');
    }
    expect(await contextsUnder()).toEqual([]);
    expect(served!.log()).not.toMatch(/^error /m);
  });

  it('answers build options of the wrong JSON type with a 400 naming the field', async () => {
    const cases: [string, RegExp][] = [
      ['{"tags": "x"}', /"tags" must be a list of strings, not a string/],
      ['{"tags": ["ok", 5]}', /"tags\[1\]" must be a string, not a number/],
      ['{"dockerfile": 5}', /"dockerfile" must be a string, not a number/],
      ['{"dockerfileText": {}}', /"dockerfileText" must be a string, not an object/],
      ['{"buildArgs": [1]}', /"buildArgs" must be a JSON object, not a list/],
      ['{"buildArgs": {"A": 1}}', /"buildArgs.A" must be a string, not a number/],
      ['{"labels": "x"}', /"labels" must be a JSON object, not a string/],
      ['{"target": []}', /"target" must be a string, not a list/],
      ['{"noCache": "yes"}', /"noCache" must be true or false, not a string/],
      ['{"noCacheFilter": [null]}', /"noCacheFilter\[0\]" must be a string, not null/],
      ['{"outputs": [1]}', /"outputs\[0\]" must be a string, not a number/],
      ['{"push": 1}', /"push" must be true or false, not a number/],
      ['{"pull": "true"}', /"pull" must be true or false, not a string/],
      ['{"insecureRegistries": "localhost"}', /"insecureRegistries" must be a list of strings, not a string/],
      ['{"runFlags": []}', /"runFlags" must be a JSON object, not a list/],
      ['{"runFlags": {"addHost": "x"}}', /"runFlags.addHost" must be a list of strings/],
      ['{"runFlags": {"network": 1}}', /"runFlags.network" must be a string, not a number/],
      ['{"runFlags": {"ulimit": [1]}}', /"runFlags.ulimit\[0\]" must be a string/],
      ['{"runFlags": {"shmSize": 64}}', /"runFlags.shmSize" must be a string, not a number/],
      ['{"allow": {}}', /"allow" must be a list of strings, not an object/],
      ['{"secrets": {}}', /"secrets" must be a list/],
      ['{"secrets": [{"id": 1, "value": ""}]}', /"secrets\[0\].id" must be a string, not a number/],
      ['{"secrets": [null]}', /"secrets\[0\]" must be a JSON object, not null/],
      ['{"cacheTo": 5}', /"cacheTo" must be a list of strings, not a number/],
      ['{"cacheFrom": [{}]}', /"cacheFrom\[0\]" must be a string, not an object/],
      ['{"context": "zip"}', /"context" must be "tar" or "list", not "zip"/],
      ['{"scope": 1}', /"scope" must be a string, not a number/],
      [`{"tags": ["${'a'.repeat(100_000)}"]}`, /the repository name is longer than 255 characters/],
      ['[]', /The build options must be a JSON object, not a list/],
      ['5', /The build options must be a JSON object, not a number/],
      ['null', /The build options must be a JSON object, not null/],
      ['{"tags": [', /Cannot read the build options: it is not valid JSON/],
      [`${'['.repeat(100_000)}${']'.repeat(100_000)}`, /Cannot read the build options: it nests deeper than 32 levels/],
    ];
    for (const t of targets) {
      for (const [options, message] of cases) {
        const e = kilnError(await kilnBuild(t, options));
        expect(e.code, `${t.name} ${options.slice(0, 60)}`).toMatch(/^INVALID_/);
        expect(e.message, `${t.name} ${options.slice(0, 60)}`).toMatch(message);
      }
    }
    expect(await contextsUnder()).toEqual([]);
  });

  it('answers a malformed incremental upload list with a 400 naming the entry and field', async () => {
    const entry = { path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 1, checksum: `sha256:${'a'.repeat(64)}` };
    const cases: [unknown, RegExp][] = [
      [{ entries: 'x' }, /The context list's "entries" must be a list, not a string/],
      [[], /The context list must be a JSON object, not a list/],
      [{ entries: [5] }, /The context list's entry 0 must be a JSON object, not a number/],
      [{ entries: [{ ...entry, path: 5 }] }, /entry 0 \("5"\) must have a string as "path", not a number/],
      [{ entries: [{ ...entry, type: 'fifo' }] }, /must have "dir", "file" or "symlink" as "type"/],
      [{ entries: [{ ...entry, mode: -1 }] }, /must have a whole number of at least 0 as "mode", not a number/],
      [{ entries: [{ ...entry, uid: '0' }] }, /as "uid", not a string/],
      [{ entries: [{ ...entry, size: 1.5 }] }, /as "size"/],
      [{ entries: [{ ...entry, checksum: undefined }] }, /entry 0 \("f"\) needs a string as "checksum"/],
      [{ entries: [{ ...entry, type: 'symlink' }] }, /needs a string as "target"/],
      [{ entries: [{ ...entry, xattrs: { 'user.a': 1 } }] }, /"entries\[0\].xattrs.user.a" must be a string, not a number/],
    ];
    const empty = await packTar([]);
    for (const t of targets) {
      for (const [list, message] of cases) {
        const e = kilnError(await kilnBuild(t, `{"context":"list"}\n${JSON.stringify(list)}`, empty));
        expect(e.code).toBe('INVALID_REQUEST');
        expect(e.message, JSON.stringify(list)).toMatch(message);
      }
    }
    expect(await contextsUnder()).toEqual([]);
  });

  it('answers Docker API parameters of the wrong JSON type with a 400 naming the parameter', async () => {
    const q = (params: Record<string, string>) => `/v1.43/build?${new URLSearchParams(params)}`;
    const cases: [string, RegExp][] = [
      [q({ buildargs: '"abc"' }), /The "buildargs" parameter is not a JSON object/],
      [q({ buildargs: '{"A": 1}' }), /The "buildargs" parameter gives "A" a value that is not a string/],
      [q({ labels: '{"a": null}' }), /The "labels" parameter gives "a" a value that is not a string/],
      [q({ labels: '[1]' }), /The "labels" parameter is not a JSON object/],
      [q({ labels: '{' }), /Cannot read the "labels" parameter: it is not valid JSON/],
      [q({ cachefrom: '{"a": 1}' }), /The "cachefrom" parameter is not a JSON list of strings/],
      [q({ ulimits: '[{"Name": 1}]' }), /Each of "ulimits" needs "Name", "Soft" and "Hard"/],
      [q({ ulimits: `${'['.repeat(1000)}${']'.repeat(1000)}` }), /Cannot read the "ulimits" parameter: it nests deeper than 32 levels/],
      [q({ t: `localhost:5000/${'a'.repeat(300)}` }), /the repository name is longer than 255 characters/],
    ];
    for (const t of targets) {
      for (const [path, message] of cases) expect(dockerError(await send(t, 'POST', path, good)), path.slice(0, 80)).toMatch(message);
      expect(dockerError(await send(t, 'GET', `/images/json?filters=${encodeURIComponent('['.repeat(100))}`))).toMatch(/nests deeper than 32 levels/);
      const auth = Buffer.from('null').toString('base64');
      expect(dockerError(await send(t, 'POST', '/images/acc%2Fx/push', undefined, { 'X-Registry-Auth': auth }))).toMatch(/X-Registry-Auth header must be a JSON object of strings/);
      expect(dockerError(await send(t, 'POST', `/images/test%2Fbase:1/tag?repo=${'a'.repeat(300)}`))).toMatch(/longer than 255 characters/);
    }
  });

  it('answers other JSON requests of the wrong shape with a 400', async () => {
    for (const t of targets) {
      const cases: [string, string, RegExp][] = [
        ['/v1/tag', '[]', /The request body must be a JSON object/],
        ['/v1/tag', JSON.stringify({ source: 'test/base:1', target: 'a'.repeat(100_000) }), /longer than 255 characters/],
        ['/v1/push', JSON.stringify({ name: 'localhost:1/x', insecureRegistries: 'localhost:1' }), /"insecureRegistries" must be a list of strings/],
        ['/v1/pull', JSON.stringify({ name: 'localhost:1/x', platform: 5 }), /"platform" must be a string/],
        ['/v1/prune', '"x"', /The request body must be a JSON object/],
        ['/v1/context/missing', '{"checksums": ["x"]}', /"x" is not a sha256 checksum/],
        ['/v1/export', '{', /Cannot read the request body: it is not valid JSON/],
      ];
      for (const [path, body, message] of cases) {
        const e = kilnError(await send(t, 'POST', path, body));
        expect(e.message, `${t.name} ${path} ${body.slice(0, 50)}`).toMatch(message);
      }
      expect((await send(t, 'GET', '/_ping')).status).toBe(200);
    }
    expect(served!.log()).not.toMatch(/^error /m);
  });

  it('leaves a store that verifies clean', async () => {
    const v = await send(targets[0]!, 'POST', '/v1/store/verify', '{}');
    expect(v.status, v.body).toBe(200);
    expect((JSON.parse(v.body) as { problems: string[] }).problems).toEqual([]);
    expect(await contextLeftovers(store.root)).toEqual([]);
  });
});
