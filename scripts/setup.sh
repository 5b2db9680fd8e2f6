#!/usr/bin/env bash
# Installs what Kiln needs on Debian 12, idempotently: system packages, npm dependencies, the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES=(runc crun iproute2 nftables busybox-static docker-registry skopeo umoci apache2-utils jq tmux zstd bzip2 xz-utils git python3 g++ make docker.io)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's docker-registry package starts a registry as a service; tests start their own. docker.io
# is only for its client (the serve tests drive the Docker API with it); its daemon is never started.
for svc in docker-registry docker containerd; do
  if command -v service >/dev/null && service "$svc" status >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
# better-sqlite3 is a native module: rebuild it if the installed binary does not load.
node -e "require('better-sqlite3')(':memory:')" 2>/dev/null || npm rebuild better-sqlite3 --loglevel=error
echo "setup: compiling" >&2
npm run --silent build
