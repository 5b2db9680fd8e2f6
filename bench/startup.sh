#!/usr/bin/env bash
# Start-up cost of the cached path: a no-op rebuild through bin/kiln (dist/ as tsc emits it) and
# through one esbuild bundle of the same code, plus `node -e 0` for the floor. Prints figures.
# Usage: bench/startup.sh [RUNS]     (after npm run build; esbuild is a devDependency)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-15}
W=$(mktemp -d /tmp/kiln-startup-XXXXXX)
trap 'rm -rf "$W"' EXIT
export KILN_ROOT=$W/root
ms() { date +%s%N | cut -b1-13; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Native modules stay outside the bundle; everything else becomes one file.
node_modules/.bin/esbuild dist/src/cli/main.js --bundle --platform=node --format=esm --target=node20 \
  --external:better-sqlite3 --external:koffi --external:@napi-rs/xattr \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" \
  --outfile="$PWD/dist/.bench-bundle.mjs" --log-level=warning
trap 'rm -rf "$W" dist/.bench-bundle.mjs' EXIT
cat >"$W/kiln-bundled" <<JS
#!/usr/bin/env node
import { main } from '$PWD/dist/.bench-bundle.mjs';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
JS
chmod +x "$W/kiln-bundled"

bash scripts/base-rootfs.sh "$W/base.tar"
bin/kiln import "$W/base.tar" bench/base:1 >/dev/null
mkdir -p "$W/ctx"; echo hi >"$W/ctx/f"
{ echo 'FROM bench/base:1'; echo 'COPY f /f'; for i in $(seq 10); do echo "RUN echo $i > /s$i"; done; } >"$W/ctx/Dockerfile"
bin/kiln build -q "$W/ctx" >/dev/null

time_it() { local t=(); for _ in $(seq "$R"); do local t0; t0=$(ms); "$@" >/dev/null 2>&1; t+=($(( $(ms) - t0 ))); done; printf '%s\n' "${t[@]}" | median; }
floor=$(time_it node -e 0)
tsc_out=$(time_it bin/kiln build -q "$W/ctx")
bundled=$(time_it "$W/kiln-bundled" build -q "$W/ctx")
version=$(time_it bin/kiln version)
echo "machine: $(nproc) cores; median of $R runs; no-op rebuild of 12 cached steps"
echo "node -e 0:                        ${floor} ms"
echo "kiln version (dist/ from tsc):    ${version} ms"
echo "no-op rebuild, dist/ from tsc:    ${tsc_out} ms"
echo "no-op rebuild, one esbuild file:  ${bundled} ms"
