#!/usr/bin/env bash
# Benchmarks against b3sum, zstd, tar, cp and rclone, side by side in one run.
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
if [ ! -x /usr/bin/time ]; then
    echo "installing GNU time (Debian), for peak memory..." >&2
    apt-get update -qq && apt-get install -y -qq time >/dev/null
fi
if ! command -v rclone >/dev/null 2>&1; then
    echo "installing rclone (Debian)..." >&2
    apt-get update -qq && apt-get install -y -qq rclone >/dev/null
fi
cargo build --release --locked --quiet --bin cathedral --example bench_gen
# The remote section pushes to a loopback S3 server, started here and stopped on exit.
eval "$(scripts/s3-server.sh start)"
trap 'scripts/s3-server.sh stop' EXIT
python3 bench/bench.py "$@"
