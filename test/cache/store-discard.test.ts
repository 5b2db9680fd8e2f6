import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../../cache/digest.js';
import { Store } from '../../cache/store.js';

/** A workspace whose upper directory holds `files` small files. */
async function filledWorkspace(store: Store, files: number) {
  const ws = await store.createWorkspace();
  mkdirSync(join(ws.upper, 'many'));
  for (let i = 0; i < files; i++) writeFileSync(join(ws.upper, 'many', String(i)), `${i}\n`);
  return ws;
}

describe('a layer directory committed twice', () => {
  let root: string;
  let store: Store;
  const diffId = `sha256:${'ab'.repeat(32)}` as Digest;

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'kiln-discard-'));
    store = await Store.open(root);
  });

  afterAll(() => {
    store.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps the first, removes the second in the background, and settle() waits for that', async () => {
    const first = await filledWorkspace(store, 10);
    await store.commitLayerDir(first, diffId);
    await store.disposeWorkspace(first);
    expect(readdirSync(join(store.layerFs(diffId), 'many'))).toHaveLength(10);

    const second = await filledWorkspace(store, 3000);
    await store.commitLayerDir(second, diffId);
    await store.disposeWorkspace(second);
    // The first directory stays the layer; the second is set aside, still leased.
    expect(readdirSync(join(store.layerFs(diffId), 'many'))).toHaveLength(10);
    expect(existsSync(second.dir)).toBe(false);

    await store.settle();
    expect(readdirSync(store.layersDir).filter((n) => n.startsWith('.work-'))).toEqual([]);
    expect(store.db.allLeases()).toEqual([]);
  });
});
