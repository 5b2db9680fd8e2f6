// Bundles the compiled CLI (dist/src/cli/main.js, as tsc emits it) into dist/bundle/ with esbuild,
// so that starting `kiln` reads a few files instead of resolving and compiling a hundred modules.
// `npm run build` runs it after tsc; bin/kiln prefers the bundle while it is newer than tsc's
// output.
//
// - Code splitting keeps every `import()` lazy: a cached build never loads the tty view, the
//   registry client or the exporters it does not use.
// - The chunks are CommonJS (`.cjs`; esbuild splits only ES modules, so each chunk is converted
//   after the split): Node resolves, links and evaluates an ES module graph at a cost per module
//   that the forty chunks of a cached build add up to ~60 ms of CPU under load (bench/RESULTS.md),
//   where require() of a relative file is a cached lookup. `import("./chunk-…")` becomes a
//   require() behind a promise; the imports of ES modules left (ink and react for the tty view)
//   stay import() calls. bin/kiln.cjs compiles the chunks with V8's code cache, made after a
//   chunk first ran (so it holds the functions compiled lazily too): a cached build 149 -> 119 ms.
// - Native addons stay outside: their .node files are found through node_modules at run time.
//   better-sqlite3's JavaScript is bundled (a dozen small CommonJS files cost ~8 ms to load one by
//   one) and only its addon lookup (`bindings`) is left outside, told where the package is.
// - A few modules load on their first call instead of at start-up (LAZY): @napi-rs/xattr (a libc
//   probe, then its addon), tar-stream (with streamx, a fifth of the code a build loads),
//   node:child_process and node:zlib are used only by steps that run, snapshot or unpack,
//   node:https (with tls) only by a TLS connection (kiln --host over a unix socket opens none);
//   node:fs/promises (with readline, fs watchers and Dir, ten internal modules) only by the few
//   calls the build path still makes asynchronously (fsync, large files, trees): a cached build
//   makes none, 112 -> 103 ms (bench/startup.sh 21 interleaved runs); and
//   node:crypto's ES module face loads all of crypto (webcrypto included) where require() loads
//   what is used. Only function exports get a stand-in (named, and as properties of the default
//   export): importing anything else from them fails the bundle here, never at run time.
// - ink and react stay outside too: only the tty view loads them, from their own bundle
//   (scripts/bundle-ink.mjs) or else from the packages.
// - Every output file lives directly in dist/bundle/, so `import.meta.url` can be rewritten to
//   keep meaning the module's own file under dist/ (version.ts finds package.json through it),
//   and then to `__kilnModuleUrl`, the chunk's own URL in CommonJS.
// - Files are written under a temporary name and renamed into place, entry last, and chunks of
//   an earlier bundle stay a while: a `kiln` process already running from the old entry may still
//   load its chunks lazily (other builds of the same tree can run meanwhile).
//
// Usage: node scripts/bundle.mjs [OUTDIR]   (default dist/bundle)
import { build, transform } from 'esbuild';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = process.argv[2] ? resolve(process.argv[2]) : join(root, 'dist', 'bundle');
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
const ENTRY_NAME = 'kiln.cjs';
/** Chunks of earlier bundles younger than this are kept for processes still running from them. */
const OLD_CHUNK_GRACE_MS = 60 * 60 * 1000;
/** Where bin/kiln.cjs keeps V8's code cache of the chunks. */
const CODE_CACHE_DIR = '.v8-cache';
const LAZY = ['@napi-rs/xattr', 'tar-stream', 'node:child_process', 'node:zlib', 'node:crypto', 'node:https', 'node:fs/promises'];

const keepModuleUrl = {
  name: 'keep-module-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(join(root, 'dist') + '/')) return undefined;
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('import.meta.url')) return undefined;
      const own = relative(outdir, args.path).split('\\').join('/');
      return { contents: source.replaceAll('import.meta.url', `new URL(${JSON.stringify(own)}, import.meta.url).href`), loader: 'js' };
    });
  },
};

