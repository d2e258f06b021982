#!/usr/bin/env bash
# Long runs that do not belong in the test suite:
#   scripts/soak.sh           the crash test at 30 kill points over a 2,000-blob
#                             run, then every fuzz target for 60 s
#   scripts/soak.sh --smoke   the crash test at 16 other kill points, and every
#                             fuzz target for 3 s (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--smoke" ]; then
    CATHEDRAL_CRASH_POINTS=16 cargo test --locked --test crash -- --nocapture
    scripts/fuzz.sh 3
    exit 0
fi
CATHEDRAL_CRASH_POINTS=30 CATHEDRAL_CRASH_BLOBS=2000 cargo test --locked --release --test crash -- --nocapture
scripts/fuzz.sh 60
