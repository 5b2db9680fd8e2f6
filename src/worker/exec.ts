import { lstatSync, mkdirSync, readdirSync, rmdirSync, type Stats, unlinkSync, utimesSync } from 'node:fs';
import { posix } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { LayerRow } from '../../cache/db.js';
import { KilnError, NO_SPACE_HINT } from '../../cache/errors.js';
import { diskFull, isErrno } from '../../cache/fsutil.js';
import { commitWorkspace } from '../../cache/layers.js';
import { traced } from '../../cache/trace.js';
import { isOpaque, unmount } from '../../cache/overlay.js';
import type { Store } from '../../cache/store.js';
import type { ExecOp } from '../../solver/graph.js';
import type { Snapshot, SolvedVertex, StepContext } from '../../solver/worker.js';
import type { Executor } from '../executor/executor.js';
import { MOUNT_POINTS } from '../executor/spec.js';
import { resolveUser } from '../executor/user.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { mountLayers, prepareRunMounts } from './mount.js';

/** Runs a RUN step: overlay over the root snapshot, the process in a container, the upper as a layer. */
export async function runExec(store: Store, executor: Executor, op: ExecOp, inputs: readonly SolvedVertex[], ctx: StepContext): Promise<LayerRow | null> {
  if (op.security === 'insecure' && !(ctx.session?.allow.has('security.insecure') ?? false)) {
    throw new KilnError('ENTITLEMENT_MISSING', 'RUN --security=insecure needs the "security.insecure" entitlement', {
      hint: 'Grant it with "kiln build --allow security.insecure"',
    });
  }
  if (op.network === 'host' && !(ctx.session?.allow.has('network.host') ?? false)) {
    throw new KilnError('ENTITLEMENT_MISSING', 'RUN --network=host needs the "network.host" entitlement', {
      hint: 'Grant it with "kiln build --allow network.host" (a build service must also be started with --allow-entitlement network.host)',
    });
  }
  const root: Snapshot = op.root >= 0 ? inputs[op.root]!.snapshot : { layers: [] };
  const ws = await store.createWorkspace();
  try {
    await traced('mount', () => mountLayers(store, root.layers, ws.mnt, ws, ctx.signal));
    let code: number;
    let stubs: Stubs;
    try {
      const extra = await prepareRunMounts(store, op, inputs, ctx);
      try {
        stubs = missingPaths(ws.mnt, [...MOUNT_POINTS, ...extra.targets]);
        const cwd = await secureJoin(ws.mnt, op.cwd);
        mkdirSync(cwd, { recursive: true, mode: 0o755 });
        const user = await resolveUser(ws.mnt, op.user);
        const out = new StringDecoder('utf8');
        const err = new StringDecoder('utf8');
        code = await traced('runtime', () => executor.run(
          {
            args: op.args,
            env: [...op.env, ...extra.env],
            cwd: op.cwd,
            user,
            network: op.network,
            hostname: op.hostname,
            mounts: extra.mounts,
            security: op.security,
            extraHosts: op.extraHosts,
            ulimits: op.ulimits,
            shmSize: op.shmSize,
          },
          {
            rootfs: ws.mnt,
            signal: ctx.signal,
            sensitive: extra.sensitive,
            onStdout: (c) => ctx.log(1, out.write(c)),
            onStderr: (c) => ctx.log(2, err.write(c)),
          },
        ));
      } finally {
        await extra.dispose();
      }
    } finally {
      await traced('unmount', () => unmount(ws.mnt));
    }
    removeStubs(ws.upper, stubs);
    if (code !== 0) {
      // A step whose writes filled the store's disk fails with its own words ("I/O error"): say why.
      const full = await diskFull(store.root);
      const why = full ? ` (the store's disk at "${store.root}" has no space left on device)` : '';
      throw new KilnError('STEP_FAILED', `Process "${op.args.join(' ')}" did not complete successfully: exit code ${code}${why}`, full ? { hint: NO_SPACE_HINT } : {});
    }
    return await traced('snapshot', () => commitWorkspace(store, ws, { signal: ctx.signal, sourceDateEpoch: ctx.sourceDateEpoch, blob: ctx.layerBlob }));
  } finally {
    await store.disposeWorkspace(ws);
  }
}

interface Stubs {
  /** Paths the runtime will create, deepest first. */
  missing: string[];
  /** Existing directories that will hold them, with their metadata before the run. */
  parents: Map<string, Stats>;
}

/**
 * The paths (and their missing parents) that do not exist in the root: the runtime will create
 * them as mount points, and they must not end up in the layer.
 */
function missingPaths(rootfs: string, paths: readonly string[]): Stubs {
  const missing = new Set<string>();
  const parents = new Map<string, Stats>();
  for (const p of paths) {
    let cur = p;
    while (cur !== '/') {
      try {
        lstatSync(posix.join(rootfs, cur));
        break;
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
        missing.add(cur);
      }
      cur = posix.dirname(cur);
    }
    if (cur !== p && cur !== '/' && !parents.has(cur)) parents.set(cur, lstatSync(posix.join(rootfs, cur)));
  }
  // Deepest first, so that a parent is empty by the time it is considered.
  return { missing: [...missing].sort((a, b) => b.length - a.length), parents };
}

/**
 * Whether every parent of `rel` in `upper` is a directory. The step may have turned one into a
 * link, whose target the host would resolve: `/x -> /home` made `x/y/stub` a host path.
 */
function throughDirectories(upper: string, rel: string): boolean {
  const parts = rel.split('/').filter((s) => s !== '');
  let p = upper;
  for (const part of parts.slice(0, -1)) {
    p = posix.join(p, part);
    try {
      if (!lstatSync(p).isDirectory()) return false;
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
      throw err;
    }
  }
  return true;
}

/**
 * Removes mount-point stubs from the upper directory, but only while they are still empty. An
 * existing directory that was copied up only to hold a stub goes too; one that the step changed
 * gets its times back.
 */
function removeStubs(upper: string, stubs: Stubs): void {
  for (const stub of stubs.missing) {
    if (!(throughDirectories(upper, stub))) continue;
    const p = posix.join(upper, stub);
    try {
      const st = lstatSync(p);
      if (st.isDirectory()) {
        if (readdirSync(p).length === 0) rmdirSync(p);
      } else if (st.isFile() && st.size === 0) {
        unlinkSync(p);
      }
    } catch (err) {
      // The step may have removed or replaced the stub itself; then there is nothing to undo.
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  for (const [dir, before] of stubs.parents) {
    if (!(throughDirectories(upper, dir))) continue;
    const p = posix.join(upper, dir);
    let st: Stats;
    try {
      st = lstatSync(p);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) continue;
      throw err;
    }
    if (!st.isDirectory()) continue;
    utimesSync(p, before.atime, before.mtime);
    const untouched = st.mode === before.mode && st.uid === before.uid && st.gid === before.gid;
    if (untouched && readdirSync(p).length === 0 && !isOpaque(p)) rmdirSync(p);
  }
}

