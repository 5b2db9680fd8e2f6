import { chmodSync, chownSync, copyFileSync, lchownSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, symlinkSync, utimesSync } from 'node:fs';
import { chmod, chown, rm, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { acquireCacheMount } from '../../cache/cachemounts.js';
import type { LayerRow } from '../../cache/db.js';
import { KilnError } from '../../cache/errors.js';
import { run } from '../../cache/exec.js';
import { isErrno, randomId } from '../../cache/fsutil.js';
import { ensureLayerFs } from '../../cache/layers.js';
import { isOpaque, mountOverlay, mountsUnder, mountTmpfs, unmount } from '../../cache/overlay.js';
import type { Store } from '../../cache/store.js';
import type { ExecOp } from '../../solver/graph.js';
import { EMPTY_SESSION, type SolvedVertex, type StepContext } from '../../solver/worker.js';
import type { SpecMount } from '../executor/executor.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { TimeSlice } from '../fsutil/timeslice.js';
import { hasGlob } from '../fsutil/glob.js';
import { exclusionFor } from '../sources/exclusion.js';
import { cleanSource, escapesRoot, NO_EXCLUSION, type Exclusion, type Selection } from '../sources/select.js';

/**
 * Mounts a chain of layers on `target`: with `upper`, a writable view whose changes land there;
 * without, a read-only view. An empty layer at the bottom keeps at least two lowers, which a
 * read-only overlay needs, and gives FROM scratch a root.
 */
export async function mountLayers(store: Store, layers: readonly LayerRow[], target: string, rw?: { upper: string; work: string }, signal?: AbortSignal): Promise<void> {
  for (const l of layers) await ensureLayerFs(store, l.diffId, signal);
  // overlayfs refuses a directory twice. A lower repeat of a layer changes nothing in the merged
  // view (its copy above shows or hides every path it has), so only the topmost is kept.
  const lower: string[] = [];
  for (const l of [...layers].reverse()) {
    const link = await store.shortLink(l.diffId);
    if (!lower.includes(link)) lower.push(link);
  }
  lower.push(await store.emptyLayer());
  if (!rw && lower.length === 1) lower.push(await store.emptyLayer(1));
  await mountOverlay(target, { lower, upper: rw?.upper, work: rw?.work });
}

/** Runs `fn` with a read-only view of `layers` mounted, under a lease; unmounts after. */
export async function withReadOnlyView<T>(store: Store, layers: readonly LayerRow[], fn: (root: string) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const mnt = join(store.mntDir, `ro-${randomId()}`);
  return store.withLease('dir', mnt, async () => {
    mkdirSync(mnt, { recursive: true });
    try {
      await mountLayers(store, layers, mnt, undefined, signal);
      try {
        return await fn(mnt);
      } finally {
        await unmount(mnt);
      }
    } finally {
      await rm(mnt, { recursive: true, force: true });
    }
  });
}

/**
 * COPY --from sources read straight from the layer directories, without mounting a view: for
 * each plain source path (no glob), the one layer that holds it whole — the topmost layer that
 * has it, with no layer below having anything at that path and nothing above hiding it — gives
 * the same tree the merged view would, apart from whiteouts (which the copy skips). Undefined
 * when a source is not that simple (a glob, the root, a link on the way, a directory that several
 * layers merge); the caller mounts a view then. Reading through overlayfs costs about twice as
 * much per file as reading the layer directory.
 */
export async function layerSources(store: Store, layers: readonly LayerRow[], patterns: readonly string[], signal?: AbortSignal): Promise<Selection[] | undefined> {
  // Sources outside the root are refused by the view's selection, with its message.
  if (patterns.some(escapesRoot)) return undefined;
  const rels = patterns.map(cleanSource);
  if (rels.some((rel) => rel === '.' || hasGlob(rel))) return undefined;
  for (const l of layers) await ensureLayerFs(store, l.diffId, signal);
  const dirs = [...new Set([...layers].reverse().map((l) => store.layerFs(l.diffId)))];
  const out: Selection[] = [];
  for (const [i, rel] of rels.entries()) {
    const dir = soleLayerOf(dirs, rel.split('/'));
    if (dir === undefined) return undefined;
    out.push({ pattern: patterns[i]!, matches: [{ rel, host: `${dir}/${rel}` }] });
  }
  return out;
}

/** The layer directory (of `dirs`, top first) that alone holds the path `parts`, or undefined. */
function soleLayerOf(dirs: readonly string[], parts: readonly string[]): string | undefined {
  let found: string | undefined;
  for (const dir of dirs) {
    const probe = probeLayer(dir, parts, found === undefined);
    if (found !== undefined) {
      if (probe.kind !== 'absent') return undefined;
    } else if (probe.kind === 'dir' || probe.kind === 'file') {
      found = dir;
    } else if (probe.kind === 'other' || probe.opaque) {
      // A whiteout, a link or a file on the way, or an opaque directory hiding the layers below.
      return undefined;
    }
  }
  return found;
}

/**
 * What the path `parts` is in one unpacked layer, walked with lstat so that no link is followed:
 * absent (a component is missing below real directories), a directory, a regular file, or
 * anything else. `opaque`: a directory on the way is opaque (read only when asked).
 */
function probeLayer(root: string, parts: readonly string[], readOpaque: boolean): { kind: 'absent' | 'dir' | 'file' | 'other'; opaque: boolean } {
  let path = root;
  let opaque = false;
  for (const [i, part] of parts.entries()) {
    path += `/${part}`;
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st === undefined) return { kind: 'absent', opaque };
    const last = i === parts.length - 1;
    if (st.isDirectory()) {
      if (readOpaque && !opaque) opaque = isOpaque(path);
      if (last) return { kind: 'dir', opaque };
    } else {
      return { kind: last && st.isFile() ? 'file' : 'other', opaque };
    }
  }
  return { kind: 'other', opaque };
}

