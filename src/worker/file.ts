import { chown, writeFile, chmod } from 'node:fs/promises';
import { posix } from 'node:path';
import type { LayerRow } from '../../cache/db.js';
import { commitWorkspace } from '../../cache/layers.js';
import { traced } from '../../cache/trace.js';
import { unmount } from '../../cache/overlay.js';
import type { Store } from '../../cache/store.js';
import type { CopyAction, FileOp, UserSpec } from '../../solver/graph.js';
import type { SolvedVertex, StepContext } from '../../solver/worker.js';
import { resolveOwner } from '../executor/user.js';
import { secureJoin } from '../fsutil/securejoin.js';
import { exclusionFor } from '../sources/exclusion.js';
import { NO_EXCLUSION, selectSources } from '../sources/select.js';
import { copyIntoRoot, mkdirResolved } from './copy.js';
import { layerSources, mountLayers, withReadOnlyView } from './mount.js';

/** Runs a file op (COPY, WORKDIR's mkdir…): actions applied to a writable view of the base. */
export async function runFile(store: Store, op: FileOp, inputs: readonly SolvedVertex[], ctx: StepContext): Promise<LayerRow | null> {
  const base = op.base >= 0 ? inputs[op.base]!.snapshot.layers : [];
  const ws = await store.createWorkspace();
  try {
    await traced('mount', () => mountLayers(store, base, ws.mnt, ws, ctx.signal));
    try {
      for (const [i, action] of op.actions.entries()) {
        ctx.signal.throwIfAborted();
        const owner = action.chown ? await resolveOwner(ws.mnt, action.chown) : undefined;
        if (action.action === 'copy') {
          // The last action may fill the directories it creates in the upper directory directly.
          const upper = i === op.actions.length - 1 ? ws.upper : undefined;
          await traced('copy', () => copyFrom(store, { root: ws.mnt, upper, layers: base }, action, inputs[action.from]!, owner, ctx.signal));
        } else if (action.action === 'mkdir') {
          await mkdirAll(ws.mnt, action.path, action.mode, owner);
        } else {
          const target = await secureJoin(ws.mnt, action.path);
          await mkdirAll(ws.mnt, posix.dirname(action.path), 0o755, undefined);
          await writeFile(target, action.data, { mode: action.mode });
          await chmod(target, action.mode);
          if (owner) await chown(target, owner.uid, owner.gid);
        }
      }
    } finally {
      await traced('unmount', () => unmount(ws.mnt));
    }
    return await traced('snapshot', () => commitWorkspace(store, ws, { signal: ctx.signal, sourceDateEpoch: ctx.sourceDateEpoch, blob: ctx.layerBlob }));
  } finally {
    await traced('dispose', () => store.disposeWorkspace(ws));
  }
}

/** `dest`: the mounted root, its upper directory when the copy may write there, the layers below. */
async function copyFrom(store: Store, dest: { root: string; upper?: string; layers: readonly LayerRow[] }, action: CopyAction, source: SolvedVertex, owner: { uid: number; gid: number } | undefined, signal: AbortSignal): Promise<void> {
  const op = source.vertex.op;
  const excludes = exclusionFor(action.exclude ?? []);
  if (op.kind === 'context') {
    const exclusion = exclusionFor(op.exclude);
    const selections = await selectSources(op.source, action.src, exclusion, 'the build context');
    await copyIntoRoot(dest.root, action, selections, { owner, fromContext: true, exclusion, excludes, srcRoot: op.source, signal, upper: dest.upper });
    return;
  }
  const options = { owner, fromContext: false, exclusion: NO_EXCLUSION, excludes, signal, upper: dest.upper };
  const direct = await layerSources(store, source.snapshot.layers, action.src, signal);
  if (direct !== undefined) {
    // Files of a layer the destination already has are copied: linked, the view would show one
    // file under two names.
    const below = dest.layers.map((l) => `${store.layerFs(l.diffId)}/`);
    const linkSources = direct.every((s) => s.matches.every((m) => !below.some((dir) => m.host.startsWith(dir))));
    await copyIntoRoot(dest.root, action, direct, { ...options, srcRoot: '/', layerSources: true, linkSources });
    return;
  }
  const what = source.vertex.meta.stage ? `stage "${source.vertex.meta.stage}"` : describeSource(source);
  await withReadOnlyView(store, source.snapshot.layers, async (srcRoot) => {
    const selections = await selectSources(srcRoot, action.src, NO_EXCLUSION, what);
    await copyIntoRoot(dest.root, action, selections, { ...options, srcRoot });
  }, signal);
}

function describeSource(source: SolvedVertex): string {
  const op = source.vertex.op;
  if (op.kind === 'http') return `the download of ${op.url}`;
  if (op.kind === 'git') return `the git repository ${op.url}`;
  if (op.kind === 'file') return 'the heredoc';
  return 'the source image';
}

/**
 * Makes a layer from nothing: `fill` writes into an empty root (a download, a git checkout).
 * Null when it wrote nothing.
 */
export async function writeLayer(store: Store, ctx: StepContext, fill: (root: string) => Promise<void>): Promise<LayerRow | null> {
  const ws = await store.createWorkspace();
  try {
    await mountLayers(store, [], ws.mnt, ws, ctx.signal);
    try {
      await fill(ws.mnt);
    } finally {
      await unmount(ws.mnt);
    }
    return await commitWorkspace(store, ws, { signal: ctx.signal, sourceDateEpoch: ctx.sourceDateEpoch, blob: ctx.layerBlob });
  } finally {
    await store.disposeWorkspace(ws);
  }
}

/** mkdir -p inside the root; only directories it creates get the mode and owner. */
async function mkdirAll(root: string, path: string, mode: number, owner: { uid: number; gid: number } | undefined): Promise<void> {
  let cur = '/';
  for (const part of path.split('/').filter(Boolean)) {
    cur = posix.join(cur, part);
    const host = await secureJoin(root, cur);
    let made: string[];
    try {
      made = await mkdirResolved(root, host);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    for (const dir of made) {
      await chmod(dir, mode);
      if (owner) await chown(dir, owner.uid, owner.gid);
    }
  }
}

export type { UserSpec };
