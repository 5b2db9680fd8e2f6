import { describe, expect, it } from 'vitest';
import { compileDockerfile } from '../../frontend/dockerfile/compile.js';
import type { BuildDefinition, ContainerConfig, ExecOp, FileOp, Vertex } from '../../solver/graph.js';
import { topoSort } from '../../solver/graph.js';
import { fakeResolver } from './fake-resolver.js';

async function compile(text: string, o: { buildArgs?: Record<string, string>; target?: string; check?: boolean; exclude?: string[]; images?: Record<string, ContainerConfig> } = {}): Promise<BuildDefinition & { asked: string[] }> {
  const resolver = fakeResolver(o.images);
  const def = await compileDockerfile({
    dockerfile: text,
    file: 'Dockerfile',
    buildArgs: o.buildArgs ?? {},
    target: o.target,
    check: o.check,
    context: { name: 'context', source: '/ctx', exclude: o.exclude ?? [] },
    platform: { os: 'linux', architecture: 'amd64' },
    resolver,
  });
  return { ...def, asked: resolver.asked };
}

const rootOp = <T>(def: BuildDefinition) => def.root!.op as T;
const rules = (def: BuildDefinition) => def.warnings.map((w) => `${w.rule ?? '-'}@${w.location?.line ?? 0}`);

describe('RUN', () => {
  it('runs a lone heredoc body as the shell script', async () => {
    const def = await compile('FROM base:1\nRUN <<EOF\necho one\necho two\nEOF\n');
    expect(rootOp<ExecOp>(def).args).toEqual(['/bin/sh', '-c', 'echo one\necho two\n']);
  });

  it('gives the shell the command and the bodies when the heredoc feeds a command', async () => {
    const def = await compile('FROM base:1\nRUN cat <<"A" > /a && cat <<-B\nx $HOME\nA\n\ty\n\tB\n');
    expect(rootOp<ExecOp>(def).args).toEqual(['/bin/sh', '-c', 'cat <<"A" > /a && cat <<-B\nx $HOME\nA\ny\nB\n']);
  });

  it('mounts a #! heredoc as an executable file and runs it', async () => {
    const def = await compile('FROM base:1\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n');
    const op = rootOp<ExecOp>(def);
    expect(op.args).toEqual(['/dev/pipes/EOF']);
    expect(op.mounts).toEqual([{ type: 'bind', target: '/dev/pipes', input: 1, source: '/', readwrite: false }]);
    expect(def.root!.inputs[1]!.op).toEqual({ kind: 'file', base: -1, actions: [{ action: 'mkfile', path: '/EOF', mode: 0o755, data: '#!/usr/bin/env python3\nprint(1)\n' }] });
  });

  it('parses --mount, --network and --security into the exec op', async () => {
    const def = await compile([
      'FROM base:1 AS deps',
      'RUN make deps',
      'FROM base:1',
      'RUN --mount=type=cache,target=/root/.cache,sharing=locked,mode=0700,uid=1 --mount=type=bind,from=deps,source=/usr,target=/deps,rw \\',
      '    --mount=type=secret,id=token --mount=type=tmpfs,target=/scratch,size=64m --mount=type=ssh --mount=target=/ctx \\',
      '    --network=none --security=insecure make',
    ].join('\n'));
    const op = rootOp<ExecOp>(def);
    expect(op.network).toBe('none');
    expect(op.security).toBe('insecure');
    expect(op.mounts).toEqual([
      { type: 'cache', target: '/root/.cache', id: '/root/.cache', sharing: 'locked', mode: 0o700, uid: 1, gid: 0 },
      { type: 'bind', target: '/deps', input: 1, source: '/usr', readwrite: true },
      { type: 'secret', id: 'token', target: '/run/secrets/token', required: false, mode: 0o400, uid: 0, gid: 0 },
      { type: 'tmpfs', target: '/scratch', size: 64 * 1024 * 1024 },
      { type: 'ssh', id: 'default', target: '/run/buildkit/ssh_agent.0', required: false, mode: 0o600, uid: 0, gid: 0 },
      { type: 'bind', target: '/ctx', input: 2, source: '/', readwrite: false },
    ]);
    expect(def.root!.inputs[2]!.op.kind).toBe('context');
  });

  it('passes proxy build args to RUN without recording them in history', async () => {
    const def = await compile('FROM base:1\nARG V=1\nRUN env\n', { buildArgs: { HTTPS_PROXY: 'http://p:1', V: '2' } });
    expect(rootOp<ExecOp>(def).env).toEqual(['V=2', 'HTTPS_PROXY=http://p:1', 'PATH=/usr/bin:/bin']);
    expect(def.history.at(-1)!.created_by).toBe('RUN |1 V=2 /bin/sh -c env # buildkit');
    expect(def.warnings).toEqual([]);
  });
});

