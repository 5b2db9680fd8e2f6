#!/usr/bin/env bash
# gzip throughput of one ~100 MB layer tar: Kiln's export compression (Node's zlib at level 6,
# through the exporter's own code) against `gzip -6` and `pigz -6` on the same tar. Prints MB/s of
# input and the compressed/uncompressed ratio, median of RUNS. It is not a test.
# Usage: bench/compress.sh [RUNS]     (needs scripts/setup.sh to have run: it uses dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}
if ! command -v pigz >/dev/null; then
  echo "installing pigz..." >&2
  apt-get install -y -qq pigz >/dev/null
fi
[ -f dist/src/image/convert.js ] || npm run build >/dev/null
W=$(mktemp -d /tmp/kiln-bench-compress-XXXXXX)
trap 'rm -rf "$W"' EXIT
trap 'exit 130' INT TERM
ms() { date +%s%N | cut -b1-13; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# A layer as builds make them: some incompressible data (60 MB), text (25 MB), and many small
# source-like files (15 MB).
mkdir -p "$W/layer/bin" "$W/layer/doc" "$W/layer/src"
head -c 62914560 /dev/urandom >"$W/layer/bin/blob"
{ yes 'kiln compress benchmark: a line of text as logs and docs have it, 0123456789' || true; } | head -c 26214400 >"$W/layer/doc/text.txt"
python3 - "$W/layer/src" <<'PY'
import os, random, sys
random.seed(1)
words = [f"ident{i}" for i in range(2000)] + ["return", "const", "function", "if", "else", "for", "(", ")", "{", "}", ";"]
for i in range(1500):
    with open(os.path.join(sys.argv[1], f"f{i}.ts"), "w") as f:
        f.write(" ".join(random.choice(words) for _ in range(1700)))
PY
tar -C "$W/layer" -cf "$W/layer.tar" .
size=$(stat -c %s "$W/layer.tar")

# Kiln's path, called as the exporter calls it: the tar imported as a one-layer image (stored as
# gzip), then prepareExport (src/image/convert.ts) with compression=gzip,force-compression=true,
# which decompresses the stored blob and compresses it again into a temporary file. Its
# decompression alone (compression=uncompressed) is timed too, to leave the gzip part.
export KILN_ROOT=$W/store
bin/kiln import "$W/layer.tar" bench/layer:1 >/dev/null
cat >"$W/kiln-export.mjs" <<JS
import { stat } from 'node:fs/promises';
import { Store } from '$PWD/dist/cache/store.js';
import { getImage } from '$PWD/dist/src/image/local.js';
import { prepareExport } from '$PWD/dist/src/image/convert.js';
const store = await Store.open(process.env.KILN_ROOT);
try {
  const image = await getImage(store, 'bench/layer:1');
  const t0 = performance.now();
  const out = await prepareExport(store, image, { compression: process.argv[2], force: true });
  const ms = performance.now() - t0;
  console.log(Math.round(ms), (await stat(out.blobs.at(-1).path)).size);
  await out.dispose();
} finally {
  store.close();
}
JS

kiln=(); plain=(); gz=(); pz=()
for r in $(seq "$R"); do
  read -r t kiln_size < <(node "$W/kiln-export.mjs" gzip); kiln+=($t)
  read -r t _ < <(node "$W/kiln-export.mjs" uncompressed); plain+=($t)
  t0=$(ms); gzip -6 -c "$W/layer.tar" >"$W/gzip.gz"; t1=$(ms); gz+=($((t1 - t0)))
  t0=$(ms); pigz -6 -c "$W/layer.tar" >"$W/pigz.gz"; t1=$(ms); pz+=($((t1 - t0)))
done


python3 - "$size" "$R" "$(nproc)" \
  "$(printf '%s\n' "${kiln[@]}" | median)" "$kiln_size" "$(printf '%s\n' "${plain[@]}" | median)" \
  "$(printf '%s\n' "${gz[@]}" | median)" "$(stat -c %s "$W/gzip.gz")" \
  "$(printf '%s\n' "${pz[@]}" | median)" "$(stat -c %s "$W/pigz.gz")" <<'PY'
import sys
size, runs, cores = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kiln_ms, kiln_out, unpack_ms = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
rows = [
    ("kiln export (gunzip+gzip)", kiln_ms, kiln_out),
    ("kiln gzip part alone", kiln_ms - unpack_ms, kiln_out),
    ("gzip -6", float(sys.argv[7]), int(sys.argv[8])),
    (f"pigz -6 ({cores} cores)", float(sys.argv[9]), int(sys.argv[10])),
]
mb = size / 1e6
print(f"one layer tar of {mb:.0f} MB; median of {runs} runs; kiln's export decompressing the stored blob alone: {unpack_ms:.0f} ms")
print(f"{'':27} {'ms':>7} {'MB/s':>7} {'ratio':>6} {'time / gzip -6':>15}")
gzip_ms = rows[2][1]
for name, t, out in rows:
    print(f"{name:27} {t:7.0f} {mb / (t / 1000):7.1f} {out / size:6.3f} {t / gzip_ms:15.2f}")
PY
