import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, readFileSync, statSync, writeFileSync, utimesSync, lstatSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, REPO, stepCached, stepRan, storeWithBase, tempDir } from '../helpers/kiln.js';

const FIXTURE = join(REPO, 'fixtures/skeleton');

describe('a multi-stage build through runc', () => {
  let root: string;
  let work: ReturnType<typeof tempDir>;
  let cleanupStore: () => Promise<void>;
  let ctx: string;
  let firstId: string;
  let firstLog: string;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir();
    ctx = join(work.path, 'ctx');
    cpSync(FIXTURE, ctx, { recursive: true });
    const r = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'FLAVOR=spicy', '-t', 'test/app:1', '--iidfile', join(work.path, 'id'), ctx]);
    firstLog = r.stderr;
    expect(r.code, r.stderr).toBe(0);
    firstId = readFileSync(join(work.path, 'id'), 'utf8');
  });

  afterAll(async () => {
    await work.cleanup();
    await cleanupStore();
  });

  it('prints BuildKit-style plain progress', () => {
    expect(firstLog).toMatch(/^#\d+ \[build 2\/4\] WORKDIR \/src$/m);
    expect(firstLog).toMatch(/^#\d+ \[stage-1 5\/7\] RUN rm \/bin\/sed/m);
    expect(firstLog).toMatch(/^#\d+ DONE \d+\.\d+s$/m);
    expect(stepRan(firstLog, 'RUN mkdir -p /dist')).toBe(true);
  });

  it('gives the config digest as image ID and lists the tag', async () => {
    expect(firstId).toMatch(/^sha256:[a-f0-9]{64}$/);
    const images = await kiln(root, ['images']);
    expect(images.code).toBe(0);
    expect(images.stdout).toMatch(/^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE$/m);
    expect(images.stdout).toMatch(new RegExp(`^test/app +1 +${firstId.slice(7, 19)} `, 'm'));
  });

  it('runs the image: ENTRYPOINT + CMD, ENV, the build arg baked into a file', async () => {
    const r = await kiln(root, ['run', '--rm', 'test/app:1']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('mode=prod flavor=spicy\n');
  });

  it('passes the exit code through and stops option parsing at the image', async () => {
    const r = await kiln(root, ['run', '--rm', '--entrypoint', '', 'test/app:1', 'sh', '-c', 'exit 5']);
    expect(r.code).toBe(5);
  });

  it('resolves USER by name and creates a relative WORKDIR', async () => {
    const r = await kiln(root, ['run', '--rm', '--entrypoint', '', 'test/app:1', 'sh', '-c', 'cat /tmp/uid /tmp/pwd; id -un; pwd']);
    expect(r.stdout).toBe('1001\n/relative\ndev\n/relative\n');
  });

  it('keeps owners, modes, hard links and deletions in the layers', async () => {
    const script = [
      'stat -c "%u:%g %a" /etc/app.conf /etc/app-secret.conf /srv/flavor',
      'stat -c %i /etc/app.conf /etc/app.conf.hard | uniq | wc -l',
      'test ! -e /bin/sed && echo sed-gone',
      'test -p /tmp/fifo && echo fifo',
      'cat /srv/web/css/site.css',
    ].join('; ');
    const r = await kiln(root, ['run', '--rm', '--entrypoint', '', 'test/app:1', 'sh', '-c', script]);
    expect(r.stdout).toBe('1001:1001 644\n0:0 640\n0:0 4755\n1\nsed-gone\nfifo\nbody{}\n');
  });

  it('writes the image config as Docker does', async () => {
    const out = tempDir();
    try {
      const tar = join(out.path, 'img.tar');
      const r = await kiln(root, ['build', '-q', '--build-arg', 'FLAVOR=spicy', '-o', `type=oci,dest=${tar}`, ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(firstId);
      const config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${tar}`], { encoding: 'utf8' }));
      expect(config.config.Env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'MODE=prod']);
      expect(config.config.Entrypoint).toEqual(['sh', '-c']);
      expect(config.config.Cmd).toEqual(['echo mode=$MODE flavor=$(cat /srv/flavor)']);
      expect(config.config.User).toBe('dev');
      expect(config.config.WorkingDir).toBe('/relative');
      expect(config.config.Labels).toEqual({ 'org.example.team': 'kiln', 'org.example.tier': 'test' });
      const history = config.history as { created_by: string; empty_layer?: boolean }[];
      expect(history.filter((h) => !h.empty_layer)).toHaveLength(config.rootfs.diff_ids.length);
      expect(history.map((h) => h.created_by)).toContain('ENV MODE=prod');
      expect(history.find((h) => h.created_by === 'ENV MODE=prod')?.empty_layer).toBe(true);
      expect(history.some((h) => /^RUN \/bin\/sh -c rm \/bin\/sed/.test(h.created_by))).toBe(true);
      // base layer + COPY --from + COPY --chown + COPY --chmod + RUN + WORKDIR + RUN
      expect(config.rootfs.diff_ids).toHaveLength(7);
    } finally {
      await out.cleanup();
    }
  });

  it('reuses every step on a no-op rebuild and gives the same image ID', async () => {
    const r = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'FLAVOR=spicy', '--iidfile', join(work.path, 'id2'), ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(work.path, 'id2'), 'utf8')).toBe(firstId);
    for (const step of ['WORKDIR /src', 'COPY web/ ./web/', 'RUN mkdir -p /dist', 'COPY --from=build', 'RUN rm /bin/sed', 'RUN id -u']) {
      expect(stepCached(r.stderr, step), step).toBe(true);
    }
  });

  it('keeps the cache when a file is only touched', async () => {
    const file = join(ctx, 'web/index.html');
    const later = new Date(Date.now() + 60_000);
    utimesSync(file, later, later);
    const r = await kiln(root, ['build', '-q', '--build-arg', 'FLAVOR=spicy', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(firstId);
  });

  it('reruns the COPY of an edited file and what follows, and nothing before it', async () => {
    writeFileSync(join(ctx, 'web/index.html'), '<h1>changed</h1>\n');
    const r = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'FLAVOR=spicy', '--iidfile', join(work.path, 'id3'), ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(stepCached(r.stderr, 'WORKDIR /src')).toBe(true);
    expect(stepRan(r.stderr, 'COPY web/ ./web/')).toBe(true);
    expect(stepRan(r.stderr, 'RUN mkdir -p /dist')).toBe(true);
    expect(stepCached(r.stderr, 'COPY --chown=1001:1001 app.conf')).toBe(false);
    expect(readFileSync(join(work.path, 'id3'), 'utf8')).not.toBe(firstId);
  });

  it('reruns when a build arg changes', async () => {
    const r = await kiln(root, ['build', '--progress', 'plain', '--build-arg', 'FLAVOR=mild', '-t', 'test/app:mild', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(stepCached(r.stderr, 'WORKDIR /src')).toBe(true);
    expect(stepRan(r.stderr, 'RUN mkdir -p /dist')).toBe(true);
    const run = await kiln(root, ['run', '--rm', 'test/app:mild']);
    expect(run.stdout).toBe('mode=prod flavor=mild\n');
  });

  it('reruns everything with --no-cache', async () => {
    const r = await kiln(root, ['build', '--no-cache', '--progress', 'plain', '--build-arg', 'FLAVOR=spicy', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/^#\d+ CACHED$/m);
    expect(stepRan(r.stderr, 'WORKDIR /src')).toBe(true);
  });

  it('exports the final filesystem with type=local', async () => {
    const out = tempDir();
    try {
      const dest = join(out.path, 'fs');
      const r = await kiln(root, ['build', '--build-arg', 'FLAVOR=spicy', '-o', `type=local,dest=${dest}`, ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(dest, 'srv/flavor'), 'utf8')).toBe('spicy\n');
      expect(existsSync(join(dest, 'bin/sed'))).toBe(false);
      expect(lstatSync(join(dest, 'bin/ls')).isSymbolicLink()).toBe(true);
      expect(statSync(join(dest, 'etc/app.conf')).uid).toBe(1001);
    } finally {
      await out.cleanup();
    }
  });

  it('a cached rebuild loads none of the code only running steps need (scripts/bundle.mjs LAZY)', async () => {
    const list = join(work.path, 'modules');
    const preload = join(work.path, 'modules.cjs');
    writeFileSync(preload, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(list)}, [...process.moduleLoadList, ...Object.keys(require.cache)].join('\\n')));\n`);
    const r = await kiln(root, ['build', '-q', '--build-arg', 'FLAVOR=spicy', ctx], { env: { NODE_OPTIONS: `--require ${preload}` } });
    expect(r.code, r.stderr).toBe(0);
    const loaded = readFileSync(list, 'utf8').split('\n');
    expect(loaded).toContain('NativeModule fs');
    for (const m of ['fs/promises', 'zlib', 'child_process', 'https', 'tls', 'readline']) expect(loaded).not.toContain(`NativeModule ${m}`);
    // SQLite's addon is loaded from where npm built it, without the `bindings` package's search.
    expect(loaded.filter((f) => f.endsWith('/better_sqlite3.node'))).toEqual([join(REPO, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node')]);
    expect(loaded.filter((f) => f.includes('/node_modules/bindings/'))).toEqual([]);
  });

  it('reads the Dockerfile from standard input', async () => {
    const out = tempDir();
    try {
      const r = await kiln(root, ['build', '-f', '-', '-o', `type=local,dest=${out.path}/fs`, ctx], { input: 'FROM test/base:1\nRUN echo stdin > /s\n' });
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(out.path, 'fs/s'), 'utf8')).toBe('stdin\n');
    } finally {
      await out.cleanup();
    }
  });

  it('reads the Dockerfile from a pipe, as -f <(...) names one, and refuses a directory', async () => {
    const out = tempDir();
    const fifo = join(out.path, 'Dockerfile.fifo');
    execFileSync('mkfifo', [fifo]);
    // The writer opens the fifo only after a while: the build must wait for it, not read nothing.
    const writer = spawn('sh', ['-c', `sleep 0.3; printf 'FROM test/base:1\\nRUN echo piped > /p\\n' > "$1"`, 'sh', fifo]);
    try {
      const r = await kiln(root, ['build', '-f', fifo, '-o', `type=local,dest=${out.path}/fs`, ctx]);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(out.path, 'fs/p'), 'utf8')).toBe('piped\n');
      mkdirSync(join(out.path, 'dir'));
      const d = await kiln(root, ['build', '-f', join(out.path, 'dir'), ctx]);
      expect(d.code).toBe(1);
      expect(d.stderr).toContain(`The Dockerfile "${join(out.path, 'dir')}" is a directory`);
    } finally {
      writer.kill();
      await out.cleanup();
    }
  });

  it('leaves nothing mounted or running', () => {
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
  });
});

describe('a context of many files', () => {
  let root: string;
  let work: ReturnType<typeof tempDir>;
  let cleanupStore: () => Promise<void>;
  let ctx: string;

  /** `sha256sum` lines of every file the image has below /ctx, as busybox prints them. */
  const listing = (files: Record<string, string>) =>
    Object.keys(files)
      .sort()
      .map((rel) => `${createHash('sha256').update(files[rel]!).digest('hex')}  ./${rel}`)
      .join('\n');

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir();
    ctx = join(work.path, 'ctx');
  });

  afterAll(async () => {
    await work.cleanup();
    await cleanupStore();
  });

  it('copies every file with owner and mode, keeps the base beside it, and recopies after an edit', async () => {
    const expected: Record<string, string> = {};
    for (let d = 0; d < 12; d++) {
      for (let f = 0; f < 100; f++) {
        const rel = `d${d}/f${f}.${f % 25 === 0 ? 'tmp' : 'txt'}`;
        mkdirSync(join(ctx, `d${d}`), { recursive: true });
        writeFileSync(join(ctx, rel), `file ${d}/${f}\n`.repeat(f % 7));
        if (!rel.endsWith('.tmp')) expected[rel] = `file ${d}/${f}\n`.repeat(f % 7);
      }
    }
    mkdirSync(join(ctx, 'etc'));
    writeFileSync(join(ctx, 'etc/extra.conf'), 'extra\n');
    writeFileSync(join(ctx, '.dockerignore'), '**/*.tmp\n');
    writeFileSync(
      join(ctx, 'Dockerfile'),
      [
        'FROM test/base:1',
        'RUN echo before > /before',
        'COPY --chown=1001:1001 --exclude=etc --exclude=Dockerfile --exclude=.dockerignore . /ctx/',
        'COPY etc/ /etc/',
        'RUN cd /ctx && find . -type f | sort | xargs sha256sum > /sums && stat -c "%u:%g %a" d3/f1.txt d11 > /owners',
      ].join('\n'),
    );
    const first = await kiln(root, ['build', '--progress', 'plain', '-t', 'test/many:1', ctx]);
    expect(first.code, first.stderr).toBe(0);
    const show = () => kiln(root, ['run', '--rm', 'test/many:1', 'sh', '-c', 'cat /sums; echo; cat /owners /etc/extra.conf; head -1 /etc/passwd']);
    let r = await show();
    expect(r.stdout).toBe(`${listing(expected)}\n\n1001:1001 644\n1001:1001 755\nextra\nroot:x:0:0:root:/root:/bin/sh\n`);

    writeFileSync(join(ctx, 'd7/f50.txt'), 'edited\n');
    expected['d7/f50.txt'] = 'edited\n';
    const second = await kiln(root, ['build', '--progress', 'plain', '-t', 'test/many:1', ctx]);
    expect(second.code, second.stderr).toBe(0);
    expect(stepCached(second.stderr, 'RUN echo before')).toBe(true);
    expect(stepRan(second.stderr, 'COPY --chown=1001:1001')).toBe(true);
    expect(stepCached(second.stderr, 'COPY etc/ /etc/')).toBe(false);
    r = await show();
    expect(r.stdout).toBe(`${listing(expected)}\n\n1001:1001 644\n1001:1001 755\nextra\nroot:x:0:0:root:/root:/bin/sh\n`);
  });

  it('leaves nothing mounted or running', () => {
    expect(mountsUnder(root)).toEqual([]);
    expect(kilnContainers(root)).toEqual([]);
  });
});
