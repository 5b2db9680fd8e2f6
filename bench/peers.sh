#!/usr/bin/env bash
# Kiln against its peers on the same machine in the same run: BuildKit (dockerd 20.10 with
# DOCKER_BUILDKIT=1) and buildah, the same Dockerfiles and contexts, every tool starting from an
# empty cache and pulling the same busybox base from a local registry. Prints wall times and
# Kiln's time as a ratio of each peer's (below 1 is faster). Tools take turns: each round of a
# scenario builds once with every tool, so load and noise on this machine fall on all of them.
# It is not a test.
#
# Usage: bench/peers.sh [RUNS]    (RUNS: repeats of each scenario, median taken; default 3; a cold
# build starts from an empty cache each time)
# Environment: BIG_FILES (files in the large context, default 50000), PEERS_SETUP (default
# ../shared/peers/peers-setup.sh), KILN (default bin/kiln), STEP_TIMEOUT (seconds per build,
# default 900), TOOLS (default "kiln buildkit buildah"; a missing tool's column shows -), BENCH_DIR
# (where the stores, peers and contexts live, default /tmp; /dev/shm takes the disk out of the figures).
#
# Peers run under their own PEERS_DIR (a new temporary directory) and are stopped and removed on
# exit, whatever happens. The registry listens on 127.0.0.1:5000 as peers-setup.sh decides.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=bench/lib.sh
source bench/lib.sh
RUNS=${1:-3}
BIG_FILES=${BIG_FILES:-50000}
SETUP=${PEERS_SETUP:-$REPO/../shared/peers/peers-setup.sh}
KILN=${KILN:-$REPO/bin/kiln}
STEP_TIMEOUT=${STEP_TIMEOUT:-900}
[[ -f $SETUP ]] || { echo "peers.sh: no peers-setup.sh at $SETUP" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "peers.sh: run as root (runc, overlayfs, dockerd)" >&2; exit 2; }

W=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-peers-XXXXXX")
export PEERS_DIR=$W/peers
REG=127.0.0.1:5000
# The base every tool builds on: Debian's busybox (scripts/base-rootfs.sh) imported and pushed by
# Kiln. Not the image peers-setup.sh makes with umoci: its layer ends without tar's end-of-archive
# blocks, which Kiln's unpacker refuses.
BASE=$REG/kiln-bench/base:1
DOCKER=(/usr/bin/docker -H "unix://$PEERS_DIR/docker.sock")
# As peers-setup.sh runs buildah: its own storage under PEERS_DIR, runc for RUN steps.
BUILDAH=(buildah --root "$PEERS_DIR/cs" --runroot "$PEERS_DIR/csrun" --storage-driver overlay)
export CONTAINERS_REGISTRIES_CONF=$PEERS_DIR/registries.conf
export DOCKER_CONFIG=$PEERS_DIR/dockercfg

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  bash "$SETUP" stop >/dev/null 2>&1 || true
  # Whatever a tool left mounted below the work directory goes before the directory does.
  local m
  for m in $(findmnt -rn -o TARGET | awk -v p="$W" 'index($0, p "/") == 1' | sort -r); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  rm -rf "$W"
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[peers.sh] $*" >&2; }
# Wall milliseconds of one command; its output goes to $W/last.log, a failure stops the run.
timed_ms() {
  local t0 t1
  t0=$(date +%s%N)
  if ! "$@" >"$W/last.log" 2>&1; then
    log "failed: $*"; tail -n 30 "$W/last.log" >&2; return 1
  fi
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2))}'; }

# ---- peers ---------------------------------------------------------------------------------------
log "starting the peers (install if missing, registry, busybox image, dockerd) under $PEERS_DIR"
bash "$SETUP" up dockerd-start >"$W/setup.log" 2>&1 || { tail -n 30 "$W/setup.log" >&2; exit 1; }
bash scripts/base-rootfs.sh "$W/base.tar"
KILN_ROOT=$W/seed "$KILN" import --change 'CMD ["sh"]' "$W/base.tar" "$BASE" >/dev/null
KILN_ROOT=$W/seed "$KILN" push --insecure-registry "$REG" "$BASE" >/dev/null
rm -rf "$W/seed" "$W/base.tar"

# ---- contexts ------------------------------------------------------------------------------------
four_stage_context "$W/ctx" "$BASE"

log "writing a context of $BIG_FILES files"
mkdir -p "$W/big"
python3 - "$W/big" "$BIG_FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "w") as f:
        f.write(f"file {i}\n")
PY
cat >"$W/big/Dockerfile" <<EOF
FROM $BASE
COPY . /ctx
RUN ls /ctx | wc -l > /count
EOF

