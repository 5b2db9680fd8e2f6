import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, kilnContainers, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

const STACK = /^\s+at .*\.js:\d+/m;

describe('the kiln command line', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: { path: string; cleanup: () => Promise<void> };
  let ctx: string;
  let imageId: string;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-cli-');
    ctx = join(work.path, 'ctx');
    mkdirSync(ctx);
    writeFileSync(join(ctx, 'Dockerfile'), 'FROM test/base:1\nENV GREETING=hi\nRUN echo built > /built\n');
    writeFileSync(join(ctx, 'Dockerfile.fail'), 'FROM test/base:1\nRUN echo before\nRUN echo out-42 >&2 && \\\n  false\nCMD ["sh"]\n');
    const r = await kiln(root, ['build', '-q', '-t', 'test/app:1', '--label', 'org.example.team=build', '--metadata-file', join(work.path, 'meta.json'), ctx]);
    expect(r.stderr).toBe('');
    imageId = r.stdout.trim();
  });
  afterAll(async () => {
    await work.cleanup();
    await cleanupStore();
  });

  describe('build', () => {
    it('-q prints only the image ID on stdout; --metadata-file writes what buildx writes', async () => {
      expect(imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
      const meta = JSON.parse(readFileSync(join(work.path, 'meta.json'), 'utf8')) as Record<string, unknown>;
      const inspect = JSON.parse((await kiln(root, ['inspect', 'test/app:1'])).stdout) as { Id: string; Descriptor: { digest: string; size: number }; Config: { Labels: Record<string, string> } }[];
      expect(meta['containerimage.config.digest']).toBe(imageId);
      expect(meta['containerimage.digest']).toBe(inspect[0]!.Descriptor.digest);
      expect(meta['containerimage.descriptor']).toEqual({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: inspect[0]!.Descriptor.digest, size: inspect[0]!.Descriptor.size });
      expect(meta['image.name']).toBe('docker.io/test/app:1');
      expect(inspect[0]!.Config.Labels).toEqual({ 'org.example.team': 'build' });
    });

    it('plain progress is BuildKit\'s format, line for line', async () => {
      const plainId = (await kiln(root, ['build', '-q', ctx])).stdout.trim();
      const r = await kiln(root, ['build', '--progress', 'plain', ctx]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('');
      // Durations depend on the machine's load: the format is pinned, the figure is not.
      expect(r.stderr.replace(/ DONE \d+\.\ds$/gm, ' DONE 0.0s')).toBe(
        [
          '#1 [internal] load build definition from Dockerfile',
          '#1 DONE 0.0s',
          '',
          '#2 [internal] load .dockerignore',
          '#2 DONE 0.0s',
          '',
          '#3 [1/2] FROM test/base:1',
          '#3 DONE 0.0s',
          '',
          '#4 [2/2] RUN echo built > /built',
          '#4 CACHED',
          '',
          '#5 exporting to image',
          '#5 DONE 0.0s',
          '',
          `Built ${plainId}`,
          '',
        ].join('\n'),
      );
    });

    it('rawjson is one JSON event a line: the solver\'s events, then the result', async () => {
      const plainId = (await kiln(root, ['build', '-q', ctx])).stdout.trim();
      const r = await kiln(root, ['build', '--progress', 'rawjson', ctx]);
      expect(r.code).toBe(0);
      const events = r.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(events.map((e) => `${e.type} ${e.id ?? ''}`)).toEqual([
        'vertex.start 1', 'vertex.done 1', 'vertex.start 2', 'vertex.done 2', 'vertex.start 3', 'vertex.done 3',
        'vertex.start 4', 'vertex.cached 4', 'vertex.start 5', 'vertex.done 5', 'result ',
      ]);
      expect(events[6]).toMatchObject({ type: 'vertex.start', id: 4, name: '[2/2] RUN echo built > /built', kind: 'exec' });
      expect(events.at(-1)).toEqual({ type: 'result', imageId: plainId, tags: [] });
    });

    it('KILN_PROGRESS picks the mode; the flag wins over it', async () => {
      const raw = await kiln(root, ['build', ctx], { env: { KILN_PROGRESS: 'rawjson' } });
      expect(raw.stderr.split('\n')[0]).toMatch(/^\{"type":"vertex.start"/);
      const quiet = await kiln(root, ['build', '--progress', 'quiet', ctx], { env: { KILN_PROGRESS: 'rawjson' } });
      expect(quiet.stderr).toBe('');
      expect(quiet.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
      const bad = await kiln(root, ['build', ctx], { env: { KILN_PROGRESS: 'fancy' } });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('Invalid KILN_PROGRESS "fancy": expected auto, tty, plain, rawjson or quiet');
    });

    it('a failing step shows the step, the Dockerfile around it and its last output in every mode, exit 1', async () => {
      const file = join(ctx, 'Dockerfile.fail');
      const excerpt = ' 1 |     FROM test/base:1\n 2 |     RUN echo before\n 3 | >>> RUN echo out-42 >&2 && \\\n 4 | >>>   false\n 5 |     CMD ["sh"]\n';
      for (const mode of ['plain', 'quiet']) {
        const r = await kiln(root, ['build', '--progress', mode, '-f', file, ctx]);
        expect(r.code).toBe(1);
        expect(r.stdout).toBe('');
        expect(r.stderr).toContain('error: step [3/3] RUN echo out-42 >&2 &&   false failed at Dockerfile.fail:3\n--------------------\n');
        expect(r.stderr).toContain(excerpt);
        expect(r.stderr).toContain('last lines of its output:\n  out-42\n');
        expect(r.stderr).toMatch(/exit code 1\n$/);
        expect(r.stderr).not.toMatch(STACK);
      }
      const raw = await kiln(root, ['build', '--progress', 'rawjson', '-f', file, ctx]);
      expect(raw.code).toBe(1);
      const last = JSON.parse(raw.stderr.trimEnd().split('\n').at(-1)!) as Record<string, unknown>;
      expect(last).toMatchObject({ type: 'error', code: 'STEP_FAILED', exitCode: 1, step: '[3/3] RUN echo out-42 >&2 &&   false', location: { file: 'Dockerfile.fail', line: 3 }, tail: ['out-42'] });
      expect((last.excerpt as string[]).join('\n')).toBe(excerpt.trimEnd());
      expect(mountsUnder(root)).toEqual([]);
      expect(kilnContainers(root)).toEqual([]);
    });

    it('lint warnings are listed at the end', async () => {
      writeFileSync(join(ctx, 'Dockerfile.warn'), 'FROM test/base:1\nMAINTAINER someone\nRUN true\n');
      const r = await kiln(root, ['build', '--progress', 'plain', '-f', join(ctx, 'Dockerfile.warn'), ctx]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/\n1 warning found:\n - MaintainerDeprecated: .*\(Dockerfile.warn:2\)\n\nBuilt sha256:/);
    });

    it('flags the engine cannot honour are refused by name; malformed ones are usage errors', async () => {
      const cases: [string[], number, string][] = [
        [['--platform', 'linux/arm64'], 1, 'Cannot build for platform "linux/arm64": Kiln builds for linux/amd64 only'],
        [['--platform', 'arm64'], 2, 'Invalid platform "arm64"'],
        [['--add-host', 'nonsense'], 2, 'Invalid --add-host "nonsense": expected HOST:IP'],
        [['--add-host', 'db:10.0.0.300'], 2, 'Invalid --add-host "db:10.0.0.300": "10.0.0.300" is not an IP address'],
        [['--shm-size', 'big'], 2, 'Invalid --shm-size "big"'],
        [['--ulimit', 'nofile'], 2, 'Invalid --ulimit "nofile"'],
        [['--ulimit', 'files=10'], 2, 'Invalid --ulimit "files=10": unknown limit "files"'],
        [['--ulimit', 'nofile=2048:1024'], 2, 'the soft limit 2048 is above the hard limit 1024'],
        [['--ulimit', 'nofile=99999999'], 1, 'Cannot set --ulimit nofile to 99999999: the hard limit of this machine is'],
        [['--network', 'bridge'], 2, 'Invalid --network "bridge"'],
        [['--progress', 'fancy'], 2, 'Invalid --progress "fancy"'],
        [['--frobnicate'], 2, 'Unknown flag "--frobnicate" for "kiln build"'],
        [['-t', 'Bad:Tag!'], 2, 'Invalid reference "Bad:Tag!"'],
      ];
      for (const [flags, code, message] of cases) {
        const r = await kiln(root, ['build', ...flags, ctx]);
        expect({ flags, code: r.code }).toEqual({ flags, code });
        expect(r.stderr).toContain(message);
        expect(r.stderr).not.toMatch(STACK);
      }
      const ok = await kiln(root, ['build', '-q', '--platform', 'linux/amd64', '--shm-size', '64m', '--network', 'default', ctx]);
      expect(ok.code).toBe(0);
    });

    it('--help lists the flags and examples', async () => {
      const r = await kiln(root, ['build', '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('--progress MODE');
      expect(r.stdout).toContain('--metadata-file FILE');
      expect(r.stdout).toContain('Examples:\n  kiln build -t app:1 .');
    });
  });

  describe('inspect', () => {
    it('prints docker inspect\'s fields as JSON, and Go-template fields with --format', async () => {
      const all = JSON.parse((await kiln(root, ['inspect', 'test/app:1'])).stdout) as Record<string, unknown>[];
      expect(all).toHaveLength(1);
      expect(all[0]).toMatchObject({ Id: imageId, RepoTags: ['test/app:1'], Os: 'linux', Architecture: 'amd64', RootFS: { Type: 'layers' } });
      expect((all[0]!.Manifest as { layers: unknown[] }).layers).toHaveLength(2);
      const env = await kiln(root, ['inspect', '--format', '{{.Config.Env}}', 'test/app:1']);
      expect(env).toEqual({ code: 0, stdout: '[PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin GREETING=hi]\n', stderr: '' });
      const label = await kiln(root, ['inspect', '-f', '{{index .Config.Labels "org.example.team"}} {{len .RootFS.Layers}}', imageId.slice(7, 19)]);
      expect(label.stdout).toBe('build 2\n');
      const json = await kiln(root, ['inspect', '--format', 'json', 'test/app:1', 'test/base:1']);
      expect(json.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as { RepoTags: string[] }).RepoTags)).toEqual([['test/app:1'], ['test/base:1']]);
    });

    it('bad input: unknown image exit 1, malformed reference or format exit 2', async () => {
      const unknown = await kiln(root, ['inspect', 'test/nope:1']);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toContain('No such image "test/nope:1" in the store');
      const some = await kiln(root, ['inspect', '-f', '{{.Id}}', 'test/app:1', 'test/nope:1']);
      expect(some.code).toBe(1);
      expect(some.stdout).toBe(`${imageId}\n`);
      const bad = await kiln(root, ['inspect', 'Not A Ref']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('Invalid reference "Not A Ref"');
      const format = await kiln(root, ['inspect', '-f', '{{.Confg}}', 'test/app:1']);
      expect(format.code).toBe(2);
      expect(format.stderr).toContain('field "Confg" does not exist');
    });
  });

  describe('history', () => {
    it('lists the steps newest first like docker history, cut unless --no-trunc', async () => {
      const r = await kiln(root, ['history', 'test/app:1']);
      expect(r.code).toBe(0);
      const lines = r.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^IMAGE {10}CREATED +CREATED BY +SIZE +COMMENT$/);
      expect(lines[1]).toMatch(new RegExp(`^${imageId.slice(7, 19)}   \\S.* ago +RUN /bin/sh -c echo built > /built # buildkit +\\d+(\\.\\d+)?k?B +buildkit.dockerfile.v0$`));
      expect(lines[2]).toMatch(/^<missing> +.* ago +ENV GREETING=hi +0B +buildkit.dockerfile.v0$/);
      expect(lines).toHaveLength(4);
      // Columns line up: every row starts its CREATED BY where the header does.
      const col = lines[0]!.indexOf('CREATED BY');
      for (const l of lines.slice(1)) expect(l[col - 1]).toBe(' ');
      const full = await kiln(root, ['history', '--no-trunc', 'test/app:1']);
      expect(full.stdout.split('\n')[1]).toMatch(new RegExp(`^${imageId} `));
      expect((await kiln(root, ['history', '-q', 'test/app:1'])).stdout).toBe(`${imageId.slice(7, 19)}\n`);
    });

    it('bad input', async () => {
      expect((await kiln(root, ['history', 'test/nope:1'])).code).toBe(1);
      expect((await kiln(root, ['history', 'UPPER/case'])).code).toBe(2);
      expect((await kiln(root, ['history'])).code).toBe(2);
    });
  });

  describe('rmi', () => {
    it('untags a name, removes an image with its last name, refuses what is still needed unless -f', async () => {
      const made = await kiln(root, ['build', '-q', '-t', 'test/rm:1', '-t', 'test/rm:2', '--build-arg', 'X=rm', '--label', 'rm=1', ctx]);
      const id = made.stdout.trim();
      const byId = await kiln(root, ['rmi', id.slice(7, 19)]);
      expect(byId.code).toBe(1);
      expect(byId.stderr).toContain(`Cannot remove image "${id.slice(7, 19)}": it is tagged as "test/rm:1", "test/rm:2"`);
      expect(await kiln(root, ['rmi', 'test/rm:2'])).toEqual({ code: 0, stdout: 'Untagged: test/rm:2\n', stderr: '' });
      expect(await kiln(root, ['rmi', 'test/rm:1'])).toEqual({ code: 0, stdout: `Untagged: test/rm:1\nDeleted: ${id}\n`, stderr: '' });
      expect((await kiln(root, ['images'])).stdout).not.toContain(id.slice(7, 19));
      // test/app:1 is built on test/base:1.
      const base = await kiln(root, ['rmi', 'test/base:1']);
      expect(base.code).toBe(1);
      expect(base.stderr).toMatch(/Cannot remove image "test\/base:1": image [0-9a-f]{12} \(.*\) is built on it/);
      expect(base.stderr).toContain('kiln rmi -f test/base:1');
      const tagged = await kiln(root, ['build', '-q', '-t', 'test/rm:3', '--label', 'rm=3', ctx]);
      const forced = await kiln(root, ['rmi', '-f', tagged.stdout.trim()]);
      expect(forced).toEqual({ code: 0, stdout: `Untagged: test/rm:3\nDeleted: ${tagged.stdout.trim()}\n`, stderr: '' });
      // What the remaining images need is still there.
      expect((await kiln(root, ['run', '--rm', 'test/app:1', 'cat', '/built'])).stdout).toBe('built\n');
    });

    it('bad input: unknown image exit 1, malformed reference or unknown flag exit 2', async () => {
      const unknown = await kiln(root, ['rmi', 'test/nope:1']);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toContain('No such image "test/nope:1" in the store');
      expect((await kiln(root, ['rmi', 'bad ref'])).code).toBe(2);
      expect((await kiln(root, ['rmi', '--purge', 'test/app:1'])).code).toBe(2);
    });
  });

  describe('info, version, completion, debug graph', () => {
    it('info shows the store, counts, runtime, driver and GC policy', async () => {
      const r = await kiln(root, ['info']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(` Root:            ${root}\n`);
      expect(r.stdout).toMatch(/ Images: +\d+ \(\d+ tags?\)\n/);
      expect(r.stdout).toMatch(/^Runtime: +runc version \d/m);
      expect(r.stdout).toContain('Storage driver:   overlay\n');
      const json = JSON.parse((await kiln(root, ['info', '--format', 'json'], { env: { KILN_GC_KEEP_STORAGE: '512MB' } })).stdout) as { store: { records: { images: number } }; gc: { keepStorage: number } };
      expect(json.store.records.images).toBeGreaterThanOrEqual(2);
      expect(json.gc.keepStorage).toBe(512e6);
      expect((await kiln(root, ['info', 'extra'])).code).toBe(2);
    });

    it('version names the client, API, runtime and store', async () => {
      const r = await kiln(root, ['version']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Client:\n Version: +\d+\.\d+\.\d+\n API version: +v\d+\n Node: +v\d+/);
      expect(r.stdout).toMatch(/\nEngine:\n Runtime: +runc version \d.*\n Store: +.*\n$/);
      expect(r.stdout).toContain(`Store:        ${root}`);
      const json = JSON.parse((await kiln(root, ['version', '-f', 'json'])).stdout) as { engine: { store: string } };
      expect(json.engine.store).toBe(root);
      expect((await kiln(root, ['version', '-f', 'yaml'])).code).toBe(2);
    });

    it('completion prints scripts bash accepts; an unknown shell is a usage error', async () => {
      const bash = await kiln(root, ['completion', 'bash']);
      expect(bash.code).toBe(0);
      expect(bash.stdout).toContain('complete -F _kiln kiln');
      expect(bash.stdout).toMatch(/ build\) flags="[^"]*--metadata-file/);
      const zsh = await kiln(root, ['completion', 'zsh']);
      expect(zsh.stdout.startsWith('#compdef kiln\n')).toBe(true);
      const fish = await kiln(root, ['completion', 'fish']);
      expect(fish.code).toBe(2);
      expect(fish.stderr).toContain('Unknown shell "fish": expected bash or zsh');
    });

    it('debug graph --format dot draws stages as clusters and shades what is cached', async () => {
      writeFileSync(join(ctx, 'Dockerfile.multi'), 'FROM test/base:1 AS build\nENV GREETING=hi\nRUN echo built > /built\nFROM test/base:1\nCOPY --from=build /built /copied\nRUN echo new-step\n');
      const r = await kiln(root, ['debug', 'graph', '--format', 'dot', '-f', join(ctx, 'Dockerfile.multi'), ctx]);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^digraph kiln \{\n/);
      expect(r.stdout).toContain('label="stage build";');
      expect(r.stdout).toMatch(/\[label="\[build 2\/2\] RUN echo built > \/built\\nexec \(cached\)", style="rounded,filled"/);
      expect(r.stdout).toMatch(/\[label="\[stage-1 3\/3\] RUN echo new-step\\nexec"\];/);
      expect(r.stdout).toMatch(/"[0-9a-f]{12}" -> "[0-9a-f]{12}";/);
      expect((await kiln(root, ['debug', 'graph', '--format', 'svg', ctx])).code).toBe(2);
    });

    it('debug graph --format dot shades a step cached under SOURCE_DATE_EPOCH as a build with the same epoch left it', async () => {
      writeFileSync(join(ctx, 'Dockerfile.epoch'), 'FROM test/base:1\nRUN echo epoch > /epoch\n');
      const f = ['-f', join(ctx, 'Dockerfile.epoch')];
      const built = await kiln(root, ['build', '-q', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', ...f, ctx]);
      expect(built.code, built.stderr).toBe(0);
      const same = await kiln(root, ['debug', 'graph', '--format', 'dot', '--build-arg', 'SOURCE_DATE_EPOCH=1700000000', ...f, ctx]);
      expect(same.stdout).toMatch(/\[label="\[2\/2\] RUN echo epoch > \/epoch\\nexec \(cached\)"/);
      // Another epoch is another key, as the solver has it: that step would run.
      const other = await kiln(root, ['debug', 'graph', '--format', 'dot', '--build-arg', 'SOURCE_DATE_EPOCH=1700000001', ...f, ctx]);
      expect(other.stdout).toMatch(/\[label="\[2\/2\] RUN echo epoch > \/epoch\\nexec"\];/);
    });
  });

  describe('exit codes and usage', () => {
    it('unknown command 2, no command 2, --help 0, run passes the container\'s code and uses 125 for its own', async () => {
      const unknown = await kiln(root, ['frobnicate']);
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toContain('Unknown command "frobnicate"');
      expect((await kiln(root, [])).code).toBe(2);
      const help = await kiln(root, ['--help']);
      expect(help.code).toBe(0);
      for (const c of ['inspect', 'history', 'rmi', 'info', 'completion', 'serve']) expect(help.stdout).toMatch(new RegExp(`^  ${c} +\\S`, 'm'));
      // `-h` and `kiln help CMD` are `--help`, as docker's.
      for (const argv of [['build', '-h'], ['help', 'build'], ['build', '--help']]) {
        const h = await kiln(root, argv);
        expect({ argv, code: h.code }).toEqual({ argv, code: 0 });
        expect(h.stdout).toMatch(/^Usage: kiln build \[OPTIONS\] CONTEXT/m);
      }
      for (const c of ['inspect', 'history', 'rmi', 'info', 'completion', 'version']) {
        const h = await kiln(root, [c, '--help']);
        expect({ c, code: h.code }).toEqual({ c, code: 0 });
        expect(h.stdout).toContain('Examples:');
      }
      expect((await kiln(root, ['run', '--rm', 'test/app:1', 'sh', '-c', 'exit 7'])).code).toBe(7);
      expect((await kiln(root, ['run', '--rm', 'test/nope:1'])).code).toBe(125);
    });
  });
});