/** What a RUN step's `--mount`s become: runtime mounts, environment, and how to undo them. */
export interface PreparedMounts {
  mounts: SpecMount[];
  /** Environment entries to add (secrets with `env=`, SSH_AUTH_SOCK). */
  env: string[];
  /** Container paths mounted over: created for the run only, never part of the layer. */
  targets: string[];
  /** True when the process spec carries a secret and must stay in memory. */
  sensitive: boolean;
  dispose(): Promise<void>;
}

/**
 * Sets up the mounts of a RUN step on the host: views of other inputs for binds, persistent
 * cache directories, secrets on a tmpfs. Everything is leased, so a crash leaves nothing that
 * recovery cannot find.
 */
export async function prepareRunMounts(store: Store, op: ExecOp, inputs: readonly SolvedVertex[], ctx: StepContext): Promise<PreparedMounts> {
  const undo: (() => Promise<void> | void)[] = [];
  const out: PreparedMounts = {
    mounts: [],
    env: [],
    targets: [],
    sensitive: false,
    dispose: async () => {
      let first: unknown;
      for (const fn of undo.reverse()) {
        try {
          await fn();
        } catch (err) {
          // Keep undoing the rest: one stuck mount must not leave the others behind.
          first ??= err;
        }
      }
      undo.length = 0;
      if (first) throw first;
    },
  };
  const scratch = async (prefix: string) => {
    const dir = join(store.mntDir, `${prefix}-${randomId()}`);
    const lease = store.lease('dir', dir);
    undo.push(async () => {
      for (const m of await mountsUnder(dir)) await unmount(m);
      await rm(dir, { recursive: true, force: true });
      store.release(lease);
    });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return dir;
  };
  let secretsDir: string | undefined;
  let sshCount = 0;
  try {
    for (const [index, m] of (op.mounts ?? []).entries()) {
      ctx.signal.throwIfAborted();
      const target = 'target' in m && m.target !== undefined ? posix.resolve(op.cwd, m.target) : undefined;
      if (m.type === 'bind') {
        const source = await inputPath(store, inputs, m.input, m.source, m.readwrite, scratch, ctx.signal);
        out.mounts.push({ destination: target!, type: 'bind', source, options: ['rbind', m.readwrite ? 'rw' : 'ro'] });
        out.targets.push(target!);
      } else if (m.type === 'cache') {
        const seed =
          m.input === undefined
            ? undefined
            : async (dir: string) => {
                const from = await inputPath(store, inputs, m.input!, m.source ?? '/', false, scratch, ctx.signal);
                await run('cp', ['-a', '--', `${from}/.`, dir]);
              };
        const cache = await acquireCacheMount(store, { id: m.id, sharing: m.sharing, mode: m.mode, uid: m.uid, gid: m.gid, seed, signal: ctx.signal });
        undo.push(() => cache.release());
        out.mounts.push({ destination: target!, type: 'bind', source: cache.dir, options: ['rbind', m.readonly ? 'ro' : 'rw'] });
        out.targets.push(target!);
      } else if (m.type === 'tmpfs') {
        const options = ['nosuid', 'nodev', 'mode=1777', ...(m.size !== undefined ? [`size=${m.size}`] : [])];
        out.mounts.push({ destination: target!, type: 'tmpfs', source: 'tmpfs', options });
        out.targets.push(target!);
      } else if (m.type === 'secret') {
        const value = await (ctx.session ?? EMPTY_SESSION).secret(m.id);
        if (value === undefined) {
          if (!m.required) continue;
          throw new KilnError('SECRET_MISSING', `Secret "${m.id}" was not given to the build`, {
            hint: `Pass it with "kiln build --secret id=${m.id},src=FILE" or "id=${m.id},env=VARIABLE"`,
          });
        }
        if (m.env !== undefined) {
          out.env.push(`${m.env}=${value.toString('utf8')}`);
          out.sensitive = true;
        }
        if (m.env === undefined || target !== undefined) {
          if (secretsDir === undefined) {
            secretsDir = await scratch('secrets');
            await mountTmpfs(secretsDir, 'mode=700,size=4m');
          }
          const file = join(secretsDir, String(index));
          await writeFile(file, value, { mode: m.mode });
          await chmod(file, m.mode);
          await chown(file, m.uid, m.gid);
          const dest = target ?? `/run/secrets/${m.id}`;
          out.mounts.push({ destination: dest, type: 'bind', source: file, options: ['rbind', 'ro'] });
          out.targets.push(dest);
        }
      } else if (m.type === 'ssh') {
        const socket = (ctx.session ?? EMPTY_SESSION).ssh(m.id);
        if (socket === undefined) {
          if (!m.required) continue;
          throw new KilnError('SSH_MISSING', `No SSH agent was given to the build for id "${m.id}"`, {
            hint: `Pass one with "kiln build --ssh ${m.id}=$SSH_AUTH_SOCK"`,
          });
        }
        const dest = target ?? `/run/buildkit/ssh_agent.${sshCount}`;
        if (sshCount === 0) out.env.push(`SSH_AUTH_SOCK=${dest}`);
        sshCount++;
        out.mounts.push({ destination: dest, type: 'bind', source: socket, options: ['rbind'] });
        out.targets.push(dest);
      }
    }
  } catch (err) {
    await out.dispose();
    throw err;
  }
  return out;
}

