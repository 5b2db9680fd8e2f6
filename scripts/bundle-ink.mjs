// Bundles ink and react into dist/vendor/ink.js, the one file the tty progress view loads
// (src/cli/tty.ts). Read as ~80 separate modules they take about twice as long to load; the
// view falls back to the packages themselves when this file is missing.
//
// - One react instance: ink's and the view's components must share it, so both come from here.
// - react-devtools-core is an optional package ink imports only when DEV=true: a stub stands in.
// - Written under a temporary name and renamed: a kiln process may be loading the old file.
import { build } from 'esbuild';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const outfile = join(root, 'dist', 'vendor', 'ink.js');

const result = await build({
  stdin: {
    contents: "export * as ink from 'ink';\nexport * as react from 'react';\n",
    resolveDir: root,
    sourcefile: 'vendor-ink.js',
  },
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minify: true,
  write: false,
  outfile,
  define: { 'process.env.NODE_ENV': '"production"' },
  plugins: [
    {
      name: 'no-devtools',
      setup(b) {
        b.onResolve({ filter: /^react-devtools-core$/ }, () => ({ path: 'react-devtools-core', namespace: 'stub' }));
        b.onLoad({ filter: /.*/, namespace: 'stub' }, () => ({ contents: 'export default { initialize() {}, connectToDevTools() {} };', loader: 'js' }));
      },
    },
  ],
  // Bundled CommonJS packages call require() for Node's built-in modules.
  banner: { js: "import { createRequire as __kilnCreateRequire } from 'node:module'; const require = __kilnCreateRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'none',
});

await mkdir(dirname(outfile), { recursive: true });
const tmp = `${outfile}.tmp-${process.pid}`;
await writeFile(tmp, result.outputFiles[0].contents);
await rename(tmp, outfile);
