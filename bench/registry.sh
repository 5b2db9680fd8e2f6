#!/usr/bin/env bash
# Push and pull of a 200 MB, 5-layer image through the local docker-registry (distribution 2.8):
# kiln against `skopeo copy` of the same image (from an OCI layout kiln exported). Each run gets
# a registry with empty storage, so every blob really moves; pulls go into empty stores.
# Prints the median of RUNS in ms and the kiln/skopeo ratio. It is not a test.
# Usage: bench/registry.sh [RUNS]     (needs scripts/setup.sh to have run)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}
W=$(mktemp -d /tmp/kiln-bench-registry-XXXXXX)
REG_PID=
stop_registry() {
  if [ -n "$REG_PID" ]; then
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=
  fi
}
cleanup() {
  stop_registry
  # Stores only hold blobs and layer directories here (no step is running): plain removal is enough.
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export KILN_ROOT=$W/store DOCKER_CONFIG=$W/docker XDG_CACHE_HOME=$W/xdg
ms() { date +%s%N | cut -b1-13; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
start_registry() { # a registry with empty storage on $REG
  stop_registry
  rm -rf "$W/registry"
  mkdir -p "$W/registry"
  cat >"$W/registry/config.yml" <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $W/registry/data}, delete: {enabled: true}}
http: {addr: $REG}
EOF
  docker-registry serve "$W/registry/config.yml" >>"$W/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    if curl -s -o /dev/null "http://$REG/v2/"; then return 0; fi
    sleep 0.1
  done
  echo "docker-registry did not start: $(cat "$W/registry.log")" >&2
  exit 1
}

echo "making the image (5 layers of 30 MB random data and 10 MB text)..." >&2
bash scripts/base-rootfs.sh "$W/base.tar"
bin/kiln import "$W/base.tar" bench/base:1 >/dev/null
mkdir -p "$W/ctx"
{
  echo 'FROM bench/base:1'
  for i in 1 2 3 4 5; do
    echo "RUN head -c 31457280 /dev/urandom > /random-$i && yes 'kiln registry benchmark: a line of compressible text $i' | head -c 10485760 > /text-$i"
  done
} >"$W/ctx/Dockerfile"
bin/kiln build -q -t "$REG/bench/img:1" "$W/ctx" >/dev/null
bin/kiln build -q -o "type=oci,dest=$W/layout,tar=false" "$W/ctx" >/dev/null
size=$(du -sb "$W/layout/blobs" | cut -f1)

kpush=(); kpull=(); spush=(); spull=()
for r in $(seq "$R"); do
  start_registry
  t0=$(ms); bin/kiln push -q "$REG/bench/img:1" >/dev/null; t1=$(ms)
  kpush+=($((t1 - t0)))
  t0=$(ms); KILN_ROOT=$W/pull-$r bin/kiln pull -q "$REG/bench/img:1" >/dev/null; t1=$(ms)
  kpull+=($((t1 - t0)))
  rm -rf "$W/pull-$r"

  start_registry
  t0=$(ms); skopeo copy -q --dest-tls-verify=false "oci:$W/layout" "docker://$REG/bench/img:1"; t1=$(ms)
  spush+=($((t1 - t0)))
  t0=$(ms); skopeo copy -q --src-tls-verify=false "docker://$REG/bench/img:1" "oci:$W/skopeo-pull-$r:img"; t1=$(ms)
  spull+=($((t1 - t0)))
  rm -rf "$W/skopeo-pull-$r"
done
stop_registry

python3 - "$size" "$R" "$(printf '%s\n' "${kpush[@]}" | median)" "$(printf '%s\n' "${spush[@]}" | median)" "$(printf '%s\n' "${kpull[@]}" | median)" "$(printf '%s\n' "${spull[@]}" | median)" "${kpush[*]}" "${spush[*]}" "${kpull[*]}" "${spull[*]}" <<'PY'
import sys
size, runs = int(sys.argv[1]), sys.argv[2]
kpush, spush, kpull, spull = (float(x) for x in sys.argv[3:7])
runs_all = sys.argv[7:11]
mb = size / 1e6
print(f"image: 5 layers, {mb:.0f} MB compressed (blobs of the OCI layout); median of {runs} runs, each against an empty registry")
print(f"{'':6} {'kiln ms':>9} {'skopeo ms':>10} {'kiln/skopeo':>12} {'kiln MB/s':>10}   runs (kiln | skopeo)")
for name, k, s, kr, sr in (("push", kpush, spush, runs_all[0], runs_all[1]), ("pull", kpull, spull, runs_all[2], runs_all[3])):
    print(f"{name:6} {k:9.0f} {s:10.0f} {k / s:12.2f} {mb / (k / 1000):10.1f}   {kr} | {sr}")
PY
