#!/usr/bin/env bash
# Start-up cost of the cached path: no-op rebuilds (12 cached steps, and bench/peers.sh's 4-stage
# build), a one-file edit of the 4-stage build, and `kiln version` through bin/kiln (the bundle
# `npm run build` writes to dist/bundle/) and through tsc's output in dist/src/ loaded module by
# module, with `node -e 0` for the floor. BEFORE=DIR (another checkout of the repository, built)
# adds its bin/kiln's no-op rebuilds and edit, on a store of its own, to the same interleaved
# runs: a before/after. `node -e 0` runs with the environment as it is and without
# NODE_EXTRA_CA_CERTS (which bin/kiln keeps from Node's start). Medians of wall time, and of CPU
# time (user + sys, which other work on the machine disturbs less). Prints figures.
# Usage: [BEFORE=DIR] bench/startup.sh [RUNS]     (after npm run build)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
R=${1:-15}
if [[ ! -f dist/bundle/kiln.cjs || dist/bundle/kiln.cjs -ot dist/src/cli/main.js ]]; then
  echo "startup.sh: dist/bundle/ is missing or older than dist/src/: run npm run build" >&2
  exit 2
fi
W=$(mktemp -d /tmp/kiln-startup-XXXXXX)
trap 'rm -rf "$W"' EXIT
export KILN_ROOT=$W/root

cat >"$W/kiln-tsc" <<JS
#!/usr/bin/env node
import { main } from '$PWD/dist/src/cli/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
JS
chmod +x "$W/kiln-tsc"

bash scripts/base-rootfs.sh "$W/base.tar"
mkdir -p "$W/ctx"; echo hi >"$W/ctx/f"
{ echo 'FROM bench/base:1'; echo 'COPY f /f'; for i in $(seq 10); do echo "RUN echo $i > /s$i"; done; } >"$W/ctx/Dockerfile"
four_stage_context "$W/ctx4" bench/base:1
four_stage_context "$W/ctx4e" bench/base:1

# One file of a copy of the 4-stage context edited, then a build (the COPY of the context runs
# again; the script's own start, ~1 ms, is in every tree's time alike). Usage: edit KILN STORE.
cat >"$W/edit" <<SH
#!/bin/sh
date +%N >"$W/ctx4e/one.txt"
KILN_ROOT=\$2 exec "\$1" build -q "$W/ctx4e"
SH
chmod +x "$W/edit"

# Each tree gets a store of its own: an older tree may keep the index at an older schema. Its V8
# code caches are made anew by the same runs in each tree: a cache holds the functions compiled
# by the run that made it, and caches made by other runs would weigh on the comparison.
prepare() {
  rm -rf "$(dirname "$(readlink -f "$1")")/../dist/bundle/.v8-cache"
  KILN_ROOT=$2 "$1" import "$W/base.tar" bench/base:1 >/dev/null
  KILN_ROOT=$2 "$1" build -q "$W/ctx" >/dev/null
  KILN_ROOT=$2 "$1" build -q "$W/ctx4" >/dev/null
  KILN_ROOT=$2 "$1" build -q "$W/ctx4e" >/dev/null
}
prepare bin/kiln "$KILN_ROOT"
cases=(
  "node -e 0" "node -e 0"
  "node -e 0, no extra CAs" "env -u NODE_EXTRA_CA_CERTS node -e 0"
  "kiln version, bundle" "bin/kiln version"
  "kiln version, dist/src" "$W/kiln-tsc version"
  "no-op rebuild, bundle" "bin/kiln build -q $W/ctx"
  "no-op rebuild, dist/src" "$W/kiln-tsc build -q $W/ctx"
  "no-op 4-stage, bundle" "bin/kiln build -q $W/ctx4"
  "edit 4-stage, bundle" "$W/edit bin/kiln $KILN_ROOT"
)
if [[ -n ${BEFORE:-} ]]; then
  prepare "$BEFORE/bin/kiln" "$W/before"
  cases+=(
    "no-op rebuild, BEFORE" "env KILN_ROOT=$W/before $BEFORE/bin/kiln build -q $W/ctx"
    "no-op 4-stage, BEFORE" "env KILN_ROOT=$W/before $BEFORE/bin/kiln build -q $W/ctx4"
    "edit 4-stage, BEFORE" "$W/edit $BEFORE/bin/kiln $W/before"
  )
fi

echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); median of $R interleaved runs"
python3 - "$R" "${cases[@]}" <<'PY'
import resource, statistics, subprocess, sys, time
runs = int(sys.argv[1]); pairs = list(zip(sys.argv[2::2], sys.argv[3::2]))
wall = {l: [] for l, _ in pairs}; cpu = {l: [] for l, _ in pairs}
for _ in range(runs):
    for label, cmd in pairs:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN); t0 = time.perf_counter()
        subprocess.run(cmd.split(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall[label].append((t1 - t0) * 1000)
        cpu[label].append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
for label, _ in pairs:
    print(f"{label:26s} wall {statistics.median(wall[label]):6.1f} ms (min {min(wall[label]):6.1f})   cpu {statistics.median(cpu[label]):6.1f} ms")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
