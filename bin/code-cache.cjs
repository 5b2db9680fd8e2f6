'use strict';
// V8's code cache for the bundle's chunks, used by bin/kiln.cjs. Its own file so that tests can
// name a chunk's cache file as Kiln does.
const { createHash } = require('node:crypto');
const { mkdirSync, readFileSync, realpathSync, renameSync, writeFileSync } = require('node:fs');
const { basename, dirname, join } = require('node:path');

/** Changes whenever the way chunks are compiled below does: a cache holds compile options too. */
const CODE_CACHE_FORMAT = 'kiln code cache 1\n';

/**
 * V8's code cache for the bundle's chunks, in dist/bundle/.v8-cache/: compiling them is the
 * largest single cost of a cached build after Node's own start (~25 ms of ~150). Each chunk is
 * compiled with the cache made the first time it ran, named by a hash of its source and of
 * CODE_CACHE_FORMAT (V8 itself checks a cache only against the source's length); a chunk without
 * one gets it written when the process exits, after it ran, so that it holds the functions
 * compiled lazily too. A directory Kiln cannot write to just means no cache.
 */
function useCodeCache(bundleDir) {
  const vm = require('node:vm');
  const Module = require('node:module');
  // As Node names modules: by real path, so that a chunk is one module however it is reached.
  const dir = realpathSync.native(bundleDir);
  const fresh = [];
  const plain = Module._extensions['.cjs'] ?? Module._extensions['.js'];
  Module._extensions['.cjs'] = function loadWithCodeCache(module, filename) {
    if (dirname(filename) !== dir) return plain(module, filename);
    const source = readFileSync(filename, 'utf8');
    // Node 20 loses a script's dynamic import callback when the script comes from a code cache
    // ("A dynamic import callback was not specified"): the chunks that import() (the tty view's
    // ink and react) load as Node loads them.
    if (source.includes('import(')) return plain(module, filename);
    const file = cacheFile(dir, filename, source);
    const cachedData = readCodeCache(file);
    const script = new vm.Script(Module.wrap(source), { filename, cachedData });
    if (cachedData === undefined || script.cachedDataRejected) fresh.push({ script, file });
    // The chunks sit side by side in `dir`: a require of one needs none of Node's resolution
    // (a stat and a realpath each, ~4 ms of a cached build's 33 chunk requires).
    const localRequire = (id) => (id.startsWith('./chunk-') ? requireChunk(join(dir, id.slice(2)), module) : module.require(id));
    localRequire.resolve = (request, options) => Module._resolveFilename(request, module, false, options);
    localRequire.cache = Module._cache;
    localRequire.main = require.main;
    script.runInThisContext({ displayErrors: true }).call(module.exports, module.exports, localRequire, module, filename, dir);
  };
  /** What Node's require does for a file it has resolved: one module per file, cached before it runs. */
  function requireChunk(filename, parent) {
    const known = Module._cache[filename];
    if (known !== undefined) return known.exports;
    const child = new Module(filename, parent);
    Module._cache[filename] = child;
    try {
      child.load(filename);
    } catch (err) {
      delete Module._cache[filename];
      throw err;
    }
    return child.exports;
  }
  process.once('exit', () => {
    for (const { script, file } of fresh) {
      try {
        mkdirSync(dirname(file), { recursive: true });
        const tmp = `${file}.${process.pid}`;
        const data = script.createCachedData();
        writeFileSync(tmp, Buffer.concat([createHash('sha1').update(data).digest(), data]));
        renameSync(tmp, file);
      } catch {
        return; // read-only or full: run without a cache
      }
    }
  });
}

/**
 * A cache file's data, or undefined when there is none or it is damaged. The file starts with the
 * SHA-1 of the data: V8 checks a cache's header, not every byte of it, and a torn or corrupt
 * file must cost a compile, never a crash.
 */
function readCodeCache(file) {
  let raw;
  try {
    raw = readFileSync(file);
  } catch {
    return undefined; // no cache yet: this run makes it
  }
  const data = raw.subarray(20);
  return raw.length > 20 && createHash('sha1').update(data).digest().equals(raw.subarray(0, 20)) ? data : undefined;
}

/** Where the cache of the chunk `filename` with this `source` lives under the bundle `dir`. */
function cacheFile(dir, filename, source) {
  return join(dir, '.v8-cache', `${basename(filename)}-${createHash('sha1').update(CODE_CACHE_FORMAT).update(source).digest('hex')}`);
}

module.exports = { useCodeCache, cacheFile };