/**
 * A host path showing `source` of input `index`: the context directory itself, or a view of a
 * stage or image mounted for the step. `writable` gives a throwaway upper layer: writes made
 * through it are discarded with it.
 */
async function inputPath(
  store: Store,
  inputs: readonly SolvedVertex[],
  index: number,
  source: string,
  writable: boolean,
  scratch: (prefix: string) => Promise<string>,
  signal: AbortSignal,
): Promise<string> {
  const input = inputs[index];
  if (!input) throw new KilnError('INTERNAL', `A mount refers to input ${index}, which the step does not have`);
  const op = input.vertex.op;
  let root: string;
  // The context as .dockerignore leaves it: what COPY sees and what the step's key covers.
  let context = op.kind === 'context' ? op.source : undefined;
  let path: string | undefined;
  if (op.kind === 'context') {
    const exclusion = exclusionFor(op.exclude);
    if (exclusion !== NO_EXCLUSION) {
      const host = await secureJoin(op.source, source);
      const rel = posix.relative(op.source, host);
      lstatOrMissing(host, source, input.vertex.meta.name || op.kind);
      context = join(await scratch('context'), 'view');
      mkdirSync(join(context, rel, '..'), { recursive: true });
      await copyFiltered(op.source, host, join(context, rel), exclusion, signal);
      path = rel;
    }
  }
  if (context !== undefined && !writable) {
    root = context;
  } else {
    const dir = await scratch('bind');
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    if (context !== undefined) {
      mkdirSync(join(dir, 'upper'));
      mkdirSync(join(dir, 'work'));
      await mountOverlay(mnt, { lower: [context], upper: join(dir, 'upper'), work: join(dir, 'work') });
    } else if (writable) {
      mkdirSync(join(dir, 'upper'));
      mkdirSync(join(dir, 'work'));
      await mountLayers(store, input.snapshot.layers, mnt, { upper: join(dir, 'upper'), work: join(dir, 'work') }, signal);
    } else {
      await mountLayers(store, input.snapshot.layers, mnt, undefined, signal);
    }
    root = mnt;
  }
  if (path !== undefined) return join(root, path);
  const joined = await secureJoin(root, source);
  lstatOrMissing(joined, source, input.vertex.meta.name || op.kind);
  return joined;
}

