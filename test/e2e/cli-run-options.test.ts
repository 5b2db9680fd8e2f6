import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

const STACK = /^\s+at .*\.js:\d+/m;
/** This process's limits on open files, which kiln and its containers inherit. */
const [SOFT_NOFILE, HARD_NOFILE] = /^Max open files\s+(\d+)\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))!.slice(1).map(Number) as [number, number];

describe('container options of kiln run and kiln build, through runc', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: { path: string; cleanup: () => Promise<void> };

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-runopts-');
  });
  afterAll(async () => {
    await work.cleanup();
    await cleanupStore();
  });

  /** The RUN step's output lines from plain progress, without the `#N 0.123 ` prefix. */
  const stepOutput = (stderr: string, marker: string) => {
    const id = new RegExp(`^#(\\d+) \\[2/\\d\\] RUN ${marker}`, 'm').exec(stderr)?.[1];
    return stderr.split('\n').flatMap((l) => {
      const m = new RegExp(`^#${id} \\d+\\.\\d{3} (.*)$`).exec(l);
      return m ? [m[1]!] : [];
    });
  };

  describe('kiln run', () => {
    it('-v bind-mounts a host file and directory, read-only with :ro', async () => {
      const dir = join(work.path, 'vol');
      mkdirSync(dir);
      writeFileSync(join(dir, 'note.txt'), 'from the host\n');
      const r = await kiln(root, ['run', '--rm', '-v', `${dir}:/data`, '-v', `${join(dir, 'note.txt')}:/etc/note:ro`, 'test/base:1', 'sh', '-c', 'cat /etc/note; echo written > /data/out; echo x > /etc/note || echo refused']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('from the host\nrefused\n');
      expect(r.stderr).toMatch(/Read-only file system/);
      expect(readFileSync(join(dir, 'out'), 'utf8')).toBe('written\n');
      expect(kilnContainers(root)).toEqual([]);
      expect(mountsUnder(root)).toEqual([]);
    });

    it('--add-host, --ulimit and --shm-size are what the process sees', async () => {
      const r = await kiln(root, ['run', '--rm', '--add-host', 'db:10.1.2.3', '--add-host', 'v6=fd00::1', '--ulimit', 'nofile=1024:2048', '--shm-size', '128m', 'test/base:1', 'sh', '-c', 'cat /etc/hosts; ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1']);
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines.slice(0, 5)).toEqual(['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', '127.0.1.1\tkiln', '10.1.2.3\tdb', 'fd00::1\tv6']);
      expect(lines.slice(5, 7)).toEqual(['1024', '2048']);
      expect(lines[7]).toMatch(/^shm\s+131072\s/);
    });

    it('bad input: a missing host path, a relative container path, a limit above the machine\'s', async () => {
      const cases: [string[], number, string][] = [
        [['-v', `${join(work.path, 'absent')}:/x`], 125, `Cannot bind-mount "${join(work.path, 'absent')}": no such file or directory`],
        [['-v', `${work.path}:relative`], 125, 'the container path "relative" is not absolute'],
        [['-v', `${work.path}:/x:rx`], 125, 'expected HOST:CONTAINER[:ro|rw]'],
        [['--ulimit', `nofile=${HARD_NOFILE + 1}`], 125, `Cannot set --ulimit nofile to ${HARD_NOFILE + 1}: the hard limit of this machine is ${HARD_NOFILE}`],
        [['--add-host', 'db'], 125, 'Invalid --add-host "db": expected HOST:IP'],
      ];
      for (const [flags, code, message] of cases) {
        const r = await kiln(root, ['run', '--rm', ...flags, 'test/base:1', 'true']);
        expect({ flags, code: r.code }).toEqual({ flags, code });
        expect(r.stderr).toContain(message);
        expect(r.stderr).not.toMatch(STACK);
      }
    });
  });

  describe('kiln build', () => {
    it('--add-host, --ulimit, --shm-size and --network none reach every RUN step and its cache key', async () => {
      const ctx = join(work.path, 'ctx');
      mkdirSync(ctx);
      writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN echo probe; cat /etc/hosts; ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1; tail -n +3 /proc/net/dev | wc -l\n');
      const flags = ['--add-host', 'db:10.1.2.3', '--ulimit', 'nofile=512:1024', '--shm-size', '32m', '--network', 'none'];
      const r = await kiln(root, ['build', '--progress', 'plain', ...flags, ctx]);
      expect(r.code, r.stderr).toBe(0);
      const out = stepOutput(r.stderr, 'echo probe');
      expect(out.slice(0, 5)).toEqual(['probe', '127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', '127.0.1.1\tkiln', '10.1.2.3\tdb']);
      expect(out.slice(5, 7)).toEqual(['512', '1024']);
      expect(out[7]).toMatch(/^shm\s+32768\s/);
      // Only the loopback interface: no network.
      expect(out[8]?.trim()).toBe('1');

      const again = await kiln(root, ['build', '--progress', 'plain', ...flags, ctx]);
      expect(again.stderr).toMatch(/^#\d+ CACHED$/m);
      // Without the flags the step is another step, as in BuildKit, where they are part of the exec definition.
      const plain = await kiln(root, ['build', '--progress', 'plain', ctx]);
      expect(plain.code, plain.stderr).toBe(0);
      const defaults = stepOutput(plain.stderr, 'echo probe');
      expect(defaults).not.toContain('10.1.2.3\tdb');
      expect(defaults[4]).toBe(String(SOFT_NOFILE));
      expect(defaults.find((l) => l.startsWith('shm'))).toMatch(/^shm\s+65536\s/);
      expect(Number(defaults.at(-1))).toBeGreaterThan(1);
    });

    it('under --network none, RUN --network=default has none too and RUN --network=host the host\'s', async () => {
      const ctx = join(work.path, 'ctx-net');
      mkdirSync(ctx);
      writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nRUN --network=default echo probe; tail -n +3 /proc/net/dev | wc -l\nRUN --network=host echo host; tail -n +3 /proc/net/dev | wc -l\n');
      const r = await kiln(root, ['build', '--progress', 'plain', '--network', 'none', ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(stepOutput(r.stderr, '--network=default echo probe').at(-1)?.trim()).toBe('1');
      const hostId = /^#(\d+) \[3\/3\] RUN --network=host/m.exec(r.stderr)![1];
      const hostOut = r.stderr.split('\n').filter((l) => l.startsWith(`#${hostId} 0.`) || l.startsWith(`#${hostId} 1.`));
      expect(Number(hostOut.at(-1)!.split(' ').at(-1))).toBeGreaterThan(1);
    });
  });
});
