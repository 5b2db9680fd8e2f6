import { mkdirSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/** What a RUN step can reach: descriptors, network, privileges. */
describe('containers of RUN steps', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let ctx: string;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-sec-run-');
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
  });

  afterAll(async () => {
    await cleanupStore?.();
    await work?.cleanup();
  });

  const build = (dockerfile: string, args: string[] = []) => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    return kiln(root, ['build', '--progress', 'plain', '--no-cache', ...args, ctx]);
  };

  it('passes no host file descriptor beyond stdio into a RUN', async () => {
    // A descriptor the parent holds open must not be inherited through kiln and runc.
    const held = openSync(join(work.path, 'held'), 'w');
    try {
      const r = await build('FROM test/base:1\nRUN ls /proc/self/fd | sort -n | tr "\\n" " " && echo && for f in /proc/self/fd/*; do readlink $f; done; true\n');
      expect(r.code, r.stderr).toBe(0);
      const out = r.stderr;
      // ls itself opens one descriptor for the directory it lists: 0 1 2 and that one.
      expect(out).toMatch(/#\d+ [\d.]+ 0 1 2 3 \n/);
      expect(out).not.toContain(work.path);
      expect(out).not.toContain(root);
    } finally {
      closeSync(held);
    }
  });

  it('gives --network=none only a loopback and no route', async () => {
    const r = await build('FROM test/base:1\nRUN --network=none sh -c "cat /proc/net/route; ls /sys/class/net; wget -q -T 2 -O- http://1.1.1.1/ && echo REACHED || echo UNREACHABLE"\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('UNREACHABLE');
    expect(r.stderr).not.toContain('REACHED\n');
    // The route table has its header and no entry; the only interface is lo.
    expect(r.stderr).not.toMatch(/#\d+ [\d.]+ (eth|ens|enp|wl)\w*/);
    expect(r.stderr).toMatch(/#\d+ [\d.]+ lo\n/);
  });

  it('refuses --security=insecure without the entitlement and grants it with --allow', async () => {
    const df = 'FROM test/base:1\nRUN --security=insecure sh -c "grep CapEff /proc/self/status"\n';
    const denied = await build(df);
    expect(denied.code).toBe(1);
    expect(denied.stderr).toMatch(/security\.insecure/);
    expect(denied.stderr).not.toMatch(/^\s+at .*\.js:\d+/m);
    const allowed = await build(df, ['--allow', 'security.insecure']);
    expect(allowed.code, allowed.stderr).toBe(0);
    const sandboxed = await build('FROM test/base:1\nRUN sh -c "grep CapEff /proc/self/status"\n');
    const cap = (s: string) => BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(s)![1]}`);
    // Insecure has every capability of this process; the sandbox has Docker's default set only.
    expect(cap(allowed.stderr)).toBeGreaterThan(cap(sandboxed.stderr));
    expect(cap(sandboxed.stderr) & (1n << 21n)).toBe(0n); // CAP_SYS_ADMIN
  });

  it('leaves nothing mounted', () => {
    expect(mountsUnder(root)).toEqual([]);
  });
});
