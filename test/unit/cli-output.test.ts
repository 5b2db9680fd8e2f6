import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { KilnError, VertexError } from '../../cache/errors.js';
import { parseArgs, type CommandSpec } from '../../src/cli/args.js';
import { parseBuildArgs, parseBytes } from '../../src/cli/build-flags.js';
import { bashScript, zshScript } from '../../src/cli/commands/completion.js';
import { graphToDot } from '../../src/cli/dot.js';
import { dockerfileExcerpt } from '../../src/cli/excerpt.js';
import { resolveProgressMode } from '../../src/cli/progress.js';
import { errorEvent, formatError } from '../../src/cli/report.js';
import { compileTemplate, goString } from '../../src/cli/template.js';
import { vertex } from '../../solver/graph.js';

const DOCKERFILE = 'FROM base\nRUN a\nRUN b && \\\n  false\nCMD ["sh"]\nLABEL x=y\n';

function failure(): VertexError {
  const cause = new KilnError('STEP_FAILED', 'Process "/bin/sh -c b && false" did not complete successfully: exit code 1');
  return new VertexError('[3/3] RUN b && false', cause, { location: { file: 'Dockerfile', line: 3, text: 'RUN b && \\' }, tail: ['out-1', 'out-2'] });
}

describe('failure reports', () => {
  it('number the lines around the failing instruction and mark all of its lines', () => {
    expect(dockerfileExcerpt(DOCKERFILE, 3)).toEqual([' 1 |     FROM base', ' 2 |     RUN a', ' 3 | >>> RUN b && \\', ' 4 | >>>   false', ' 5 |     CMD ["sh"]', ' 6 |     LABEL x=y']);
    expect(dockerfileExcerpt(DOCKERFILE, 1, { context: 1 })).toEqual([' 1 | >>> FROM base', ' 2 |     RUN a']);
    expect(dockerfileExcerpt(DOCKERFILE, 99)).toEqual([]);
  });

  it('say which step failed where, with the excerpt, its last lines of output and the cause', () => {
    expect(formatError(failure(), { source: (f) => (f === 'Dockerfile' ? DOCKERFILE : undefined) })).toBe(
      [
        'error: step [3/3] RUN b && false failed at Dockerfile:3',
        '--------------------',
        ' 1 |     FROM base',
        ' 2 |     RUN a',
        ' 3 | >>> RUN b && \\',
        ' 4 | >>>   false',
        ' 5 |     CMD ["sh"]',
        ' 6 |     LABEL x=y',
        '--------------------',
        'last lines of its output:',
        '  out-1',
        '  out-2',
        'Process "/bin/sh -c b && false" did not complete successfully: exit code 1',
        '',
      ].join('\n'),
    );
    // Without the file's text the located line alone is shown.
    expect(formatError(failure())).toContain(' 3 | >>> RUN b && \\\n');
  });

  it('are one JSON object in rawjson mode', () => {
    expect(errorEvent(failure(), { source: () => DOCKERFILE })).toEqual({
      type: 'error',
      code: 'STEP_FAILED',
      message: 'Process "/bin/sh -c b && false" did not complete successfully: exit code 1',
      exitCode: 1,
      location: { file: 'Dockerfile', line: 3, column: undefined },
      step: '[3/3] RUN b && false',
      excerpt: dockerfileExcerpt(DOCKERFILE, 3),
      tail: ['out-1', 'out-2'],
    });
  });
});

describe('progress modes', () => {
  it('auto is tty on a terminal and plain elsewhere; the flag wins over KILN_PROGRESS', () => {
    expect(resolveProgressMode(undefined, undefined, true)).toBe('tty');
    expect(resolveProgressMode(undefined, undefined, false)).toBe('plain');
    expect(resolveProgressMode(undefined, 'rawjson', true)).toBe('rawjson');
    expect(resolveProgressMode('quiet', 'rawjson', true)).toBe('quiet');
    expect(resolveProgressMode('auto', 'rawjson', false)).toBe('plain');
    expect(resolveProgressMode(undefined, '', false)).toBe('plain');
  });

  it('an unknown mode is a usage error that names where it came from', () => {
    expect(() => resolveProgressMode('fancy', undefined, false)).toThrow('Invalid --progress "fancy": expected auto, tty, plain, rawjson or quiet');
    try {
      resolveProgressMode(undefined, 'bad', false);
      expect.unreachable();
    } catch (err) {
      expect((err as KilnError).exitCode).toBe(2);
      expect((err as KilnError).message).toContain('KILN_PROGRESS');
    }
  });
});