# ---- the three tools -------------------------------------------------------------------------------
# build_TOOL DIR TAG: one build, bounded by STEP_TIMEOUT; reset_TOOL: an empty cache (and no base
# image) for a cold build.
build_kiln() { KILN_ROOT=$W/kiln timeout "$STEP_TIMEOUT" "$KILN" build -q --insecure-registry "$REG" -t "$2" "$1"; }
reset_kiln() { rm -rf "$W/kiln"; }
build_buildkit() { DOCKER_BUILDKIT=1 timeout "$STEP_TIMEOUT" "${DOCKER[@]}" build -q --network host -t "$2" "$1"; }
reset_buildkit() {
  "${DOCKER[@]}" image rm -f peers/bench:ctx peers/bench:big "$BASE" >/dev/null 2>&1 || true
  "${DOCKER[@]}" builder prune -af >/dev/null
  "${DOCKER[@]}" image prune -af >/dev/null
}
build_buildah() { timeout "$STEP_TIMEOUT" "${BUILDAH[@]}" bud --layers --isolation oci --runtime runc --tls-verify=false -q -t "$2" "$1"; }
reset_buildah() {
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
}

read -r -a TOOLS <<<"${TOOLS:-kiln buildkit buildah}"
SCENARIOS=(cold noop touch edit big-cold big-warm big-edit)
declare -A RESULT

# measure KEY DIR TAG PREP: RUNS rounds, each building DIR once with every tool in turn (after
# `PREP TOOL ROUND`), so that a slow stretch of the machine falls on all tools alike rather than on
# whichever ran then; the median per tool goes to RESULT[TOOL,KEY].
measure() {
  local key=$1 dir=$2 tag=$3 prep=$4 i tool
  local -A times=()
  log "$key"
  for i in $(seq "$RUNS"); do
    for tool in "${TOOLS[@]}"; do
      "$prep" "$tool" "$i"
      times[$tool]+="$(timed_ms "build_$tool" "$dir" "$tag") "
    done
  done
  for tool in "${TOOLS[@]}"; do
    # shellcheck disable=SC2086  # one number per word
    RESULT[$tool,$key]=$(printf '%s\n' ${times[$tool]} | median)
  done
}
empty_cache() { "reset_$1"; }
unchanged() { :; }
touch_small() { touch "$W/ctx/one.txt"; }
edit_small() { echo "edit $1 $2" >"$W/ctx/one.txt"; }
edit_big() { echo "edit $1 $2" >"$W/big/d000/f00000.txt"; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
measure cold "$W/ctx" peers/bench:ctx empty_cache
measure noop "$W/ctx" peers/bench:ctx unchanged
measure touch "$W/ctx" peers/bench:ctx touch_small
measure edit "$W/ctx" peers/bench:ctx edit_small
measure big-cold "$W/big" peers/bench:big empty_cache
measure big-warm "$W/big" peers/bench:big unchanged
measure big-edit "$W/big" peers/bench:big edit_big
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report --------------------------------------------------------------------------------------
ratio() { [[ $1 != - && $2 != - ]] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}' || echo -; }
describe() {
  case $1 in
    cold) echo "cold, 4 stages, two of 2,000 files" ;;
    noop) echo "no-op rebuild" ;;
    touch) echo "rebuild after touch" ;;
    edit) echo "rebuild after editing one file" ;;
    big-cold) echo "$BIG_FILES-file context, cold" ;;
    big-warm) echo "$BIG_FILES-file context, no-op" ;;
    big-edit) echo "$BIG_FILES-file context, one file edited" ;;
  esac
}
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr); store and peers on $(df --output=fstype "$W" | tail -1) ($W)"
echo "load average (1/5/15 min): before $load_before, after $load_after; every scenario: median of $RUNS"
echo "peers: $("${DOCKER[@]}" version --format "{{.Server.Version}}" 2>/dev/null | sed 's/^/dockerd /') (BuildKit), $(buildah --version | cut -d' ' -f1-3)"
printf '%-40s %9s %9s %9s %11s %10s\n' scenario "kiln ms" "bk ms" "buildah ms" "kiln/bk" "kiln/bah"
for s in "${SCENARIOS[@]}"; do
  k=${RESULT[kiln,$s]:--} b=${RESULT[buildkit,$s]:--} h=${RESULT[buildah,$s]:--}
  printf '%-40s %9s %9s %9s %11s %10s\n' "$(describe "$s")" "$k" "$b" "$h" "$(ratio "$k" "$b")" "$(ratio "$k" "$h")"
done
