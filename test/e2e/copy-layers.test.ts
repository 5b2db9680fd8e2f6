import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { kiln, mountsUnder, stepCached, stepRan, storeAndContext, type TempDir } from '../helpers/kiln.js';
import { netRawCapability } from '../helpers/xattrs.js';

/*
 * COPY reads a stage's directory straight from the layer that holds it and fills the
 * directories it creates in the step's upper directory, without overlayfs in between, whenever
 * that gives the same tree. These builds check the trees against what a container sees, in the
 * cases where the shortcut must step aside (merged directories, whiteouts, opaque directories,
 * set-group-ID directories) as well as where it is taken.
 */
describe('COPY through layer directories', () => {
  let root: string;
  let work: TempDir;
  let ctx: string;
  let cleanup: () => Promise<void>;

  const dockerfile = (name: string, lines: string[]) => {
    writeFileSync(join(ctx, name), `${lines.join('\n')}\n`);
    return join(ctx, name);
  };
  const build = async (file: string, ...args: string[]) => {
    const r = await kiln(root, ['build', '--progress', 'plain', '-f', file, ...args, ctx]);
    expect(r.code, r.stderr).toBe(0);
    return r;
  };
  const sh = async (image: string, script: string) => {
    const r = await kiln(root, ['run', '--rm', '--entrypoint', '', image, 'sh', '-c', script]);
    expect(r.code, r.stderr).toBe(0);
    return r.stdout;
  };
  /** Every entry below `dir` with mode, owner, size, modification time, type and link target. */
  const listing = (image: string, dir: string) =>
    sh(image, `cd ${dir} && find . | sort | while read -r p; do stat -c '%n %a %u:%g %s %Y %F' "$p"; [ -L "$p" ] && readlink "$p"; done; true`);

  /** A build whose last step, COPY --from=src ARGS, fails with `message` after stage src's RUNs. */
  const fails = async (name: string, runs: string[], args: string, message: string) => {
    const file = dockerfile(name, ['FROM test/base:1 AS src', ...runs, 'FROM test/base:1', `COPY --from=src ${args}`]);
    const r = await kiln(root, ['build', '--progress', 'plain', '-f', file, ctx]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(message);
  };
  /** A listing without its first line: the directory itself, which COPY makes anew. */
  const below = (list: string) => list.split('\n').slice(1).join('\n');

  beforeAll(async () => {
    ({ root, work, ctx, cleanup } = await storeAndContext('kiln-copy-layers-'));
    mkdirSync(join(ctx, 'tree/sub/deeper'), { recursive: true });
    mkdirSync(join(ctx, 'tree/empty'));
    writeFileSync(join(ctx, 'tree/plain.txt'), 'plain\n');
    writeFileSync(join(ctx, 'tree/sub/shared.txt'), 'shared\n');
    writeFileSync(join(ctx, 'tree/sub/deeper/deep.txt'), 'deep\n');
    writeFileSync(join(ctx, 'tree/open.txt'), 'everyone writes\n');
    chmodSync(join(ctx, 'tree/open.txt'), 0o666);
    writeFileSync(join(ctx, 'tree/private.txt'), 'private\n');
    chmodSync(join(ctx, 'tree/private.txt'), 0o600);
    writeFileSync(join(ctx, 'tree/tool'), '#!/bin/sh\necho tool\n');
    chmodSync(join(ctx, 'tree/tool'), 0o4755);
    symlinkSync('plain.txt', join(ctx, 'tree/link'));
    // A layer with a whiteout inside a directory no layer below has: `kiln import` keeps it.
    const layer = join(work.path, 'layer');
    mkdirSync(join(layer, 'd'), { recursive: true });
    writeFileSync(join(layer, 'd/keep'), 'keep\n');
    writeFileSync(join(layer, 'd/.wh.gone'), '');
    execFileSync('tar', ['-C', layer, '-cf', join(work.path, 'whiteout.tar'), 'd']);
    const r = await kiln(root, ['import', join(work.path, 'whiteout.tar'), 'test/whiteout:1']);
    expect(r.code, r.stderr).toBe(0);
  });

  afterAll(async () => {
    await cleanup?.();
    expect(mountsUnder(root)).toEqual([]);
  });

  it('copies a stage directory exactly as a container of that stage sees it', async () => {
    const file = dockerfile('Dockerfile.stage', [
      'FROM test/base:1 AS src',
      'RUN mkdir -p /out/bin /out/empty /out/data && echo one > /out/data/one && printf "" > /out/data/zero \\',
      ' && echo run > /out/bin/run && chmod 750 /out/bin/run && chmod 4755 /out/bin/run && ln -s data/one /out/link \\',
      ' && chown -R 1000:1001 /out/data && touch -d "2001-02-03 04:05:06" /out/data/one',
      'FROM test/base:1',
      'COPY --from=src /out /copied',
      'COPY --from=src /out/data/one /single',
    ]);
    await build(file, '--target', 'src', '-t', 'copy/src:1');
    await build(file, '-t', 'copy/out:1');
    const source = await listing('copy/src:1', '/out');
    expect(source).toContain('./data/one 644 1000:1001 4 981173106 regular file');
    expect(below(await listing('copy/out:1', '/copied'))).toBe(below(source));
    expect(await sh('copy/out:1', 'cat /single; stat -c "%u:%g %Y" /single')).toBe('one\n1000:1001 981173106\n');
    // The copy may share files with the stage's layer: a later step that changes them changes
    // its own layer only.
    const change = dockerfile('Dockerfile.change', ['FROM copy/out:1', 'RUN echo changed > /copied/data/one && chmod 700 /copied/bin/run && chown 5:5 /single']);
    await build(change, '-t', 'copy/changed:1');
    expect(await sh('copy/changed:1', 'cat /copied/data/one; stat -c "%a %u:%g" /copied/bin/run /single')).toBe('changed\n700 0:0\n644 5:5\n');
    expect(await listing('copy/src:1', '/out')).toBe(source);
    expect(below(await listing('copy/out:1', '/copied'))).toBe(below(source));
    expect(await sh('copy/out:1', 'stat -c "%u:%g" /single')).toBe('1000:1001\n');
    const verify = await kiln(root, ['store', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it('copies, not links, files of a layer the destination stage has too: two names, two files', async () => {
    const file = dockerfile('Dockerfile.self', ['FROM test/base:1 AS a', 'RUN mkdir /d && echo x > /d/f', 'FROM a', 'COPY --from=a /d /e']);
    await build(file, '-t', 'copy/self:1');
    const [d, e] = (await sh('copy/self:1', 'cat /e/f; stat -c %i /d/f /e/f')).split('\n').slice(1);
    expect(d).toMatch(/^\d+$/);
    expect(e).not.toBe(d);
  });

  it('reads a directory merged from several layers through the view: deletions hold', async () => {
    const file = dockerfile('Dockerfile.merged', [
      'FROM test/base:1 AS src',
      'RUN mkdir /m && echo x > /m/x && echo y > /m/y',
      'RUN rm /m/y && echo z > /m/z',
      'RUN mkdir /gone && echo f > /gone/f',
      'RUN rm -rf /gone',
      'FROM test/base:1',
      'COPY --from=src /m /m',
    ]);
    await build(file, '-t', 'copy/merged:1');
    expect(await sh('copy/merged:1', 'ls -A /m; cat /m/x /m/z')).toBe('x\nz\nx\nz\n');
    await fails('Dockerfile.gone', ['RUN mkdir /gone && echo f > /gone/f', 'RUN rm -rf /gone'], '/gone /gone', 'Source "/gone" not found in stage "src"');
    // A directory made anew over a deleted one is opaque: what the layer below had in it is gone.
    await fails('Dockerfile.hidden', ['RUN mkdir -p /p/q && echo x > /p/q/x', 'RUN rm -rf /p && mkdir -p /p/r'], '/p/q /q', 'Source "/p/q" not found in stage "src"');
    await fails('Dockerfile.outside', ['RUN mkdir /d && echo f > /d/f'], '../d /d', 'Source "../d" is outside stage "src"');
  });

  it('leaves out what a whiteout in the source layer hides', async () => {
    const file = dockerfile('Dockerfile.whiteout', ['FROM test/base:1', 'COPY --from=test/whiteout:1 /d /d']);
    await build(file, '-t', 'copy/whiteout:1');
    expect(await sh('copy/whiteout:1', 'ls -lA /d | sed 1d | while read -r mode _ _ _ _ _ _ _ name; do echo "$mode $name"; done')).toBe('-rw-r--r-- keep\n');
  });

  it('writes new directories, existing ones, and ones that replace deleted directories alike', async () => {
    const file = dockerfile('Dockerfile.dest', [
      'FROM test/base:1',
      'RUN mkdir -p /app/sub /app/again && echo old > /app/sub/old.txt && echo stale > /app/again/stale.txt',
      'RUN rm -rf /app/again',
      'RUN mkdir -m 2775 /sg && chgrp 50 /sg',
      'WORKDIR /app',
      // Into an existing directory: /app/sub merges with the layer below, tree/deeper is new.
      'COPY tree/ ./',
      // A directory that replaces one deleted in a layer below: nothing of the old one shows.
      'COPY tree/sub /app/again',
      // Into a set-group-ID directory: the files still belong to root.
      'COPY tree/ /sg/',
      'COPY --chown=1000:1000 --chmod=640 tree/sub /owned',
      'COPY tree /fresh',
    ]);
    await build(file, '-t', 'copy/dest:1');
    const fresh = await listing('copy/dest:1', '/fresh');
    expect(fresh).toMatch(/^\.\/open\.txt 666 0:0 16 \d+ regular file$/m);
    expect(fresh).toMatch(/^\.\/private\.txt 600 0:0 8 \d+ regular file$/m);
    expect(fresh).toMatch(/^\.\/tool 4755 0:0 20 \d+ regular file$/m);
    expect(fresh).toMatch(/^\.\/sub\/deeper\/deep\.txt 644 0:0 5 \d+ regular file$/m);
    expect(fresh).toMatch(/^\.\/empty 755 0:0 \d+ \d+ directory$/m);
    expect(fresh).toMatch(/^\.\/link 777 0:0 9 \d+ symbolic link\nplain\.txt$/m);
    expect(await sh('copy/dest:1', 'cat /fresh/sub/deeper/deep.txt /fresh/tool')).toBe('deep\n#!/bin/sh\necho tool\n');
    // The context tree at /app, merged with what was there.
    expect(await sh('copy/dest:1', 'ls -A /app/sub; cat /app/sub/old.txt')).toBe('deeper\nold.txt\nshared.txt\nold\n');
    expect(await sh('copy/dest:1', 'ls -A /app/again')).toBe('deeper\nshared.txt\n');
    expect(below(await listing('copy/dest:1', '/sg'))).toBe(below(fresh));
    expect(await sh('copy/dest:1', 'stat -c "%a %u:%g" /sg /sg/sub /sg/sub/shared.txt /sg/tool')).toBe('2775 0:50\n755 0:0\n644 0:0\n4755 0:0\n');
    expect(await sh('copy/dest:1', 'cd /owned && find . | sort | xargs stat -c "%n %a %u:%g"')).toBe('. 755 1000:1000\n./deeper 640 1000:1000\n./deeper/deep.txt 640 1000:1000\n./shared.txt 640 1000:1000\n');
  });
  it('carries extended attributes from the context and from a stage, past --chown; a changed one misses the cache', async () => {
    const capability = netRawCapability();
    mkdirSync(join(ctx, 'attrs/sub'), { recursive: true });
    writeFileSync(join(ctx, 'attrs/ping'), 'ping\n');
    writeFileSync(join(ctx, 'attrs/note'), 'note\n');
    writeFileSync(join(ctx, 'attrs/bare'), 'bare\n');
    setAttributeSync(join(ctx, 'attrs/ping'), 'security.capability', capability);
    setAttributeSync(join(ctx, 'attrs/note'), 'user.kiln.note', 'first');
    setAttributeSync(join(ctx, 'attrs/sub'), 'user.kiln.dir', 'd');
    const file = dockerfile('Dockerfile.xattrs', [
      'FROM test/base:1 AS src',
      'COPY attrs /src',
      'FROM test/base:1',
      'COPY --from=src /src /copied',
      'COPY --from=src --chown=1000:1000 /src/ping /owned-ping',
      'COPY attrs/note /note',
    ]);
    const out = join(work.path, 'xattrs-out');
    const first = await build(file, '-o', `type=local,dest=${out}`);
    const attrs = (path: string) =>
      Object.fromEntries(
        listAttributesSync(join(out, path))
          .sort()
          .map((name) => [name, getAttributeSync(join(out, path), name)!.toString('hex')]),
      );
    const cap = capability.toString('hex');
    const note = Buffer.from('first').toString('hex');
    expect(attrs('copied/ping')).toEqual({ 'security.capability': cap });
    expect(attrs('owned-ping')).toEqual({ 'security.capability': cap });
    expect(attrs('copied/note')).toEqual({ 'user.kiln.note': note });
    expect(attrs('note')).toEqual({ 'user.kiln.note': note });
    expect(attrs('copied/bare')).toEqual({});
    expect(attrs('copied/sub')).toEqual({ 'user.kiln.dir': Buffer.from('d').toString('hex') });
    // The directory named as the source is not copied, only what it holds (as in Docker).
    expect(attrs('copied')).toEqual({});
    expect(first.stderr).not.toMatch(/cache miss/);
    // Unchanged: every step cached. A changed attribute (same content, same mtime): the steps
    // that copy it run again, and the miss names the file.
    const again = await build(file);
    expect(stepCached(again.stderr, 'COPY attrs/note /note')).toBe(true);
    expect(stepCached(again.stderr, 'COPY attrs /src')).toBe(true);
    setAttributeSync(join(ctx, 'attrs/note'), 'user.kiln.note', 'second');
    const changed = await build(file);
    expect(stepRan(changed.stderr, 'COPY attrs/note /note')).toBe(true);
    expect(stepRan(changed.stderr, 'COPY attrs /src')).toBe(true);
    expect(changed.stderr).toContain('cache miss: file "attrs/note" changed');
    const settled = await build(file);
    expect(stepCached(settled.stderr, 'COPY attrs/note /note')).toBe(true);
    expect(stepCached(settled.stderr, 'COPY --from=src --chown=1000:1000 /src/ping /owned-ping')).toBe(true);
  });
});