describe('inspect --format templates', () => {
  const data = { Id: 'sha256:abc', RepoTags: ['a:1', 'b:2'], Config: { Env: ['A=1', 'B=2'], Labels: { 'org.x': 'y', a: 'b' }, User: '' }, Size: 12 };

  it('print fields as Go does', () => {
    expect(compileTemplate('{{.Config.Env}}')(data)).toBe('[A=1 B=2]');
    expect(compileTemplate('{{.Config.Labels}}')(data)).toBe('map[a:b org.x:y]');
    expect(compileTemplate('id={{ .Id }} size={{.Size}}')(data)).toBe('id=sha256:abc size=12');
    expect(compileTemplate('{{json .Config.Env}}')(data)).toBe('["A=1","B=2"]');
    expect(compileTemplate('{{index .Config.Labels "org.x"}}')(data)).toBe('y');
    expect(compileTemplate('{{join .RepoTags ","}}')(data)).toBe('a:1,b:2');
    expect(compileTemplate('{{len .RepoTags}} {{upper .Id}}')(data)).toBe('2 SHA256:ABC');
    expect(compileTemplate('{{.Config.Nope}}')(data)).toBe('<no value>');
    expect(compileTemplate('{{json .}}')({ a: 1 })).toBe('{"a":1}');
    expect(goString(null)).toBe('<nil>');
  });

  it('reject what they cannot read, as usage errors', () => {
    expect(() => compileTemplate('{{.Id')).toThrow('is not closed');
    expect(() => compileTemplate('{{frob .Id}}')).toThrow('function "frob" is not defined');
    expect(() => compileTemplate('{{.Confg}}')(data)).toThrow('field "Confg" does not exist');
    expect(() => compileTemplate('{{}}')).toThrow('an action is empty');
  });
});

describe('command line pieces', () => {
  it('choices reject other values as usage errors', () => {
    const spec: CommandSpec = { name: 't', usage: 'kiln t', description: '', minPositionals: 0, maxPositionals: 0, options: [{ name: 'format', type: 'string', choices: ['json', 'dot'], description: '' }] };
    expect(parseArgs(['--format', 'dot'], spec).options.format).toBe('dot');
    expect(() => parseArgs(['--format=svg'], spec)).toThrow('Invalid --format "svg": expected json or dot');
  });

  it('sizes read as docker reads them', () => {
    expect(parseBytes('64m')).toBe(64 * 1024 * 1024);
    expect(parseBytes('65536k')).toBe(64 * 1024 * 1024);
    expect(parseBytes('1g')).toBe(1024 ** 3);
    expect(parseBytes('12')).toBe(12);
    expect(parseBytes('lots')).toBeUndefined();
  });

  it('the completion scripts are valid shell', () => {
    const specs: CommandSpec[] = [
      { name: 'build', usage: '', description: "Build an image: it's here.", minPositionals: 1, maxPositionals: 1, options: [{ name: 'tag', short: 't', type: 'list', description: '' }] },
      { name: 'rmi', usage: '', description: 'Remove images', minPositionals: 1, maxPositionals: 9, options: [] },
    ];
    const bash = bashScript(specs);
    execFileSync('bash', ['-n'], { input: bash });
    expect(bash).toContain('build) flags="--tag -t --help" ;;');
    expect(bash).toContain('complete -F _kiln kiln');
    expect(zshScript(specs)).toContain("'build:Build an image'");
  });
});

describe('the graph as dot', () => {
  it('draws stages as clusters, inputs as edges and cached vertices filled', () => {
    const base = vertex({ kind: 'image', ref: 'base', manifest: 'sha256:00' } as never, [], { name: '[build 1/2] FROM base', stage: 'build' });
    const run = vertex({ kind: 'exec', root: 0, args: ['make'], env: [], cwd: '/', user: '', network: 'default' }, [base], { name: '[build 2/2] RUN "make"', stage: 'build' });
    const dot = graphToDot([run], new Set([base.digest]));
    const b = base.digest.slice(7, 19);
    const r = run.digest.slice(7, 19);
    expect(dot).toContain('  subgraph cluster_0 {\n    label="stage build";\n    style=dashed;\n');
    expect(dot).toContain(`    "${b}" [label="[build 1/2] FROM base\\nimage (cached)", style="rounded,filled", fillcolor="#d9d9d9"];`);
    expect(dot).toContain(`    "${r}" [label="[build 2/2] RUN \\"make\\"\\nexec"];`);
    expect(dot).toContain(`  "${b}" -> "${r}";`);
    expect(dot.startsWith('digraph kiln {\n') && dot.endsWith('}\n')).toBe(true);
  });
});

describe('--build-arg, the same for local and remote builds', () => {
  const spec: CommandSpec = { name: 'build', usage: 'kiln build', description: '', minPositionals: 0, maxPositionals: 1, options: [] };
  it('takes NAME=VALUE, a bare NAME from the environment when set, and refuses an empty name', () => {
    process.env.KILN_TEST_ARG = 'from-env';
    try {
      expect(parseBuildArgs(['A=1', 'B=x=y', 'C=', 'KILN_TEST_ARG', 'KILN_TEST_UNSET_ARG'], spec)).toEqual({ A: '1', B: 'x=y', C: '', KILN_TEST_ARG: 'from-env' });
    } finally {
      delete process.env.KILN_TEST_ARG;
    }
    expect(() => parseBuildArgs(['=v'], spec)).toThrow('Invalid --build-arg "=v": the name is empty');
  });
});
