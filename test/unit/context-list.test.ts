import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RACY_MS } from '../../src/sources/checksum.js';

// Counts the attribute lookups the client makes: an unchanged context must cost a stat per entry.
const lookups = vi.hoisted(() => ({ paths: [] as string[] }));
vi.mock('../../cache/overlay.js', async (original) => {
  const real = await original<typeof import('../../cache/overlay.js')>();
  return {
    ...real,
    contentXattrs: (path: string) => {
      lookups.paths.push(path);
      return real.contentXattrs(path);
    },
  };
});
const { listContext } = await import('../../src/daemon/context-list.js');

describe('the client’s list of a context for kiln serve', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = mkdtempSync('/dev/shm/kiln-context-list-');
    vi.stubEnv('XDG_CACHE_HOME', join(tmp, 'cache'));
  });
  afterEach(() => {
    vi.unstubAllEnvs();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('lists the root first as ".", and an unchanged context again from its memo alone', async () => {
    const ctx = join(tmp, 'ctx');
    mkdirSync(join(ctx, 'sub'), { recursive: true });
    chmodSync(ctx, 0o750);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM scratch\n');
    writeFileSync(join(ctx, 'sub', 'f'), 'f\n');
    // Entries younger than this are not memoised (a change within the clock's granularity).
    await new Promise((r) => setTimeout(r, RACY_MS + 100));
    const first = await listContext(ctx, {});
    expect(first.entries.map((e) => e.path)).toEqual(['.', 'Dockerfile', 'sub', 'sub/f']);
    expect(first.entries[0]).toMatchObject({ type: 'dir', mode: 0o750, uid: process.getuid!() });
    expect(lookups.paths.length).toBe(4);
    lookups.paths.length = 0;
    const again = await listContext(ctx, {});
    expect(again.entries).toEqual(first.entries);
    expect(lookups.paths).toEqual([]);
  }, 10_000);
});
