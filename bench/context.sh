#!/usr/bin/env bash
# Kiln's throughput on a large build context: `COPY . /ctx` followed by a RUN, with N small files
# in N/100 directories. Prints wall and CPU (user + system, Kiln and everything it starts)
# milliseconds of a cold build (empty store), the median of RUNS no-op rebuilds and the median of
# RUNS rebuilds after editing one file; then `cp -a` of the same tree on the same file system, for
# scale. It is not a test.
#
# Usage: bench/context.sh [N] [RUNS]     (N: files, default 5000; RUNS: default 5)
# Environment: KILN (default bin/kiln), BENCH_DIR (where the context and the store go, default
# /tmp: ext4 with discard here, where creating files is slow; see NOTES.md).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
RUNS=${2:-5}
KILN=${KILN:-$PWD/bin/kiln}
[[ $(id -u) == 0 ]] || { echo "context.sh: run as root (runc, overlayfs)" >&2; exit 2; }
W=$(mktemp -d "${BENCH_DIR:-/tmp}/kiln-context-XXXXXX")
cleanup() {
  local m
  for m in $(findmnt -rn -o TARGET | awk -v p="$W" 'index($0, p "/") == 1' | sort -r); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export KILN_ROOT=$W/root
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2))}'; }

# One timed command: prints "WALL_MS CPU_MS" (CPU: user + system of the command and its children).
measure() {
  if ! /usr/bin/time -o "$W/time" -f '%e %U %S' "$@" >/dev/null 2>"$W/err"; then
    echo "context.sh: failed: $*" >&2; tail -n 30 "$W/err" >&2; exit 1
  fi
  awk '{printf "%d %d\n", $1 * 1000, ($2 + $3) * 1000}' "$W/time"
}
build() { measure "$KILN" build -q --progress quiet "$W/ctx"; }

bash scripts/base-rootfs.sh "$W/base.tar"
"$KILN" import "$W/base.tar" bench/base:1 >/dev/null
rm "$W/base.tar"

dirs=$(((N + 99) / 100))
python3 - "$W/ctx" "$N" "$dirs" <<'PY'
import os, sys
root, n, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i % dirs:04d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
        f.write(f"file {i}\n" * 8)
PY
printf 'FROM bench/base:1\nCOPY . /ctx\nRUN ls /ctx | wc -l > /count\n' >"$W/ctx/Dockerfile"
# The new context on disk first, so that the cold build does not pay for writing it back.
sync

# The first build of a fresh store; the base image is already imported.
read -r cold_wall cold_cpu < <(build)

noop_wall=(); noop_cpu=()
for _ in $(seq "$RUNS"); do
  read -r w c < <(build); noop_wall+=("$w"); noop_cpu+=("$c")
done

edit_wall=(); edit_cpu=()
for r in $(seq "$RUNS"); do
  echo "edit $r" >>"$W/ctx/d0000/f000000.txt"
  read -r w c < <(build); edit_wall+=("$w"); edit_cpu+=("$c")
done

read -r cp_wall cp_cpu < <(measure cp -a "$W/ctx" "$W/ctx-copy")

load=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'context: %d files in %d directories under %s; %d runs; load average %s\n' "$N" "$dirs" "${BENCH_DIR:-/tmp}" "$RUNS" "$load"
printf '%-34s %9s %9s\n' scenario 'wall ms' 'cpu ms'
printf '%-34s %9d %9d\n' 'cold build' "$cold_wall" "$cold_cpu"
printf '%-34s %9d %9d\n' 'no-op rebuild (median)' "$(printf '%s\n' "${noop_wall[@]}" | median)" "$(printf '%s\n' "${noop_cpu[@]}" | median)"
printf '%-34s %9d %9d\n' 'one file edited (median)' "$(printf '%s\n' "${edit_wall[@]}" | median)" "$(printf '%s\n' "${edit_cpu[@]}" | median)"
printf '%-34s %9d %9d\n' 'cp -a of the context' "$cp_wall" "$cp_cpu"
