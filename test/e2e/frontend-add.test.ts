import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln, mountsUnder, storeWithBase, tempDir } from '../helpers/kiln.js';

/** Containers whose bundle lives in this test's store (other suites may run at the same time). */
function containersOf(store: string): string[] {
  const list = JSON.parse(execFileSync('runc', ['list', '--format', 'json'], { encoding: 'utf8' }) || '[]') as { id: string; bundle: string }[] | null;
  return (list ?? []).filter((c) => c.bundle.startsWith(`${store}/`)).map((c) => c.id);
}

const HELLO = 'hello over http\n';

describe('ADD through runc: archives, http with --checksum, git', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let server: Server;
  let base: string;
  let ctx: string;
  let requests = 0;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir();
    ctx = join(work.path, 'ctx');
    const tree = join(work.path, 'tree');
    mkdirSync(join(tree, 'dir'), { recursive: true });
    writeFileSync(join(tree, 'dir/a.txt'), 'from the archive\n');
    execFileSync('chown', ['1234:4321', join(tree, 'dir/a.txt')]);
    execFileSync('chmod', ['640', join(tree, 'dir/a.txt')]);
    mkdirSync(ctx);
    execFileSync('tar', ['--numeric-owner', '-C', tree, '-czf', join(ctx, 'files.tar.gz'), 'dir']);
    execFileSync('tar', ['--numeric-owner', '-C', tree, '-cjf', join(ctx, 'files.tar.bz2'), 'dir']);
    execFileSync('tar', ['--numeric-owner', '-C', tree, '-cJf', join(ctx, 'files.tar.xz'), 'dir']);
    execFileSync('tar', ['--numeric-owner', '-C', tree, '-cf', join(ctx, 'files.tar'), 'dir']);
    // Gzip magic but not a tar inside: copied as it is.
    execFileSync('sh', ['-c', `printf 'not a tar\\n' | gzip > ${join(ctx, 'note.gz')}`]);
    writeFileSync(join(ctx, 'plain.txt'), 'plain\n');

    const repo = join(work.path, 'repo.git');
    mkdirSync(join(repo, 'sub'), { recursive: true });
    writeFileSync(join(repo, 'README'), 'v1 readme\n');
    writeFileSync(join(repo, 'sub/x'), 'in sub\n');
    const git = (...args: string[]) => execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@t', ...args], { encoding: 'utf8' });
    git('init', '-q', '-b', 'main');
    git('add', '.');
    git('commit', '-q', '-m', 'one');
    git('tag', 'v1');
    writeFileSync(join(repo, 'README'), 'v2 readme\n');
    git('commit', '-q', '-am', 'two');

    server = createServer((req, res) => {
      requests++;
      if (req.url === '/hello.txt') {
        res.writeHead(200, { 'content-type': 'text/plain', 'last-modified': 'Wed, 21 Oct 2015 07:28:00 GMT' });
        res.end(HELLO);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await work?.cleanup();
    await cleanupStore?.();
  });

  const sha = `sha256:${createHash('sha256').update(HELLO).digest('hex')}`;

  it('unpacks local archives, downloads and checks out repositories', async () => {
    const repo = join(work.path, 'repo.git');
    writeFileSync(join(ctx, 'Dockerfile'), [
      'FROM test/base:1',
      'ADD files.tar.gz /gz/',
      'ADD files.tar.bz2 /bz2',
      'ADD files.tar.xz files.tar /many/',
      'ADD note.gz plain.txt /copied/',
      'ADD --chown=dev:dev --chmod=640 plain.txt /owned.txt',
      `ADD --checksum=${sha} ${base}/hello.txt /web/`,
      `ADD file://${repo}#v1 /git-v1/`,
      `ADD --keep-git-dir=true file://${repo} /git-head/`,
      `ADD file://${repo}#main:sub /git-sub/`,
      'ADD --exclude=*.txt --exclude=*.gz . /filtered/',
    ].join('\n'));
    const r = await kiln(root, ['build', '--progress', 'plain', '-t', 'test/add:1', ctx]);
    expect(r.code, r.stderr).toBe(0);
    const script = [
      'cat /gz/dir/a.txt /bz2/dir/a.txt /many/dir/a.txt',
      'stat -c "%u:%g %a" /gz/dir/a.txt',
      'test -f /copied/note.gz && echo note-kept',
      'cat /copied/plain.txt',
      'stat -c "%U:%G %a" /owned.txt',
      'cat /web/hello.txt; stat -c "%a %Y" /web/hello.txt',
      'cat /git-v1/README; test -e /git-v1/.git || echo no-git-dir',
      'cat /git-head/README; test -d /git-head/.git && echo git-dir-kept',
      'cat /git-sub/x',
      'ls /filtered | sort | tr "\\n" " "',
    ].join('; ');
    const run = await kiln(root, ['run', '--rm', '--entrypoint', '', 'test/add:1', 'sh', '-c', script]);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe([
      'from the archive', 'from the archive', 'from the archive',
      '1234:4321 640',
      'note-kept',
      'plain',
      'dev:dev 640',
      HELLO.trim(), '600 1445412480',
      'v1 readme', 'no-git-dir',
      'v2 readme', 'git-dir-kept',
      'in sub',
      'Dockerfile files.tar files.tar.bz2 files.tar.xz ',
    ].join('\n'));
  });

  it('reuses a pinned download without fetching it again', async () => {
    const before = requests;
    const r = await kiln(root, ['build', '--progress', 'plain', ctx]);
    expect(r.code, r.stderr).toBe(0);
    expect(requests).toBe(before);
  });

  it('fails a download whose checksum differs, naming both digests', async () => {
    const bad = `sha256:${'0'.repeat(64)}`;
    writeFileSync(join(ctx, 'Dockerfile.bad'), `FROM test/base:1\nADD --checksum=${bad} ${base}/hello.txt /x\n`);
    const r = await kiln(root, ['build', '-f', join(ctx, 'Dockerfile.bad'), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`has checksum ${sha}, but ADD --checksum expects ${bad}`);
    expect(r.stderr).toContain('Dockerfile.bad:2');
    expect(r.stderr).not.toMatch(/^\s+at .*\.js:\d+/m);
  });

  it('reports a missing download and an unknown git ref as failed steps', async () => {
    writeFileSync(join(ctx, 'Dockerfile.404'), `FROM test/base:1\nADD ${base}/missing.txt /x\n`);
    const r = await kiln(root, ['build', '-f', join(ctx, 'Dockerfile.404'), ctx]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('the server answered 404');
    writeFileSync(join(ctx, 'Dockerfile.ref'), `FROM test/base:1\nADD file://${join(work.path, 'repo.git')}#nope /x/\n`);
    const g = await kiln(root, ['build', '-f', join(ctx, 'Dockerfile.ref'), ctx]);
    expect(g.code).toBe(1);
    expect(g.stderr).toContain('has no branch, tag or commit "nope"');
  });

  it('leaves no mounts or containers behind', () => {
    expect(mountsUnder(root)).toEqual([]);
    expect(containersOf(root)).toEqual([]);
  });
});
