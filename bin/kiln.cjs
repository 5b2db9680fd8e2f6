#!/usr/bin/env node
'use strict';
// Started by bin/kiln (a shell script that keeps NODE_EXTRA_CA_CERTS from Node's start-up); it
// can also be run as `node bin/kiln.cjs`. A CommonJS script: an ES module entry starts Node's ES
// module loader (a dozen internal modules, resolution, linking), which nothing else here needs:
// `kiln version` costs ~15 ms less CPU without it.
const { statSync } = require('node:fs');
const { dirname, join } = require('node:path');
const { pathToFileURL } = require('node:url');

// `npm run build` compiles with tsc into dist/ and then bundles that output into dist/bundle/
// (scripts/bundle.mjs): CommonJS chunks, which start much faster than a hundred separate ES
// modules. A bundle older than tsc's output is stale (tsc ran on its own since) and is passed over.
const bundle = join(__dirname, '../dist/bundle/kiln.cjs');
const compiled = join(__dirname, '../dist/src/cli/main.js');

function modified(path) {
  try {
    return statSync(path).mtimeMs;
  } catch (err) {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  }
}

function fail(err) {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}

const bundled = modified(bundle);
const tsc = modified(compiled);
const useBundle = bundled !== undefined && (tsc === undefined || bundled >= tsc);
if (useBundle) require('./code-cache.cjs').useCodeCache(dirname(bundle));
const loaded = useBundle ? Promise.resolve(require(bundle)) : import(pathToFileURL(compiled).href);
loaded.then(({ main }) =>
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, fail),
).catch(fail);
