#!/usr/bin/env bash
# One `kiln serve` on 127.0.0.1 under load: N small builds started at once from separate clients
# (default 50), each with one RUN step shared by all and one of its own. Prints p50/p95/max
# latency, throughput, and how many RUN executions the shared solver saved (each RUN reports to a
# counter on the host, so executions are counted, not progress lines). It is not a test.
#
# Usage: bench/serve-load.sh [N]
# Environment: KILN (default bin/kiln), BUILD_TIMEOUT (seconds per build, default 300),
# MAX_CONCURRENT (the server's --max-concurrent-builds, default 8).
#
# Everything lives in a new temporary directory; the server and the counter are stopped and the
# directory removed on exit, whatever happens. Every build has a timeout, so the run ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${1:-50}
KILN=${KILN:-$REPO/bin/kiln}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-300}
MAX_CONCURRENT=${MAX_CONCURRENT:-8}
[[ $(id -u) == 0 ]] || { echo "serve-load.sh: run as root (runc, overlayfs)" >&2; exit 2; }
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "serve-load.sh: N must be a positive number" >&2; exit 2; }

W=$(mktemp -d /tmp/kiln-serve-load-XXXXXX)
SERVER_PID=
COUNTER_PID=
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  # Their exit statuses are those of stopped processes, not of this run.
  [[ -n $SERVER_PID ]] && { kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; }
  [[ -n $COUNTER_PID ]] && { kill "$COUNTER_PID" 2>/dev/null; wait "$COUNTER_PID" 2>/dev/null || true; }
  rm -rf "$W"
  exit "$code"
}
trap cleanup EXIT INT TERM

export KILN_ROOT=$W/store
bash scripts/base-rootfs.sh "$W/base.tar"
"$KILN" import --change 'CMD ["sh"]' "$W/base.tar" load/base:1 >/dev/null

# The counter: one line per request into a file, its port on the first line of stdout.
node -e '
  const http = require("node:http");
  const fs = require("node:fs");
  const s = http.createServer((req, res) => { fs.appendFileSync(process.argv[1], req.url + "\n"); res.end("ok"); });
  s.listen(0, "127.0.0.1", () => console.log(s.address().port));
' "$W/hits" >"$W/counter.port" &
COUNTER_PID=$!
for _ in $(seq 50); do [[ -s $W/counter.port ]] && break; sleep 0.1; done
CPORT=$(head -1 "$W/counter.port")
touch "$W/hits"

"$KILN" serve --addr tcp://127.0.0.1:0 --insecure --max-concurrent-builds "$MAX_CONCURRENT" 2>"$W/serve.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q '^Listening on tcp://' "$W/serve.log" && break; sleep 0.1; done
ADDR=$(sed -n 's/^Listening on \(tcp:\/\/.*\)$/\1/p' "$W/serve.log" | head -1)
[[ -n $ADDR ]] || { echo "serve-load.sh: kiln serve did not start: $(cat "$W/serve.log")" >&2; exit 1; }

hit() { echo "wget -q -O /dev/null http://127.0.0.1:$CPORT/$1"; }
for i in $(seq "$N"); do
  mkdir -p "$W/ctx$i"
  printf 'FROM load/base:1\nRUN %s && sleep 1\nRUN %s && echo %s > /own\n' "$(hit shared)" "$(hit "own-$i")" "$i" >"$W/ctx$i/Dockerfile"
done

echo "Running $N builds at once against $ADDR (at most $MAX_CONCURRENT at a time on the server)"
start=$(date +%s%N)
pids=()
for i in $(seq "$N"); do
  (
    t0=$(date +%s%N)
    if XDG_CACHE_HOME=$W/cache timeout "$BUILD_TIMEOUT" "$KILN" --host "$ADDR" build -q -t "load/app$i:1" "$W/ctx$i" >/dev/null 2>"$W/build$i.err"; then
      echo "$(( ($(date +%s%N) - t0) / 1000000 ))" >"$W/build$i.ms"
    else
      echo fail >"$W/build$i.ms"
    fi
  ) &
  pids+=($!)
done
wait "${pids[@]}"
wall=$(( ($(date +%s%N) - start) / 1000000 ))

failed=$(cat "$W"/build*.ms | grep -c fail || true)
sort -n <(grep -hv fail "$W"/build*.ms) >"$W/lat"
ok=$(wc -l <"$W/lat")
pct() { awk -v p="$1" '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit } i = int((NR * p + 99) / 100); if (i < 1) i = 1; print a[i] }' "$W/lat"; }
runs=$(wc -l <"$W/hits")
shared=$(grep -c '^/shared$' "$W/hits" || true)

echo "builds:      $ok succeeded, $failed failed"
echo "latency:     p50 $(pct 50) ms, p95 $(pct 95) ms, max $(tail -1 "$W/lat" 2>/dev/null || echo -) ms"
echo "throughput:  $(awk -v n="$ok" -v ms="$wall" 'BEGIN { printf "%.2f", n * 1000 / ms }') builds/s ($N builds in $wall ms)"
echo "executions:  $runs RUN steps ran for $(( N * 2 )) requested; the shared step ran $shared time(s), $(( N * 2 - runs )) saved by dedup"
if (( failed > 0 )); then
  echo "first failure:" >&2
  cat "$(grep -l fail "$W"/build*.ms | head -1 | sed 's/\.ms$/.err/')" >&2
  exit 1
fi
