import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseTar, kiln, storeWithBase, tempDir } from '../helpers/kiln.js';
import { packTar, type TarEntry } from '../helpers/tar.js';

/**
 * Hostile archives end to end, through the three ways an archive enters Kiln: `ADD local.tar`,
 * `kiln import` and `kiln load -i`. Each class of entry is tried on its own archive. A host
 * directory the entries aim at holds a canary file that must stay as it is, and nothing else may
 * appear there or at the host's root.
 */
const MARKER = 'KILN-ARCHIVE-CANARY-41c9';
const TAG = `kiln-archive-${process.pid}-${Date.now()}`;

type Entry = TarEntry;

/** The busybox rootfs as entries, so that an imported or loaded image can still RUN. */
async function baseEntries(): Promise<Entry[]> {
  const out: Entry[] = [];
  const ex = tar.extract();
  const feeding = Readable.from([readFileSync(baseTar())]).pipe(ex);
  for await (const entry of ex) {
    const parts: Buffer[] = [];
    for await (const c of entry) parts.push(c as Buffer);
    out.push([{ ...entry.header, pax: undefined }, entry.header.type === 'file' ? Buffer.concat(parts) : undefined]);
  }
  feeding.destroy();
  return out;
}

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** An OCI layout archive for `kiln load` with one layer blob, named `name`. */
async function ociArchive(name: string, layerBlob: Buffer, diffId: string): Promise<Buffer> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['sh'] }, rootfs: { type: 'layers', diff_ids: [diffId] }, history: [{ created_by: 'hostile layer' }] }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(layerBlob), size: layerBlob.length }],
    }),
  );
  const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(manifest), size: manifest.length, annotations: { 'io.containerd.image.name': name } }] };
  const blob = (b: Buffer): Entry => [{ name: `blobs/sha256/${sha(b).slice(7)}` }, b];
  return packTar([[{ name: 'oci-layout' }, '{"imageLayoutVersion":"1.0.0"}'], [{ name: 'index.json' }, JSON.stringify(index)], blob(config), blob(manifest), blob(layerBlob)]);
}

