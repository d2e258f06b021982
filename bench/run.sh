#!/usr/bin/env bash
# Benchmarks against b3sum, zstd, tar and cp, side by side in one run.
#   bench/run.sh            full suite; writes bench/results.{json,md}
#   bench/run.sh --smoke    tiny sizes; writes bench/results-smoke.{json,md}
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v zstd >/dev/null 2>&1; then
    echo "installing zstd (Debian)..." >&2
    apt-get update -qq && apt-get install -y -qq zstd >/dev/null
fi
if ! command -v b3sum >/dev/null 2>&1; then
    echo "installing b3sum (cargo install b3sum)..." >&2
    cargo install --quiet --locked b3sum
fi
cargo build --release --locked --quiet --bin cathedral --example bench_gen
exec python3 bench/bench.py "$@"
