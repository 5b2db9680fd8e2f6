/**
 * `kiln store verify`: every blob against its digest, every record against what it points to.
 * Problems are what would make a build or an image fail; notes are harmless leftovers that the
 * next collection removes.
 */
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { Hasher } from './digest.js';
import { contextFiles } from './gc.js';
import { isErrno } from './fsutil.js';
import { isAlive } from './lease.js';
import type { Store } from './store.js';

export interface VerifyReport {
  blobs: number;
  layers: number;
  images: number;
  records: number;
  /** Files of the build service's context upload cache, when it has any. */
  contextFiles?: number;
  problems: string[];
  notes: string[];
}

export async function verifyStore(store: Store, options: { signal?: AbortSignal } = {}): Promise<VerifyReport> {
  const db = store.db;
  const report: VerifyReport = { blobs: 0, layers: 0, images: 0, records: 0, problems: [], notes: [] };
  const blobRows = db.allBlobs();
  const blobSet = new Set<string>(blobRows.map((b) => b.digest));
  for (const b of blobRows) {
    options.signal?.throwIfAborted();
    report.blobs++;
    let size: number;
    try {
      size = (await stat(store.blobs.path(b.digest))).size;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      report.problems.push(`Blob "${b.digest}" is recorded but its file is missing`);
      continue;
    }
    if (size !== b.size) report.problems.push(`Blob "${b.digest}" has ${size} bytes, the index says ${b.size}`);
    else if (!(await store.blobs.verify(b.digest))) report.problems.push(`Blob "${b.digest}" is corrupt: its content does not hash to its name`);
  }
  for (const name of await readdir(store.blobs.dir)) {
    if (!blobSet.has(`sha256:${name}`)) report.notes.push(`Blob file "${name}" has no index row (left by an interrupted write)`);
  }

  const layers = db.allLayers();
  const layerSet = new Set<string>(layers.map((l) => l.diffId));
  for (const l of layers) {
    report.layers++;
    if (l.blob === null) {
      // Never compressed: its directory is the only copy.
      if (!store.hasLayerFs(l.diffId)) report.problems.push(`Layer "${l.diffId}" has neither a blob nor a directory`);
    } else if (!blobSet.has(l.blob)) report.problems.push(`Layer "${l.diffId}" points to blob "${l.blob}", which is not in the store`);
  }

  const manifests = db.allManifests();
  const manifestSet = new Set<string>(manifests.map((m) => m.digest));
  for (const m of manifests) {
    report.images++;
    const missing = (what: string, d: string) => report.problems.push(`Image "${m.digest}" needs ${what} "${d}", which is not in the store`);
    if (!blobSet.has(m.digest)) {
      missing('its manifest blob', m.digest);
      continue;
    }
    if (!blobSet.has(m.config)) {
      missing('its config blob', m.config);
      continue;
    }
    let manifest: { config?: { digest?: string }; layers?: { digest: string }[] };
    let config: { rootfs?: { diff_ids?: string[] } };
    try {
      manifest = await store.blobs.readJson(m.digest);
      config = await store.blobs.readJson(m.config);
    } catch (err) {
      report.problems.push(`Image "${m.digest}" cannot be read: ${(err as Error).message}`);
      continue;
    }
    if (manifest.config?.digest !== m.config) report.problems.push(`Image "${m.digest}" names config "${manifest.config?.digest}", the index says "${m.config}"`);
    for (const l of manifest.layers ?? []) if (!blobSet.has(l.digest)) missing('layer blob', l.digest);
    for (const d of config.rootfs?.diff_ids ?? []) if (!layerSet.has(d)) missing('layer', d);
  }
  for (const t of db.allTags()) {
    if (!manifestSet.has(t.manifest)) report.problems.push(`Tag "${t.name}" points to image "${t.manifest}", which is not in the store`);
  }
  for (const r of db.allCache()) {
    report.records++;
    if (r.diffId !== null && !layerSet.has(r.diffId)) {
      report.problems.push(`Cache record "${r.key.slice(0, 19)}" (${r.description}) points to layer "${r.diffId}", which is not in the store`);
    }
  }
  for (const name of await readdir(store.layersDir)) {
    if (/^[a-f0-9]{64}$/.test(name) && !layerSet.has(`sha256:${name}`)) report.notes.push(`Layer directory "${name}" has no index row`);
  }
  // The build service's uploaded context files: a content's name is its checksum, and a variant's
  // name starts with the checksum of its content.
  for (const f of await contextFiles(store)) {
    options.signal?.throwIfAborted();
    const name = basename(f.path);
    const variant = dirname(f.path).endsWith('/variants');
    const expected = `sha256:${variant ? name.split('-')[0] : name}`;
    report.contextFiles = (report.contextFiles ?? 0) + 1;
    const actual = await hashFile(f.path);
    if (actual !== expected) report.problems.push(`Uploaded context file "${variant ? `variants/${name}` : name}" hashes to "${actual}", not to its name`);
  }
  for (const l of db.allLeases()) {
    if (!isAlive({ pid: l.pid, start: l.pidStart })) report.problems.push(`Lease "${l.id}" (${l.kind} "${l.target}") of dead process ${l.pid} was not recovered`);
  }
  return report;
}


async function hashFile(path: string): Promise<string> {
  const h = new Hasher();
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest();
}
