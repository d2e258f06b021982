#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, seeded from the fixtures, and
# prints the executions per target. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
# cargo fuzz passes nightly-only flags (-Z sanitizer, sancov); this machine has
# one stable toolchain, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1

seed() {
    local target=$1; shift
    mkdir -p "fuzz/corpus/$target"
    for f in "$@"; do
        cp "$f" "fuzz/corpus/$target/seed-$(echo "$f" | tr '/' '_')"
    done
}
seed event_log fixtures/bundles/*/events.cath-log
seed index fixtures/bundles/*/events.cath-idx
seed manifest fixtures/bundles/*/MANIFEST.json fixtures/bundles/*/metadata.json fixtures/bundles/*/dag.json
seed blob fixtures/bundles/*/blobs/*/* fixtures/bundles/*/blobs.cath-list
seed snapshot fixtures/bundles/*/snapshot.cath-snap
# (Any bytes make an input: the target reads a file, its changes and reads from them.)
seed outboard fixtures/bundles/*/events.cath-idx
# One canonical line per seed, from the sample store's runs.
mkdir -p fuzz/corpus/event_line
for f in fixtures/store/runs/*/events.jsonl; do
    n=0
    while IFS= read -r line && [ "$n" -lt 200 ]; do
        printf '%s' "$line" >"fuzz/corpus/event_line/seed-$(basename "$(dirname "$f")")-$n"
        n=$((n + 1))
    done <"$f"
done
# Archives: the file as is (first byte odd), and its tar stream (first byte even).
mkdir -p fuzz/corpus/archive
for f in fixtures/archives/*.tar.zst; do
    { printf '\001'; cat "$f"; } >"fuzz/corpus/archive/seed-raw-$(basename "$f")"
    if command -v zstd >/dev/null; then
        { printf '\000'; zstd -dc "$f"; } >"fuzz/corpus/archive/seed-tar-$(basename "$f")"
    fi
done

status=0
for target in event_log index manifest blob snapshot archive outboard event_line; do
    log="fuzz/$target.log"
    if (cd fuzz && cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576) >"$log" 2>&1; then
        runs=$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+' || echo "?")
        echo "$target: $runs executions in ${secs}s, no crash"
    else
        echo "$target: FAILED, see $log and fuzz/artifacts/$target" >&2
        status=1
    fi
done
exit $status
