import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/**
 * Setting up and tearing down RUN mounts (cache, bind, tmpfs) touches paths on the host side of
 * the rootfs: the stubs made for mount targets, the cache directories. A step can turn any of
 * those paths into a link while it runs. Host canaries (a directory tree with known times and
 * contents, shaped like the paths the steps aim at) must come out exactly as they went in, and
 * nothing may appear at the host's `/` under the names the steps use.
 */
const TAG = `kiln-mount-canary-${process.pid}-${Date.now()}`;
const OLD = new Date('2001-02-03T04:05:06Z');

/** Every entry below `dir` with its type, mode, times and content or link target. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string, rel: string) => {
    const st = lstatSync(p);
    const what = st.isSymbolicLink() ? `link ${readlinkSync(p)}` : st.isDirectory() ? 'dir' : `file ${readFileSync(p, 'utf8')}`;
    out[rel] = `${what} ${st.mode.toString(8)} ${st.mtimeMs}`;
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n), `${rel}/${n}`);
  };
  walk(dir, '.');
  return out;
}

describe('RUN mounts never touch the host outside the store', () => {
  let store: { root: string; cleanup: () => Promise<void> };
  let work: ReturnType<typeof tempDir>;
  let ctx: string;
  let host: string;
  let before: Record<string, string>;

  beforeAll(async () => {
    [store, work] = [await storeWithBase(), tempDir('kiln-sec-mounts-')];
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'file'), 'context file\n');
    // Shaped like the targets the steps use (y/cache, y/bind, y/tmp), each empty, as a stub is.
    host = join(work.path, 'host');
    for (const d of ['y/cache', 'y/bind', 'y/tmp', 'data']) mkdirSync(join(host, d), { recursive: true });
    writeFileSync(join(host, 'secret'), 'host secret\n');
    for (const p of ['y/cache', 'y/bind', 'y/tmp', 'y', 'data', 'secret', '.']) utimesSync(join(host, p), OLD, OLD);
    before = tree(host);
  });

  afterAll(async () => {
    await store?.cleanup();
    await work?.cleanup();
    // Nothing of this test may stay at the host's root, whatever failed.
    for (const n of readdirSync('/')) expect(n.startsWith(TAG)).toBe(false);
  });

  const build = async (name: string, dockerfile: string) => {
    const file = join(work.path, `Dockerfile.${name}`);
    writeFileSync(file, dockerfile);
    return kiln(store.root, ['build', '--progress', 'plain', '-f', file, ctx]);
  };

  const expectHostUntouched = () => {
    expect(tree(host)).toEqual(before);
    expect(readdirSync('/').filter((n) => n.startsWith(TAG))).toEqual([]);
    expect(mountsUnder(store.root)).toEqual([]);
    expect(kilnContainers(store.root)).toEqual([]);
  };

  const verify = async () => {
    const r = await kiln(store.root, ['store', 'verify']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  };

  for (const [kind, mount] of [
    ['cache', 'type=cache,target=/x/y/cache'],
    ['bind', 'type=bind,source=file,target=/x/y/bind'],
    ['tmpfs', 'type=tmpfs,target=/x/y/tmp'],
  ] as const) {
    it(`a step that turns the parent of a ${kind} mount's target into a link to the host: the stubs' teardown stays in the layer`, async () => {
      // The stubs for /x and /x/y are made for the mount; the step swaps /x for a link to the
      // host directory, where x/y/<target> names a real, empty host directory.
      const r = await build(`parent-${kind}`, `FROM test/base:1\nRUN --mount=${mount} mv /x /x.moved && ln -s ${host} /x && echo swapped\n`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('swapped');
      expectHostUntouched();
      await verify();
    });
  }

  it('a cache whose content is links to host paths and to /: later steps, du and prune leave the host alone', async () => {
    const seed = await build(
      'cache-links',
      `FROM test/base:1\nRUN --mount=type=cache,id=evil,target=/cache ln -s ${host} /cache/hostdir && ln -s / /cache/root && ln -s ${host}/secret /cache/secret && mkdir /cache/d && ln -s ${host} /cache/d/up\n`,
    );
    expect(seed.code, seed.stderr).toBe(0);
    for (const sharing of ['shared', 'private', 'locked']) {
      // Inside the container the links resolve in the rootfs: the host directory does not exist
      // there, so the writes fail; on the host nothing may follow them.
      const r = await build(
        `cache-use-${sharing}`,
        `FROM test/base:1\nRUN --mount=type=cache,id=evil,sharing=${sharing},target=/cache sh -c 'echo pwned > /cache/hostdir/pwned; echo pwned > /cache/secret; echo pwned > /cache/root/${TAG}; ls -la /cache; true'\n`,
      );
      expect(r.code, r.stderr).toBe(0);
      expectHostUntouched();
    }
    expect((await kiln(store.root, ['du', '-v'])).code).toBe(0);
    const prune = await kiln(store.root, ['prune', '-a', '-f']);
    expect(prune.code, prune.stderr).toBe(0);
    expectHostUntouched();
    expect(existsSync(join(host, 'secret'))).toBe(true);
    await verify();
  });

  it('a mount target that an earlier step made a link to /: the mount lands in the rootfs', async () => {
    const r = await build(
      'target-link',
      `FROM test/base:1\nRUN rm -rf /mnt && ln -s / /mnt && ln -s ${host} /hostlink\nRUN --mount=type=cache,target=/mnt/${TAG}/c --mount=type=bind,source=file,target=/hostlink/y/bind/${TAG} sh -c 'echo in > /mnt/${TAG}/c/f && ls /${TAG}/c'\n`,
    );
    // Docker resolves the target inside the rootfs too; success or a clear failure are both
    // fine, as long as the host is untouched.
    expect(r.stderr).not.toMatch(/^\s+at /m);
    expectHostUntouched();
    await verify();
  });

  it('a step that replaces its own mount target with a link while mounted: teardown stays in the store', async () => {
    const r = await build(
      'target-swap',
      `FROM test/base:1\nRUN --mount=type=cache,id=swap,target=/data --mount=type=tmpfs,target=/t/mp sh -c 'mv /data /data.old; rm -rf /data/* /t; ln -s ${host}/data /data; ln -s ${host} /t; mv /t /t2; ln -s ${host}/y /t; true'\n`,
    );
    expect(r.code, r.stderr).toBe(0);
    expectHostUntouched();
    const prune = await kiln(store.root, ['prune', '-a', '-f']);
    expect(prune.code, prune.stderr).toBe(0);
    expectHostUntouched();
    await verify();
  });
});
