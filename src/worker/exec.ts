import { lstat, mkdir, readdir, rmdir, unlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import type { LayerRow } from '../../cache/db.js';
import { KilnError } from '../../cache/errors.js';
import { isErrno } from '../../cache/fsutil.js';
import { commitWorkspace } from '../../cache/layers.js';
import { unmount } from '../../cache/overlay.js';
import type { Store } from '../../cache/store.js';
import type { ExecOp } from '../../solver/graph.js';
import type { Snapshot, StepContext } from '../../solver/worker.js';
import type { Executor } from '../executor/executor.js';
import { MOUNT_POINTS } from '../executor/spec.js';
import { resolveUser } from '../executor/user.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { mountLayers } from './mount.js';

/** Runs a RUN step: overlay over the root snapshot, the process in a container, the upper as a layer. */
export async function runExec(store: Store, executor: Executor, op: ExecOp, root: Snapshot, ctx: StepContext): Promise<LayerRow | null> {
  const ws = await store.createWorkspace();
  try {
    await mountLayers(store, root.layers, ws.mnt, ws, ctx.signal);
    let code: number;
    let stubs: string[];
    try {
      stubs = await missingPaths(ws.mnt, MOUNT_POINTS);
      const cwd = await secureJoin(ws.mnt, op.cwd);
      await mkdir(cwd, { recursive: true, mode: 0o755 });
      const user = await resolveUser(ws.mnt, op.user);
      const out = new StringDecoder('utf8');
      const err = new StringDecoder('utf8');
      code = await executor.run(
        { args: op.args, env: op.env, cwd: op.cwd, user, network: op.network, hostname: op.hostname },
        {
          rootfs: ws.mnt,
          signal: ctx.signal,
          onStdout: (c) => ctx.log(1, out.write(c)),
          onStderr: (c) => ctx.log(2, err.write(c)),
        },
      );
    } finally {
      await unmount(ws.mnt);
    }
    await removeStubs(ws.upper, stubs);
    if (code !== 0) {
      throw new KilnError('STEP_FAILED', `Process "${op.args.join(' ')}" did not complete successfully: exit code ${code}`);
    }
    return await commitWorkspace(store, ws, { signal: ctx.signal });
  } finally {
    await store.disposeWorkspace(ws);
  }
}

/**
 * The paths (and their missing parents) that do not exist in the root: the runtime will create
 * them as mount points, and they must not end up in the layer.
 */
async function missingPaths(rootfs: string, paths: readonly string[]): Promise<string[]> {
  const missing = new Set<string>();
  for (const p of paths) {
    let cur = p;
    while (cur !== '/') {
      try {
        await lstat(posix.join(rootfs, cur));
        break;
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
        missing.add(cur);
      }
      cur = posix.dirname(cur);
    }
  }
  // Deepest first, so that a parent is empty by the time it is considered.
  return [...missing].sort((a, b) => b.length - a.length);
}

/** Removes mount-point stubs from the upper directory, but only while they are still empty. */
async function removeStubs(upper: string, stubs: readonly string[]): Promise<void> {
  for (const stub of stubs) {
    const p = posix.join(upper, stub);
    try {
      const st = await lstat(p);
      if (st.isDirectory()) {
        if ((await readdir(p)).length === 0) await rmdir(p);
      } else if (st.isFile() && st.size === 0) {
        await unlink(p);
      }
    } catch (err) {
      // The step may have removed or replaced the stub itself; then there is nothing to undo.
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
}