describe('hostile archives through ADD, kiln import and kiln load', () => {
  let root: string;
  let cleanupStore: () => Promise<void>;
  let work: ReturnType<typeof tempDir>;
  let outside: string;
  let rel: string;
  let canary: string;
  let canaryStat: { mtimeMs: number; nlink: number; mode: number };
  let base: Entry[];
  let n = 0;

  beforeAll(async () => {
    ({ root, cleanup: cleanupStore } = await storeWithBase());
    work = tempDir('kiln-sec-archive-');
    outside = join(work.path, 'outside');
    rel = outside.slice(1);
    mkdirSync(outside);
    canary = join(outside, 'secret');
    writeFileSync(canary, `${MARKER}\n`, { mode: 0o600 });
    const st = statSync(canary);
    canaryStat = { mtimeMs: st.mtimeMs, nlink: st.nlink, mode: st.mode };
    base = await baseEntries();
  });

  afterAll(async () => {
    await cleanupStore?.();
    await work?.cleanup();
  });

  /** Nothing outside the store moved: the canary is as it was, nothing new beside it or at /. */
  function expectHostUntouched() {
    expect(readdirSync(outside)).toEqual(['secret']);
    const st = statSync(canary);
    expect({ mtimeMs: st.mtimeMs, nlink: st.nlink, mode: st.mode }).toEqual(canaryStat);
    expect(readFileSync(canary, 'utf8')).toBe(`${MARKER}\n`);
    expect(existsSync(`/${TAG}`)).toBe(false);
    expect(existsSync(`/tmp/${TAG}`)).toBe(false);
    expect(readdirSync(join(root, 'tmp'))).toEqual([]);
  }

  const noStack = (s: string) => expect(s).not.toMatch(/^\s+at .*\.js:\d+/m);
  const listing = (t: string) => execFileSync('tar', ['-tvf', t], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const fileIn = (t: string, path: string) => execFileSync('tar', ['-xOf', t, `./${path}`], { maxBuffer: 64 << 20 }).toString();

  interface Outcome {
    code: number;
    stderr: string;
    log: string;
    /** The exported rootfs, when the build got that far. */
    tar?: string;
  }

  async function build(dockerfile: string, env: Record<string, string>, ctxFiles: Record<string, Buffer> = {}): Promise<Outcome> {
    const ctx = join(work.path, `ctx-${++n}`);
    mkdirSync(ctx);
    for (const [name, data] of Object.entries(ctxFiles)) writeFileSync(join(ctx, name), data);
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    const out = join(work.path, `out-${n}.tar`);
    const r = await kiln(root, ['build', '--progress', 'plain', '-o', `type=tar,dest=${out}`, ctx], { env });
    return { code: r.code, stderr: r.stderr, log: r.stdout + r.stderr, tar: r.code === 0 && existsSync(out) ? out : undefined };
  }

  const CHECK_RUN = 'RUN true';

  /** `ADD h.tar /` on the busybox base. */
  async function viaAdd(entries: Entry[], options: { gzip?: boolean; raw?: Buffer; run?: string; env?: Record<string, string> } = {}): Promise<Outcome> {
    const data = options.raw ?? (options.gzip ? gzipSync(await packTar(entries)) : await packTar(entries));
    return build(`FROM test/base:1\nADD h.tar /\n${options.run ?? CHECK_RUN}\n`, options.env ?? {}, { 'h.tar': data });
  }

  /** `kiln import` of the base rootfs plus `entries` as one layer, then a build FROM it. */
  async function viaImport(entries: Entry[], options: { raw?: Buffer; run?: string; env?: Record<string, string> } = {}): Promise<Outcome> {
    const file = join(work.path, `import-${++n}.tar`);
    writeFileSync(file, options.raw ?? (await packTar([...base, ...entries])));
    const name = `sec/import:${n}`;
    const r = await kiln(root, ['import', file, name], { env: options.env });
    if (r.code !== 0) {
      // A refused import tags nothing.
      const images = await kiln(root, ['images'], {});
      expect(images.stdout).not.toMatch(new RegExp(`^sec/import\\s+${n}\\s`, 'm'));
      return { code: r.code, stderr: r.stderr, log: r.stdout + r.stderr };
    }
    return build(`FROM ${name}\n${options.run ?? CHECK_RUN}\n`, options.env ?? {});
  }

  /** `kiln load -i` of an OCI layout whose one layer is the base rootfs plus `entries`. */
  async function viaLoad(entries: Entry[], options: { blob?: Buffer; diffId?: string; run?: string; env?: Record<string, string> } = {}): Promise<Outcome> {
    const layer = await packTar([...base, ...entries]);
    const blob = options.blob ?? gzipSync(layer);
    const name = `sec/load:${++n}`;
    const file = join(work.path, `load-${n}.tar`);
    writeFileSync(file, await ociArchive(name, blob, options.diffId ?? sha(layer)));
    const r = await kiln(root, ['load', '-i', file], { env: options.env });
    if (r.code !== 0) return { code: r.code, stderr: r.stderr, log: r.stdout + r.stderr };
    // Loading only stores the blob: the layer is unpacked when the build needs its files.
    return build(`FROM ${name}\n${options.run ?? CHECK_RUN}\n`, options.env ?? {});
  }

  const ways = { add: viaAdd, import: viaImport, load: viaLoad } as const;

  // The host is checked first: an escape must show as an escape, whatever the exit code says.
  function expectRefused(o: Outcome, message: RegExp) {
    expectHostUntouched();
    expect(o.code, o.log).toBe(1);
    expect(o.stderr).toMatch(message);
    noStack(o.stderr);
  }

  function expectBuilt(o: Outcome): string {
    expectHostUntouched();
    expect(o.code, o.log).toBe(0);
    expect(execFileSync('tar', ['-xOf', o.tar!], { maxBuffer: 256 << 20 }).toString('latin1')).not.toContain(MARKER);
    return o.tar!;
  }

  it('keeps ".." and absolute names inside the rootfs', async () => {
    const entries: Entry[] = [
      [{ name: `../../../../../../../..${outside}/dotdot` }, 'dotdot'],
      [{ name: `a/../../../../../../../../..${outside}/dotdot2` }, 'dotdot2'],
      [{ name: `${outside}/absolute` }, 'absolute'],
      [{ name: `../../../../../../../../${TAG}` }, 'at the root'],
    ];
    for (const [way, run] of Object.entries(ways)) {
      const t = expectBuilt(await run(entries));
      for (const [path, text] of [[`${rel}/dotdot`, 'dotdot'], [`${rel}/dotdot2`, 'dotdot2'], [`${rel}/absolute`, 'absolute'], [TAG, 'at the root']]) {
        expect(fileIn(t, path!), `${way}: ${path}`).toBe(text);
      }
    }
  });

  it('never writes through a link the archive made to the host', async () => {
    const entries: Entry[] = [
      [{ name: 'esc', type: 'symlink', linkname: outside }],
      [{ name: 'esc/through-abs' }, 'through an absolute link'],
      [{ name: 'up', type: 'symlink', linkname: `../../../../../../../..${outside}` }],
      [{ name: 'up/through-rel' }, 'through a relative link'],
      [{ name: 'toroot', type: 'symlink', linkname: '/' }],
      [{ name: `toroot/tmp/${TAG}` }, 'through a link to /'],
    ];
    // ADD resolves names as a process chrooted at the rootfs would (docker unpacks ADD archives in
    // a chroot): the files land inside the image where the links point there.
    const t = expectBuilt(await viaAdd(entries));
    expect(fileIn(t, `${rel}/through-abs`)).toBe('through an absolute link');
    expect(fileIn(t, `${rel}/through-rel`)).toBe('through a relative link');
    expect(fileIn(t, `tmp/${TAG}`)).toBe('through a link to /');
    // A layer may not place files behind its own links at all.
    expectRefused(await viaImport(entries), /UNSAFE_ARCHIVE|written through the symbolic link "esc"/);
    expectRefused(await viaLoad(entries), /written through the symbolic link "esc"/);
  });

  it('refuses hard links to files outside the archive', async () => {
    for (const linkname of [canary, `../../../../../../../..${canary}`]) {
      const entries: Entry[] = [[{ name: 'hl', type: 'link', linkname }]];
      const add = await viaAdd(entries);
      // ADD resolves the target inside the rootfs, where there is no such file.
      expectRefused(add, /Cannot unpack "h\.tar"|no such file/);
      expectRefused(await viaImport(entries), /Hard link "hl" points (outside the layer|to .*which is not in the layer)/);
      expectRefused(await viaLoad(entries), /Hard link "hl" points (outside the layer|to .*which is not in the layer)/);
    }
  });

  it('refuses device nodes in ADD, keeps them in layers as docker does, and RUN cannot open them', async () => {
    const entries: Entry[] = [
      [{ name: 'devs/mem', type: 'character-device', devmajor: 1, devminor: 1, mode: 0o666 }],
      [{ name: 'devs/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o666 }],
    ];
    expectRefused(await viaAdd(entries), /character-device entries are not supported/);
    const run = 'RUN for d in /devs/mem /devs/sda; do if head -c 1 $d > /dev/null 2>&1; then echo "OPENED $d"; else echo "DENIED $d"; fi; done';
    for (const way of [viaImport, viaLoad]) {
      const o = await way(entries, { run });
      const t = expectBuilt(o);
      expect(o.log).toContain('DENIED /devs/mem');
      expect(o.log).toContain('DENIED /devs/sda');
      expect(o.log).not.toMatch(/^#\d+ [\d.]+ OPENED/m);
      expect(listing(t)).toMatch(/^crw-rw-rw- .* 1,\s*1 .*devs\/mem$/m);
    }
  });

  it('keeps setuid, setgid and sticky bits exactly as the archive gives them', async () => {
    const entries: Entry[] = [
      [{ name: 'modes/suid', mode: 0o4755 }, '#!/bin/sh\n'],
      [{ name: 'modes/sgid', mode: 0o2711 }, '#!/bin/sh\n'],
      [{ name: 'modes/plain', mode: 0o755 }, '#!/bin/sh\n'],
      [{ name: 'modes/owned', mode: 0o4750, uid: 1000, gid: 1000 }, '#!/bin/sh\n'],
      [{ name: 'modes/sticky', type: 'directory', mode: 0o1777 }],
    ];
    for (const [way, run] of Object.entries(ways)) {
      const list = listing(expectBuilt(await run(entries)));
      const mode = (name: string) => new RegExp(`^(\\S+) .*modes/${name}/?$`, 'm').exec(list)?.[1];
      expect([mode('suid'), mode('sgid'), mode('plain'), mode('owned'), mode('sticky')], way).toEqual(['-rwsr-xr-x', '-rwx--s--x', '-rwxr-xr-x', '-rwsr-x---', 'drwxrwxrwt']);
      expect(list, way).toMatch(/^-rwsr-x--- 1000\/1000 .*modes\/owned$/m);
    }
  });

  it('lets a later duplicate entry replace an earlier one', async () => {
    const entries: Entry[] = [
      [{ name: 'dup/file' }, 'first'],
      [{ name: 'dup/file' }, 'second'],
      [{ name: 'dup/link', type: 'symlink', linkname: canary }],
      [{ name: 'dup/link' }, 'a file now'],
    ];
    for (const [way, run] of Object.entries(ways)) {
      const t = expectBuilt(await run(entries));
      expect(fileIn(t, 'dup/file'), way).toBe('second');
      expect(listing(t), way).toMatch(/^-\S+ .*dup\/link$/m);
      expect(fileIn(t, 'dup/link'), way).toBe('a file now');
    }
  });

  it('fails truncated and corrupt gzip streams with a clear error', async () => {
    const big = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 251));
    const entries: Entry[] = [[{ name: 'big' }, big], [{ name: 'after' }, 'after']];
    const cut = (gz: Buffer) => gz.subarray(0, Math.floor(gz.length / 2));
    const flip = (gz: Buffer) => {
      const copy = Buffer.from(gz);
      for (let i = Math.floor(copy.length / 2); i < copy.length / 2 + 64; i++) copy[i] ^= 0x5a;
      return copy;
    };
    // Where flipped bytes land varies with the base layer's times: zlib may refuse the stream, or
    // it may inflate into a damaged tar header. Either must be a clear refusal.
    for (const damage of [cut, flip]) {
      const addTar = damage(gzipSync(await packTar(entries)));
      expectRefused(await viaAdd([], { raw: addTar }), /Cannot unpack "h\.tar"|ARCHIVE_INVALID|unexpected end|incorrect|invalid|bad header/i);
      const full = await packTar([...base, ...entries]);
      expectRefused(await viaImport([], { raw: damage(gzipSync(full)) }), /unexpected end|incorrect|invalid|truncated|corrupt|bad header/i);
      // The blob's digest is of the damaged bytes, so only unpacking can tell.
      expectRefused(await viaLoad(entries, { blob: damage(gzipSync(full)), diffId: sha(full) }), /unexpected end|incorrect|invalid|truncated|corrupt|bad header/i);
    }
  });

  it('stops a decompression bomb at KILN_MAX_UNPACKED_SIZE', async () => {
    const env = { KILN_MAX_UNPACKED_SIZE: '24M' };
    const entries: Entry[] = [[{ name: 'zeros' }, Buffer.alloc(64 << 20)]];
    const message = /unpacks to more than 25165824 bytes/;
    expectRefused(await viaAdd(entries, { gzip: true, env }), message);
    expectRefused(await viaImport([], { raw: gzipSync(await packTar([...base, ...entries])), env }), message);
    expectRefused(await viaLoad(entries, { env }), message);
    // The archive kiln load reads is itself bounded, before any layer in it.
    const outer = join(work.path, 'outer-bomb.tar.gz');
    writeFileSync(outer, gzipSync(await packTar([[{ name: 'blobs/sha256/junk' }, Buffer.alloc(64 << 20)]])));
    const r = await kiln(root, ['load', '-i', outer], { env });
    expectRefused({ code: r.code, stderr: r.stderr, log: r.stderr }, /The archive unpacks to more than 25165824 bytes/);
    // The same archives pass under the default limit.
    expectBuilt(await viaAdd(entries, { gzip: true }));
  });
});
