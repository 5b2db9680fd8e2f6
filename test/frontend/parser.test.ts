import { describe, expect, it } from 'vitest';
import { KilnError } from '../../cache/errors.js';
import { formatParseTree, goQuote, parseDockerfile, type ParsedDockerfile } from '../../frontend/parser/index.js';

const parse = (text: string): ParsedDockerfile => parseDockerfile(text, { file: 'Dockerfile' });

function parseError(text: string, file = 'Dockerfile'): KilnError {
  try {
    parseDockerfile(text, { file });
  } catch (err) {
    if (err instanceof KilnError) return err;
    throw err;
  }
  throw new Error('expected the parse to fail');
}

describe('parseDockerfile errors', () => {
  it('locates an unterminated heredoc at its opening word', () => {
    const err = parseError('FROM alpine\nRUN echo start\nRUN cat <<EOF > /x\nnever closed\n');
    expect(err.code).toBe('PARSE_ERROR');
    expect(err.message).toBe('Unterminated heredoc "EOF" started at Dockerfile:3');
    expect(err.location).toEqual({ file: 'Dockerfile', line: 3, column: 9, text: 'RUN cat <<EOF > /x' });
  });

  it('locates a bad escape directive at its value', () => {
    const err = parseError('# syntax=docker/dockerfile:1\n#  escape = %\nFROM alpine\n');
    expect(err.code).toBe('PARSE_ERROR');
    expect(err.message).toBe('Invalid escape directive "%" at Dockerfile:2');
    expect(err.location).toEqual({ file: 'Dockerfile', line: 2, column: 13, text: '#  escape = %' });
  });

  it('rejects a repeated directive', () => {
    const err = parseError('# check=skip=all\n# CHECK=error=true\nFROM alpine\n');
    expect(err.message).toBe('The "check" parser directive is given more than once at Dockerfile:2');
    expect(err.location?.line).toBe(2);
  });

  it('names the file when there is nothing to build', () => {
    expect(parseError('').message).toBe('The Dockerfile "Dockerfile" has no instructions');
    const err = parseError('# just a comment\n\n', 'build/Dockerfile.dev');
    expect(err.message).toBe('The Dockerfile "build/Dockerfile.dev" has no instructions');
    expect(err.location?.file).toBe('build/Dockerfile.dev');
  });

  it('points at the key of ENV without a value and at a JSON array with a non-string', () => {
    const env = parseError('FROM alpine\n\nENV   PATH\n');
    expect(env.message).toBe('Missing value for "PATH" in ENV at Dockerfile:3');
    expect(env.location).toMatchObject({ line: 3, column: 7, text: 'ENV   PATH' });
    const json = parseError('FROM alpine\nCMD ["a", 1]\n');
    expect(json.message).toBe('The JSON array of CMD must hold only strings at Dockerfile:2');
    expect(json.location).toMatchObject({ line: 2, column: 5 });
  });

  it('rejects LABEL pairs without "="', () => {
    expect(parseError('LABEL a=1 b\n').message).toBe('Missing "=" in "b" in LABEL at Dockerfile:1');
  });
});

describe('heredocs', () => {
  it('strips leading tabs with <<- and keeps bodies with a quoted delimiter literal', () => {
    const parsed = parse(['FROM alpine', 'RUN <<-EOT sh', '\t\techo $HOME', '\tdone', '\tEOT', 'COPY <<"END" /etc/motd', '\tHello $USER', 'END', 'RUN true', ''].join('\n'));
    const [, run, copy, last] = parsed.instructions;
    expect(run!.heredocs).toEqual([{ name: 'EOT', content: 'echo $HOME\ndone\n', chomp: true, expand: true }]);
    expect(run!.args).toEqual(['<<-EOT sh']);
    expect([run!.startLine, run!.endLine]).toEqual([2, 5]);
    expect(copy!.heredocs).toEqual([{ name: 'END', content: '\tHello $USER\n', chomp: false, expand: false }]);
    expect(copy!.args).toEqual(['<<"END"', '/etc/motd']);
    expect(last!.startLine).toBe(9);
  });

  it('reads several heredocs in order, with file descriptors and partly quoted names', () => {
    const parsed = parse("RUN cat <<A 3<<E'O'F\na body\nA\nfd three\nEOF\n");
    expect(parsed.instructions[0]!.heredocs).toEqual([
      { name: 'A', content: 'a body\n', chomp: false, expand: true },
      { name: 'EOF', content: 'fd three\n', chomp: false, expand: false, fd: 3 },
    ]);
  });

  it('applies inside ONBUILD but not to exec form or other instructions', () => {
    const parsed = parse('ONBUILD ADD <<X /x\nbody\nX\nRUN ["cat", "<<X"]\nCMD cat <<X\n');
    const onbuild = parsed.instructions[0]!;
    expect(onbuild.heredocs).toEqual([{ name: 'X', content: 'body\n', chomp: false, expand: true }]);
    expect(onbuild.next?.heredocs).toEqual(onbuild.heredocs);
    expect(onbuild.next?.name).toBe('add');
    expect(parsed.instructions.map((n) => n.heredocs.length)).toEqual([1, 0, 0]);
    expect(formatParseTree(parsed)).toBe('(onbuild (add "<<X" "/x"))\n(run "cat" "<<X")\n(cmd "cat <<X")\n');
  });

  it('keeps CRLF line endings in bodies but matches the delimiter without them', () => {
    const parsed = parse('RUN cat <<EOF\r\nline\r\nEOF\r\n');
    expect(parsed.instructions[0]!.heredocs[0]!.content).toBe('line\r\n');
  });
});

