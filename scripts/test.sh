#!/usr/bin/env bash
# Sets up and runs the whole test suite. The last line is the plain summary "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }
report=$(mktemp /tmp/kiln-vitest-XXXXXX.json)
npx vitest run --reporter=default --reporter=json --outputFile.json="$report"
code=$?
node scripts/summary.mjs "$report" || code=1
rm -f "$report"
exit $code
