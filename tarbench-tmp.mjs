import { diffTar } from './dist/cache/diff.js';
import { Hasher } from './dist/cache/digest.js';
import { Store } from './dist/cache/store.js';
import { storeLayerTarSized } from './dist/cache/layers.js';
const mode = process.argv[2]; const dir = process.argv[3];
const store = await Store.open('/dev/shm/kb/tb');
const t = process.hrtime.bigint();
if (mode === 'hash') { const h = new Hasher(); for await (const c of diffTar(dir, {})) h.update(c); h.digest(); }
else { await storeLayerTarSized(store, diffTar(dir, {})); }
console.log(mode, (Number(process.hrtime.bigint() - t) / 1e6).toFixed(1));
store.close();
