import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/** Containers whose bundle lives in this test's store (other suites may run at the same time). */
function containersOf(store: string): string[] {
  const list = JSON.parse(execFileSync('runc', ['list', '--format', 'json'], { encoding: 'utf8' }) || '[]') as { id: string; bundle: string }[] | null;
  return (list ?? []).filter((c) => c.bundle.startsWith(`${store}/`)).map((c) => c.id);
}

interface Config {
  config: Record<string, unknown> & { Healthcheck?: unknown; OnBuild?: string[] | null };
  history: { created_by: string; empty_layer?: boolean }[];
  rootfs: { diff_ids: string[] };
}

describe('the Dockerfile frontend through runc', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let ctx: string;

  const write = (name: string, lines: string[]) => writeFileSync(join(ctx, name), `${lines.join('\n')}\n`);
  const build = (file: string, ...args: string[]) => kiln(root, ['build', '--progress', 'plain', '-f', join(ctx, file), ...args, ctx]);
  const run = (image: string, script: string) => kiln(root, ['run', '--rm', '--entrypoint', '', image, 'sh', '-c', script]);
  const config = async (file: string, ...args: string[]): Promise<Config> => {
    const tar = join(work.path, `${file}.tar`);
    const r = await kiln(root, ['build', '-q', '-f', join(ctx, file), '-o', `type=oci,dest=${tar}`, ...args, ctx]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(execFileSync('skopeo', ['inspect', '--config', '--raw', `oci-archive:${tar}`], { encoding: 'utf8' })) as Config;
  };

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir();
    ctx = join(work.path, 'ctx');
    mkdirSync(join(ctx, 'src/app/lib'), { recursive: true });
    mkdirSync(join(ctx, 'src/docs'), { recursive: true });
    writeFileSync(join(ctx, 'src/app/main.c'), 'int main;\n');
    writeFileSync(join(ctx, 'src/app/lib/util.c'), 'int util;\n');
    writeFileSync(join(ctx, 'src/app/notes.md'), 'notes\n');
    writeFileSync(join(ctx, 'src/docs/guide.md'), 'guide\n');
    writeFileSync(join(ctx, 'tool.sh'), '#!/bin/sh\necho tool\n');
    execFileSync('chmod', ['644', join(ctx, 'tool.sh')]);
    writeFileSync(join(ctx, 'secret.txt'), 'secret\n');
  });

  afterAll(async () => {
    await work?.cleanup();
    await cleanupStore?.();
  });

  it('runs RUN heredocs as scripts, through the shell, with <<- and quoted delimiters', async () => {
    write('Dockerfile.heredoc', [
      'FROM test/base:1',
      'ENV WHO=world',
      'RUN <<EOF',
      'echo "script for $WHO" > /one',
      'echo second line >> /one',
      'EOF',
      'RUN cat <<-INNER > /two && cat <<"RAW" > /three',
      '\thello $WHO',
      '\tINNER',
      'kept $WHO',
      'RAW',
      'COPY <<A <<-"B" /files/',
      'a says ${WHO}',
      'A',
      '\tb says ${WHO}',
      '\tB',
      'COPY --chmod=u+x,go-r <<EOF /bin/hello',
      '#!/bin/sh',
      'echo hello',
      'EOF',
    ]);
    const r = await build('Dockerfile.heredoc', '-t', 'test/heredoc:1');
    expect(r.code, r.stderr).toBe(0);
    const out = await run('test/heredoc:1', 'cat /one /two /three /files/A /files/B; stat -c %a /files/A /bin/hello; hello');
    expect(out.stderr).toBe('');
    expect(out.stdout).toBe('script for world\nsecond line\nhello world\nkept $WHO\na says world\nb says ${WHO}\n644\n700\nhello\n');
  });

  it('copies with --parents, --exclude, symbolic --chmod and --link', async () => {
    write('Dockerfile.copy', [
      'FROM test/base:1',
      'COPY --parents src/app/*.c src/app/lib/ /keep/',
      'COPY --parents ./src/./app/lib/util.c /pivot/',
      'COPY --exclude=*.md --exclude=lib src/app /noext/',
      'COPY --link --chmod=a+x tool.sh /usr/local/bin/',
      'COPY --chmod=go= tool.sh /private.sh',
    ]);
    const r = await build('Dockerfile.copy', '-t', 'test/copy:1');
    expect(r.code, r.stderr).toBe(0);
    const out = await run('test/copy:1', 'cd /keep && find . -type f | sort; cd /pivot && find . -type f; ls /noext; stat -c %a /usr/local/bin/tool.sh /private.sh');
    expect(out.stdout).toBe('./src/app/lib/util.c\n./src/app/main.c\n./app/lib/util.c\nmain.c\n755\n600\n');
  });

  it('writes HEALTHCHECK, ONBUILD, EXPOSE, VOLUME and history as Docker does, and runs ONBUILD in a child', async () => {
    write('Dockerfile.parent', [
      'FROM test/base:1',
      'HEALTHCHECK --interval=5s --timeout=3s --start-period=1m30s --retries=4 CMD ["hi"]',
      'ONBUILD RUN echo triggered > /tmp/onbuild',
      'ONBUILD ENV FROM_TRIGGER=yes',
      'EXPOSE 8080/tcp 53/udp',
      'VOLUME /data',
      'USER dev',
    ]);
    const parent = await config('Dockerfile.parent', '-t', 'test/parent:1');
    expect(parent.config.Healthcheck).toEqual({ Test: ['CMD', 'hi'], Interval: 5e9, Timeout: 3e9, StartPeriod: 90e9, Retries: 4 });
    expect(parent.config.OnBuild).toEqual(['RUN echo triggered > /tmp/onbuild', 'ENV FROM_TRIGGER=yes']);
    expect(parent.config.ExposedPorts).toEqual({ '8080/tcp': {}, '53/udp': {} });
    expect(parent.config.Volumes).toEqual({ '/data': {} });
    const added = parent.history.slice(-6, -1);
    expect(added.map((h) => h.created_by)).toEqual([
      'HEALTHCHECK &{[CMD hi] 5s 3s 1m30s 0s 4}',
      'ONBUILD RUN echo triggered > /tmp/onbuild',
      'ONBUILD ENV FROM_TRIGGER=yes',
      'EXPOSE map[8080/tcp:{} 53/udp:{}]',
      'VOLUME [/data]',
    ]);
    expect(added.every((h) => h.empty_layer === true)).toBe(true);

    write('Dockerfile.child', ['FROM test/parent:1', 'USER root', 'RUN cat /tmp/onbuild > /seen && echo "$FROM_TRIGGER" >> /seen', 'HEALTHCHECK NONE']);
    const child = await config('Dockerfile.child', '-t', 'test/child:1');
    expect(child.config.OnBuild ?? null).toBeNull();
    expect(child.config.Healthcheck).toEqual({ Test: ['NONE'] });
    expect(child.config.Env).toContain('FROM_TRIGGER=yes');
    const out = await run('test/child:1', 'cat /seen');
    expect(out.stdout).toBe('triggered\nyes\n');
  });

  it('fills in platform args, keeps proxy args out of history and reports unused build args', async () => {
    write('Dockerfile.args', [
      'ARG BASE=test/base:1',
      'FROM ${BASE}',
      'ARG TARGETPLATFORM',
      'ARG TARGETARCH',
      'ARG TARGETSTAGE',
      'ARG VERSION=1',
      'RUN echo "$TARGETPLATFORM $TARGETARCH $TARGETSTAGE $VERSION $http_proxy" > /args',
    ]);
    const cfg = await config('Dockerfile.args', '--build-arg', 'http_proxy=http://proxy.invalid:3128', '--build-arg', 'VERSION=2');
    const runEntry = cfg.history.find((h) => h.created_by.startsWith('RUN '))!;
    expect(runEntry.created_by).toContain('VERSION=2');
    expect(runEntry.created_by).not.toContain('proxy.invalid');
    const r = await build('Dockerfile.args', '-t', 'test/args:1', '--build-arg', 'http_proxy=http://proxy.invalid:3128', '--build-arg', 'UNUSED=1');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Build argument "UNUSED" was not consumed by any ARG');
    expect((await run('test/args:1', 'cat /args')).stdout).toBe('linux/amd64 amd64  1 http://proxy.invalid:3128\n');
  });

  it('builds only the stages the target needs', async () => {
    write('Dockerfile.target', [
      'FROM test/base:1 AS broken',
      'RUN exit 3',
      'FROM test/base:1 AS dep',
      'RUN echo dep > /dep',
      'FROM test/base:1 AS app',
      'COPY --from=dep /dep /dep',
      'FROM broken',
    ]);
    const r = await build('Dockerfile.target', '--target', 'app', '-t', 'test/target:1');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('exit 3');
    expect((await run('test/target:1', 'cat /dep')).stdout).toBe('dep\n');
  });

  it('reads the ignore file beside the Dockerfile before the context one', async () => {
    writeFileSync(join(ctx, '.dockerignore'), 'tool.sh\n');
    writeFileSync(join(ctx, 'Dockerfile.ignore.dockerignore'), 'secret.txt\n');
    write('Dockerfile.ignore', ['FROM test/base:1', 'COPY . /ctx/']);
    const r = await build('Dockerfile.ignore', '-t', 'test/ignore:1');
    expect(r.code, r.stderr).toBe(0);
    expect((await run('test/ignore:1', 'test -e /ctx/secret.txt || echo no-secret; test -e /ctx/tool.sh && echo tool')).stdout).toBe('no-secret\ntool\n');
  });

  it('checks without building: rule names, locations, skip and error directives', async () => {
    write('Dockerfile.lint', ['FROM test/base:1 as Builder', 'MAINTAINER someone', 'ENV key value', 'CMD echo hi', 'CMD ["sh"]', 'WORKDIR app', 'run true']);
    const r = await kiln(root, ['build', '--check', '-f', join(ctx, 'Dockerfile.lint'), ctx]);
    expect(r.code, r.stderr).toBe(0);
    for (const [rule, line] of [
      ['FromAsCasing', 1], ['StageNameCasing', 1], ['MaintainerDeprecated', 2], ['LegacyKeyValueFormat', 3],
      ['JSONArgsRecommended', 4], ['MultipleInstructionsDisallowed', 4], ['WorkdirRelativePath', 6], ['ConsistentInstructionCasing', 7],
    ] as const) {
      expect(r.stderr, rule).toContain(`Dockerfile.lint:${line}: ${rule}:`);
    }
    expect(r.stderr).not.toContain('#1 ');
    write('Dockerfile.strict', ['# check=skip=JSONArgsRecommended;error=true', 'FROM test/base:1 as builder', 'CMD echo hi']);
    const strict = await kiln(root, ['build', '--check', '-f', join(ctx, 'Dockerfile.strict'), ctx]);
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain('FromAsCasing');
    expect(strict.stderr).not.toContain('JSONArgsRecommended');
    const built = await build('Dockerfile.strict');
    expect(built.code).toBe(1);
    expect(built.stderr).toContain('check=error=true');
  });

  it('leaves no mounts or containers behind', () => {
    expect(mountsUnder(root)).toEqual([]);
    expect(containersOf(root)).toEqual([]);
  });
});
