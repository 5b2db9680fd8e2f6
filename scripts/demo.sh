#!/usr/bin/env bash
# The quick-start demo: set up, import a busybox base image, build fixtures/demo, run the
# result, export it as an OCI archive and let skopeo read it back.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KILN_ROOT=${KILN_ROOT:-/var/lib/kiln}
out=${DEMO_OUT:-/tmp/kiln-demo}
mkdir -p "$out"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
step "Import a base image from Debian's busybox-static"
bash scripts/base-rootfs.sh "$out/busybox.tar"
bin/kiln import --change 'CMD ["sh"]' "$out/busybox.tar" kiln-demo/busybox:latest
step "Build fixtures/demo"
bin/kiln build --progress plain -t kiln-demo/app:latest --build-arg GREETING=Hello fixtures/demo
step "Run it"
bin/kiln run --rm kiln-demo/app:latest
step "Rebuild: every step comes from the cache"
bin/kiln build --progress plain -t kiln-demo/app:latest --build-arg GREETING=Hello fixtures/demo 2>&1 | grep -E '^#[0-9]+ (\[|CACHED)|^Built' || true
step "Export as an OCI archive and inspect it with skopeo"
bin/kiln build -q --build-arg GREETING=Hello -o type=oci,dest="$out/app.oci.tar" fixtures/demo
skopeo inspect --config "oci-archive:$out/app.oci.tar" | jq -c '{Env: .config.Env, Cmd: .config.Cmd, User: .config.User, layers: (.rootfs.diff_ids | length)}'
step "Images in the store"
bin/kiln images
echo
echo "The OCI archive is at $out/app.oci.tar"