describe('instruction nodes', () => {
  it('joins continuation lines into original the way BuildKit does', () => {
    const parsed = parse('FROM alpine\n  RUN apk add \\\n    curl \\\n# a comment\n\n    git  \nCMD ["sh"]\n');
    const run = parsed.instructions[1]!;
    expect(run.original).toBe('RUN apk add     curl     git  ');
    expect(run.args).toEqual(['apk add     curl     git']);
    expect([run.startLine, run.endLine]).toEqual([2, 6]);
    expect(parsed.warnings).toEqual([{ message: 'Empty continuation line inside RUN at Dockerfile:5', line: 5 }]);
  });

  it('uses the escape directive for continuations and flags', () => {
    const parsed = parse('# escape=`\nFROM mcr.microsoft.com/windows `\n  AS base\nCOPY --chown=a`"b c:\\src d:\\dst\n');
    expect(parsed.directives).toEqual({ escape: '`' });
    expect(formatParseTree(parsed)).toBe('(from "mcr.microsoft.com/windows" "AS" "base")\n(copy ["--chown=a\\"b"] "c:\\\\src" "d:\\\\dst")\n');
  });

  it('reads directives only at the top, in any case', () => {
    const parsed = parse('\uFEFF# Syntax = docker/dockerfile:1.7\n#check=skip=JSONArgsRecommended\n\n# escape=`\nFROM a\n');
    expect(parsed.directives).toEqual({ syntax: 'docker/dockerfile:1.7', check: 'skip=JSONArgsRecommended', escape: '\\' });
  });

  it('handles CRLF, flags with quotes and a bare "--"', () => {
    const parsed = parse('FROM a AS b\r\nCOPY --from="my stage" --chown=a\\ b -- src dst\r\n');
    expect(parsed.instructions[1]).toMatchObject({ name: 'copy', flags: ['--from=my stage', '--chown=a b'], args: ['src', 'dst'], json: false });
    expect(parsed.instructions[1]!.original).toBe('COPY --from="my stage" --chown=a\\ b -- src dst');
  });

  it('keeps unknown words with one empty argument and prints nested ONBUILD', () => {
    const parsed = parse('FROM a\nFROB x y\nONBUILD RUN ["echo", "hi"]\n');
    expect(parsed.instructions[1]).toMatchObject({ name: 'frob', args: [''] });
    expect(parsed.instructions[2]!.next).toMatchObject({ name: 'run', args: ['echo', 'hi'], json: true, original: 'RUN ["echo", "hi"]' });
    expect(formatParseTree(parsed)).toBe('(from "a")\n(frob "")\n(onbuild (run "echo" "hi"))\n');
  });

  it('falls back to text for JSON that Go would not decode', () => {
    const parsed = parse('CMD ["a"] extra\nENTRYPOINT [1e999]\nSHELL ["\\ud800"]\n');
    expect(parsed.instructions.map((n) => [n.json, n.args])).toEqual([
      [false, ['["a"] extra']],
      [false, ['[1e999]']],
      [true, ['\uFFFD']],
    ]);
  });
});

describe('goQuote', () => {
  it('follows strconv.Quote', () => {
    expect(goQuote('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(goQuote('\x07\b\f\n\r\t\v')).toBe('"\\a\\b\\f\\n\\r\\t\\v"');
    expect(goQuote('\x00\x1b\x7f')).toBe('"\\x00\\x1b\\x7f"');
    expect(goQuote('é ♥ 한국어 🚀')).toBe('"é ♥ 한국어 🚀"');
    expect(goQuote('\u00a0\u00ad\u2028')).toBe('"\\u00a0\\u00ad\\u2028"');
    expect(goQuote('\u{e0001}')).toBe('"\\U000e0001"');
  });
});