function lstatOrMissing(path: string, source: string, what: string): void {
  try {
    lstatSync(path);
  } catch (err) {
    if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    throw new KilnError('MOUNT_SOURCE_MISSING', `Mount source "${source}" not found in ${what}`);
  }
}

/**
 * Copies `from` (under the context `root`) to `to`, leaving out what `exclusion` excludes, as the
 * context checksum walks it (src/sources/checksum.ts): an excluded directory is skipped whole.
 * Files are hard links where the store shares the context's filesystem (the view is mounted
 * read-only, or under an overlay whose writes go to its upper layer), copies elsewhere.
 * Synchronous calls paced by a TimeSlice, as COPY does (src/worker/copy.ts): one awaited call
 * per file cost a thread-pool round trip each.
 */
async function copyFiltered(root: string, from: string, to: string, exclusion: Exclusion, signal: AbortSignal): Promise<void> {
  const slice = new TimeSlice(signal);
  const visit = async (src: string, dst: string, top: boolean): Promise<void> => {
    const wait = slice.pause();
    if (wait) await wait;
    const rel = posix.relative(root, src);
    if (!top && rel !== '' && exclusion.excluded(rel)) return;
    const st = lstatSync(src);
    if (st.isDirectory()) {
      mkdirSync(dst);
      for (const name of readdirSync(src)) await visit(`${src}/${name}`, `${dst}/${name}`, false);
      chownSync(dst, st.uid, st.gid);
      chmodSync(dst, st.mode & 0o7777);
      utimesSync(dst, st.atime, st.mtime);
    } else if (st.isSymbolicLink()) {
      symlinkSync(readlinkSync(src), dst);
      lchownSync(dst, st.uid, st.gid);
    } else if (st.isFile()) {
      try {
        linkSync(src, dst);
      } catch (err) {
        if (!isErrno(err, 'EXDEV') && !isErrno(err, 'EPERM')) throw err;
        copyFileSync(src, dst);
        chownSync(dst, st.uid, st.gid);
        chmodSync(dst, st.mode & 0o7777);
        utimesSync(dst, st.atime, st.mtime);
      }
    }
    // Sockets, fifos and devices are not reproduced: a bind mount of a context has no use for them.
  };
  await visit(from, to, true);
}