describe('COPY and ADD', () => {
  it('copies heredocs from their own files, expanded unless the delimiter is quoted', async () => {
    const def = await compile('FROM base:1\nENV N=x\nCOPY --chmod=755 <<A <<"B" /out/\n$N "${N}"\nA\n$N\nB\n');
    const op = rootOp<FileOp>(def);
    expect(op.actions).toMatchObject([
      { action: 'copy', from: 1, src: ['A'], dest: '/out/', chmod: '755' },
      { action: 'copy', from: 2, src: ['B'], dest: '/out/', chmod: '755' },
    ]);
    const data = (v: Vertex) => (v.op as FileOp).actions[0];
    expect(data(def.root!.inputs[1]!)).toMatchObject({ path: '/A', data: 'x "x"\n', mode: 0o644 });
    expect(data(def.root!.inputs[2]!)).toMatchObject({ path: '/B', data: '$N\n' });
  });

  it('turns URLs into http ops and git URLs into git ops', async () => {
    const sum = `sha256:${'a'.repeat(64)}`;
    const def = await compile(`FROM base:1\nADD --checksum=${sum} https://example.test/dl/tool%20v1.tgz /opt/\nADD --keep-git-dir https://example.test/repo.git#v2:sub /src/\n`);
    const ops = topoSort([def.root!]).map((v) => v.op);
    expect(ops).toContainEqual({ kind: 'http', url: 'https://example.test/dl/tool%20v1.tgz', filename: 'tool v1.tgz', checksum: sum });
    expect(ops).toContainEqual({ kind: 'git', url: 'https://example.test/repo.git', ref: 'v2', subdir: 'sub', keepGitDir: true });
    const add = ops.filter((o): o is FileOp => o.kind === 'file').map((o) => o.actions[0]);
    expect(add[0]).toMatchObject({ src: ['tool v1.tgz'], dest: '/opt/' });
    expect(add[0]).not.toHaveProperty('extract');
    expect(add[1]).toMatchObject({ src: ['.'], dest: '/src/' });
  });

  it('marks local ADD sources for unpacking and records COPY flags', async () => {
    const def = await compile('FROM base:1\nADD --link a.tar /x/\nCOPY --parents --exclude=*.md --chmod=u+x src/ /y/\n');
    const actions = topoSort([def.root!]).filter((v) => v.op.kind === 'file').map((v) => (v.op as FileOp).actions[0]);
    expect(actions[0]).toMatchObject({ src: ['a.tar'], extract: true, link: true });
    expect(actions[1]).toMatchObject({ src: ['src/'], parents: true, exclude: ['*.md'], chmod: 'u+x' });
  });
});

describe('stages, args and config', () => {
  it('expands automatic platform args in FROM and fills them in when declared', async () => {
    const def = await compile('FROM base:${TARGETARCH} AS build\nARG TARGETPLATFORM\nARG TARGETSTAGE\nRUN echo\n');
    expect(def.asked).toEqual(['base:amd64']);
    expect(rootOp<ExecOp>(def).env).toEqual(['TARGETPLATFORM=linux/amd64', 'TARGETSTAGE=build', 'PATH=/usr/bin:/bin']);
  });

  it('compiles only the stages the target needs', async () => {
    const def = await compile('FROM other:1 AS unused\nFROM base:1 AS a\nRUN a\nFROM base:2\nCOPY --from=a /x /x\n');
    expect(def.asked).toEqual(['base:2', 'base:1']);
  });

  it('runs the ONBUILD triggers of a base image and drops them from the new config', async () => {
    const def = await compile('FROM parent:1\nRUN after\n', { images: { 'parent:1': { OnBuild: ['ENV T=1', 'RUN trigger'] } } });
    const runs = topoSort([def.root!]).filter((v) => v.op.kind === 'exec').map((v) => (v.op as ExecOp).args.at(-1));
    expect(runs).toEqual(['trigger', 'after']);
    expect(def.image.config.OnBuild).toBeUndefined();
    expect(def.image.config.Env).toContain('T=1');
    expect(def.root!.meta.name).toBe('[3/3] RUN after');
  });

  it('writes HEALTHCHECK and ONBUILD into the config', async () => {
    const def = await compile('FROM base:1\nHEALTHCHECK --interval=1m --start-interval=500ms CMD curl -f http://localhost/\nONBUILD COPY . /app\n');
    expect(def.image.config.Healthcheck).toEqual({ Test: ['CMD-SHELL', 'curl -f http://localhost/'], Interval: 60e9, StartInterval: 500e6 });
    expect(def.image.config.OnBuild).toEqual(['COPY . /app']);
    expect(def.history.map((h) => h.created_by)).toEqual(['HEALTHCHECK &{[CMD-SHELL curl -f http://localhost/] 1m0s 0s 0s 500ms 0}', 'ONBUILD COPY . /app']);
  });

  it('warns about build args nothing consumed', async () => {
    const def = await compile('FROM base:1\nARG USED\n', { buildArgs: { USED: '1', EXTRA: '2', http_proxy: 'x' } });
    expect(def.warnings.map((w) => w.message)).toEqual(['Build argument "EXTRA" was not consumed by any ARG']);
  });
});

describe('checks', () => {
  it('reports each rule by name and line', async () => {
    const def = await compile([
      'ARG TAG',
      'ARG API_TOKEN=x',
      'FROM --platform=linux/amd64 base:${TAG} AS scratch',
      'FROM base:${MISSING}',
      'ENV A=$UNDEFINED_THING',
      'COPY ignored.txt /x',
      'HEALTHCHECK CMD a',
      'HEALTHCHECK CMD b',
    ].join('\n'), { check: true, exclude: ['ignored.txt'] });
    expect(rules(def)).toEqual(expect.arrayContaining([
      'SecretsUsedInArgOrEnv@2', 'ReservedStageName@3', 'FromPlatformFlagConstDisallowed@3', 'InvalidDefaultArgInFrom@3',
      'UndefinedArgInFrom@4', 'UndefinedVar@5', 'CopyIgnoredFile@6', 'MultipleInstructionsDisallowed@7',
    ]));
  });

  it('honours check=skip and reports empty continuation lines', async () => {
    const def = await compile('# check=skip=JSONArgsRecommended,FromAsCasing\nFROM base:1 as b\nRUN a \\\n\n  b\nCMD x\n', { check: true });
    expect(rules(def)).toEqual(['NoEmptyContinuation@4']);
    const all = await compile('# check=skip=all\nFROM base:1 as b\nCMD x\n', { check: true });
    expect(all.warnings).toEqual([]);
  });
});
