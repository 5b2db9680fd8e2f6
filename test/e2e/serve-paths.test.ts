import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar, type TarEntry } from '../helpers/tar.js';
import type { Served } from './serve-helpers.js';
import { buildEvents, send, startHostileServe, type Target, tmpLeftovers } from './serve-hostile.js';

/**
 * Paths a client names to a build service: the Dockerfile (a link in the context, or the
 * `dockerfile` option) and the ignore file are resolved inside the uploaded context as if it
 * were `/`, through the Kiln API, the Docker API and the incremental upload. A host file outside
 * the context holds a Dockerfile whose label carries a marker: it must never be built, quoted
 * or otherwise shown.
 */
const MARKER = `KILN-SERVE-CANARY-${process.pid}`;
const DEPTH = 16;

describe('kiln serve: paths a client names', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let served: Served | undefined;
  let targets: Target[];
  let secretRel: string;
  let ignoreRel: string;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-serve-paths-')];
    mkdirSync(join(work.path, 'outside'));
    // A valid Dockerfile: read by mistake, it would build and put the marker in the image.
    writeFileSync(join(work.path, 'outside', 'secret'), `FROM test/base:1\nLABEL leaked=${MARKER}\n`);
    writeFileSync(join(work.path, 'outside', 'ignore'), 'keep\n');
    secretRel = join(work.path, 'outside', 'secret').slice(1);
    ignoreRel = join(work.path, 'outside', 'ignore').slice(1);
    const s = await startHostileServe(store.root, work.path);
    served = s.served;
    targets = [s.unix, s.tcp];
  });

  afterAll(async () => {
    await served?.stop();
    await store?.cleanup();
    await work?.cleanup();
  });

  /** A link target that stays inside the context when read as text, yet climbs to `/` through `d -> .`. */
  const climb = (rest: string) => `${'d/'.repeat(DEPTH)}${'../'.repeat(DEPTH)}${rest}`;

  interface Attack {
    name: string;
    links: [string, string][];
    files?: [string, string][];
    dirs?: string[];
    dockerfile?: string;
  }

  const attacks = (): Attack[] => [
    { name: 'a Dockerfile link climbing through d -> .', links: [['d', '.'], ['Dockerfile', climb(secretRel)]] },
    { name: 'a dockerfile option through a link', links: [['d', '.'], ['up', climb('')]], dockerfile: `up/${secretRel}` },
    { name: 'a dockerfile option with ../', links: [], dockerfile: `${'../'.repeat(DEPTH)}${secretRel}` },
    { name: 'an absolute dockerfile option', links: [], dockerfile: `/${secretRel}` },
    { name: 'a dockerfile option climbing through d -> .', links: [['d', '.']], dockerfile: climb(secretRel) },
  ];

  const tarOf = (a: { links: [string, string][]; files?: [string, string][]; dirs?: string[] }) =>
    packTar([
      ...(a.dirs ?? []).map((name): TarEntry => [{ name, type: 'directory', mode: 0o755 }]),
      ...a.links.map(([name, linkname]): TarEntry => [{ name, type: 'symlink', linkname }]),
      ...(a.files ?? []).map(([name, body]): TarEntry => [{ name, mode: 0o644 }, body]),
    ]);

  const listBody = async (options: object, a: { links: [string, string][]; dirs?: string[] }) => {
    const entries = [
      { path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 },
      ...(a.dirs ?? []).map((path) => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0 })),
      ...a.links.map(([path, target]) => ({ path, type: 'symlink', target, mode: 0o777, uid: 0, gid: 0, mtime: 0 })),
    ];
    return Buffer.concat([Buffer.from(`${JSON.stringify({ ...options, context: 'list' })}\n${JSON.stringify({ entries })}\n`), await packTar([])]);
  };

  /** The attack through each API and upload: never built, never quoted. */
  async function attempt(t: Target, a: Attack): Promise<{ via: string; status: number; body: string; error?: string }[]> {
    const options = a.dockerfile === undefined ? {} : { dockerfile: a.dockerfile };
    const out = [];
    const kiln = await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from(`${JSON.stringify(options)}\n`), await tarOf(a)]));
    out.push({ via: 'kiln tar', status: kiln.status, body: kiln.body, error: buildEvents(kiln).error?.code });
    const list = await send(t, 'POST', '/v1/build', await listBody(options, a));
    out.push({ via: 'kiln list', status: list.status, body: list.body, error: buildEvents(list).error?.code });
    const query = a.dockerfile === undefined ? '' : `?dockerfile=${encodeURIComponent(a.dockerfile)}`;
    const docker = await send(t, 'POST', `/v1.43/build${query}`, await tarOf(a), { 'Content-Type': 'application/x-tar' });
    out.push({ via: 'docker', status: docker.status, body: docker.body, error: /"error"/.test(docker.body) ? 'error' : undefined });
    return out;
  }

  it('never reads a Dockerfile outside the context, through either API or the list upload', async () => {
    for (const t of targets) {
      for (const a of attacks()) {
        for (const r of await attempt(t, a)) {
          const what = `${t.name} ${r.via}: ${a.name}`;
          expect(r.body, what).not.toContain(MARKER);
          expect(r.body, what).not.toMatch(/"type":"result"|Successfully built/);
          expect(r.status, what).toBeLessThan(500);
          expect(r.error, `${what}: ${r.body}`).toBeDefined();
          expect(r.body, what).toMatch(/holds no Dockerfile at/);
        }
      }
    }
  });

  it('reads .dockerignore inside the context, not through a link out of it', async () => {
    const a = { links: [['d', '.'], ['.dockerignore', climb(ignoreRel)]] as [string, string][], files: [['keep', 'kept\n'], ['Dockerfile', 'FROM test/base:1\nCOPY keep /keep\n']] as [string, string][] };
    for (const t of targets) {
      // The host's ignore file names "keep": read, it would leave COPY nothing to copy.
      const kiln = await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from('{}\n'), await tarOf(a)]));
      const { events, error } = buildEvents(kiln);
      expect(error, kiln.body).toBeUndefined();
      expect(events.at(-1)?.type).toBe('result');
      const docker = await send(t, 'POST', '/build', await tarOf(a));
      expect(docker.body).toMatch(/Successfully built/);
    }
  });

  it('answers a Dockerfile that is a directory, a loop of links or a chain too long with a 4xx naming it', async () => {
    const chain: [string, string][] = Array.from({ length: 300 }, (_, i) => [`l${i}`, i === 299 ? 'Dockerfile' : `l${i + 1}`]);
    const cases: (Attack & { message: RegExp })[] = [
      { name: 'a directory', links: [], dirs: ['sub'], dockerfile: 'sub', message: /The Dockerfile "sub" \("dockerfile"\) is a directory/ },
      { name: 'a loop', links: [['a', 'b'], ['b', 'a']], dockerfile: 'a', message: /The Dockerfile "a" \("dockerfile"\) goes through too many symbolic links/ },
      { name: 'a chain of 300 links', links: chain, files: [['Dockerfile', 'FROM test/base:1\n']], dockerfile: 'l0', message: /goes through too many symbolic links/ },
    ];
    for (const t of targets) {
      for (const c of cases) {
        const kiln = await send(t, 'POST', '/v1/build', Buffer.concat([Buffer.from(`${JSON.stringify({ dockerfile: c.dockerfile })}\n`), await tarOf(c)]));
        const error = buildEvents(kiln).error;
        expect(error?.code, `${t.name} ${c.name}: ${kiln.body}`).toBe('INVALID_PATH');
        expect(error?.message).toMatch(c.message);
        const docker = await send(t, 'POST', `/build?dockerfile=${c.dockerfile}`, await tarOf(c));
        const last = JSON.parse(docker.body.trim().split('\n').at(-1)!) as { error?: string };
        expect(last.error, `${t.name} ${c.name}`).toMatch(c.message);
      }
    }
  });

  it('leaves no upload behind and keeps serving', async () => {
    for (let i = 0; i < 50 && tmpLeftovers(store.root).some((n) => n.startsWith('context-')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(tmpLeftovers(store.root).filter((n) => n.startsWith('context-'))).toEqual([]);
    for (const t of targets) expect((await send(t, 'GET', '/_ping')).status).toBe(200);
    const images = await send(targets[0]!, 'GET', '/v1/images');
    expect(images.body).not.toContain(MARKER);
    // Every refusal above was a typed error: the log holds no unexpected one.
    expect(served!.log()).not.toMatch(/^error /m);
  });
});
