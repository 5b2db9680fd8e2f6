#!/usr/bin/env bash
# Per-step overhead of a RUN against a bare `runc run` of the same rootfs, where the time goes,
# and the no-op rebuild time. Prints figures; it is not a test.
# Usage: bench/steps.sh [N_STEPS] [REPEATS]     (needs scripts/setup.sh to have run)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
R=${2:-5}
W=$(mktemp -d /tmp/kiln-bench-XXXXXX)
trap 'umount -R "$W"/bundle/rootfs 2>/dev/null || true; rm -rf "$W"' EXIT
export KILN_ROOT=$W/root
ms() { date +%s%N | cut -b1-13; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

bash scripts/base-rootfs.sh "$W/base.tar"
bin/kiln import "$W/base.tar" bench/base:1 >/dev/null

# Bare runtime: the same rootfs, one `runc run` of `true` per step.
mkdir -p "$W/bundle/rootfs" && tar -C "$W/bundle/rootfs" -xf "$W/base.tar"
(cd "$W/bundle" && runc spec && python3 - <<'PY'
import json
c = json.load(open('config.json'))
c['process']['terminal'] = False
c['process']['args'] = ['true']
c['root']['readonly'] = False
json.dump(c, open('config.json', 'w'))
PY
)
bare=()
for r in $(seq "$R"); do
  t0=$(ms); for i in $(seq "$N"); do runc run --bundle "$W/bundle" "kiln-bench-$$-$i" >/dev/null; done; t1=$(ms)
  bare+=($(( (t1 - t0) )))
done
bare_ms=$(printf '%s\n' "${bare[@]}" | median)

mkdir -p "$W/ctx"
{ echo 'FROM bench/base:1'; for i in $(seq "$N"); do echo "RUN true # $i"; done; } >"$W/ctx/Dockerfile"
{ echo 'FROM bench/base:1'; for i in $(seq "$N"); do echo "RUN echo $i > /step-$i"; done; } >"$W/ctx/Dockerfile.write"
# The same steps on the host's network: the difference is what a step's own network costs.
{ echo 'FROM bench/base:1'; for i in $(seq "$N"); do echo "RUN --network=host true # $i"; done; } >"$W/ctx/Dockerfile.host"
printf 'FROM bench/base:1\n' >"$W/ctx/Dockerfile.empty"

run_build() { # FILE → wall ms of a --no-cache build
  local t0 t1; t0=$(ms); bin/kiln build -q --no-cache -f "$W/ctx/$1" "$W/ctx" >/dev/null; t1=$(ms); echo $((t1 - t0))
}
empty=(); trues=(); writes=(); hosts=()
for r in $(seq "$R"); do
  empty+=($(run_build Dockerfile.empty))
  trues+=($(run_build Dockerfile))
  hosts+=($(run_build Dockerfile.host))
  writes+=($(KILN_TRACE=$W/trace.jsonl run_build Dockerfile.write))
done
empty_ms=$(printf '%s\n' "${empty[@]}" | median)
true_ms=$(printf '%s\n' "${trues[@]}" | median)
host_ms=$(printf '%s\n' "${hosts[@]}" | median)
write_ms=$(printf '%s\n' "${writes[@]}" | median)

noop=()
bin/kiln build -q -f "$W/ctx/Dockerfile.write" "$W/ctx" >/dev/null
for r in $(seq 10); do t0=$(ms); bin/kiln build -q -f "$W/ctx/Dockerfile.write" "$W/ctx" >/dev/null; t1=$(ms); noop+=($((t1 - t0))); done
noop_ms=$(printf '%s\n' "${noop[@]}" | median)

python3 - "$N" "$bare_ms" "$empty_ms" "$true_ms" "$write_ms" "$noop_ms" "$host_ms" "$W/trace.jsonl" "$R" <<'PY'
import json, sys
n, bare, empty, true_, write, noop, host = (float(x) for x in sys.argv[1:8])
trace_file, runs = sys.argv[8], int(sys.argv[9])
per_bare = bare / n
per_true = (true_ - empty) / n
per_write = (write - empty) / n
print(f"machine: {open('/proc/cpuinfo').read().count('processor')} cores; {int(n)} steps, median of {runs} runs")
print(f"bare runc run (true):          {per_bare:7.1f} ms/step")
print(f"kiln RUN true:                 {per_true:7.1f} ms/step   overhead {per_true - per_bare:+.1f} ms/step")
print(f"kiln RUN --network=host true: {(host - empty) / n:7.1f} ms/step   (the step's own network costs {per_true - (host - empty) / n:+.1f} ms/step)")
print(f"kiln RUN echo > file:          {per_write:7.1f} ms/step   overhead {per_write - per_bare:+.1f} ms/step")
print(f"kiln build of FROM only:       {empty:7.0f} ms (start-up, compile, export)")
print(f"no-op rebuild ({int(n)} cached steps): {noop:5.0f} ms (median of 10)")
totals = {}
lines = [json.loads(l) for l in open(trace_file)]
for l in lines:
    for k, v in l.items():
        t = totals.setdefault(k, [0.0, 0])
        t[0] += v['ms']; t[1] += v['count']
print("where a writing step's time goes (ms/step, from KILN_TRACE):")
for k, (ms, count) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
    print(f"  {k:22s} {ms / len(lines) / n:6.2f}")
PY