// `bindings` finds the addon from its caller's file name, which inside a bundle is the bundle's.
// The addon npm builds (build/Release/) is loaded directly: `bindings` tries a dozen places and
// loads two more packages to get there (~1.5 ms of a cached build); it stays for the others.
const sqliteBindings = {
  name: 'sqlite-bindings',
  setup(b) {
    b.onResolve({ filter: /^bindings$/ }, (args) =>
      args.importer.includes('/node_modules/better-sqlite3/') ? { path: 'bindings', namespace: 'sqlite-bindings' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'sqlite-bindings' }, () => ({
      loader: 'js',
      contents: `
        const { dirname, join } = require('node:path');
        module.exports = (opts) => {
          const options = typeof opts === 'string' ? { bindings: opts } : opts;
          const moduleRoot = dirname(require.resolve('better-sqlite3/package.json'));
          try {
            return require(join(moduleRoot, 'build', 'Release', options.bindings));
          } catch (err) {
            if (err.code !== 'MODULE_NOT_FOUND') throw err;
          }
          return require('bindings')({ ...options, module_root: moduleRoot });
        };`,
    }));
  },
};

const lazyModules = {
  name: 'lazy-modules',
  setup(b) {
    const requireFromRoot = createRequire(join(root, 'package.json'));
    const filter = new RegExp(`^(${LAZY.map((n) => n.replace(/[/.]/g, '\\$&')).join('|')})$`);
    b.onResolve({ filter }, (args) =>
      args.kind === 'import-statement' && args.namespace !== 'lazy' ? { path: args.path, namespace: 'lazy' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy' }, (args) => {
      const real = requireFromRoot(args.path);
      const names = Object.keys(real).filter((n) => typeof real[n] === 'function' && /^[A-Za-z_$][\w$]*$/.test(n));
      const wrappers = names.map(
        (n) => `export function ${n}(...args) { const f = load().${n}; return new.target ? Reflect.construct(f, args) : f.apply(this, args); }`,
      );
      return {
        loader: 'js',
        resolveDir: root,
        contents: `let mod;\nconst load = () => (mod ??= require(${JSON.stringify(args.path)}));\n${wrappers.join('\n')}\nexport default { ${names.join(', ')} };\n`,
      };
    });
  },
};

const result = await build({
  entryPoints: { [ENTRY_NAME.replace(/\.cjs$/, '')]: entry },
  outExtension: { '.js': '.cjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir,
  chunkNames: 'chunk-[hash]',
  write: false,
  external: ['bindings', 'koffi', '@napi-rs/xattr', 'ink', 'react'],
  plugins: [keepModuleUrl, sqliteBindings, lazyModules],
  logLevel: 'warning',
  legalComments: 'none',
});

/** One split ES module chunk as a CommonJS file (see the header). */
async function toCommonJs(source) {
  const moduleUrl = source.includes('import.meta.url');
  const rewritten = source
    .replaceAll('import.meta.url', '__kilnModuleUrl')
    .replace(/\bimport\(("\.\/[\w-]+\.cjs")\)/g, 'Promise.resolve().then(() => require($1))');
  const { code } = await transform(rewritten, {
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    banner: moduleUrl ? 'const __kilnModuleUrl = require("node:url").pathToFileURL(__filename).href;' : '',
    logLevel: 'warning',
  });
  return code;
}

await mkdir(outdir, { recursive: true });
const entryPath = join(outdir, ENTRY_NAME);
const written = new Set();
const ordered = [...result.outputFiles].sort((a, b) => Number(a.path === entryPath) - Number(b.path === entryPath));
for (const file of ordered) {
  const tmp = `${file.path}.tmp-${process.pid}`;
  await writeFile(tmp, await toCommonJs(file.text));
  await rename(tmp, file.path);
  written.add(file.path);
}

// Chunks of earlier bundles, and V8 code caches bin/kiln.cjs wrote for them (CODE_CACHE_DIR,
// one file per chunk and source hash), go once they are an hour old.
const now = Date.now();
const stale = async (dir, keep) => {
  for (const name of await readdir(dir)) {
    const path = join(dir, name);
    if (keep(path)) continue;
    const st = await stat(path);
    if (!st.isDirectory() && now - st.mtimeMs > OLD_CHUNK_GRACE_MS) await rm(path, { force: true });
  }
};
await stale(outdir, (path) => written.has(path));
const cacheDir = join(outdir, CODE_CACHE_DIR);
await mkdir(cacheDir, { recursive: true });
await stale(cacheDir, () => false);
