#!/usr/bin/env bash
# The test command: starts the local S3 server the remote tests use
# (scripts/s3-server.sh, installing it if missing), runs the tests, and stops
# the server whatever happens. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/s3-server.sh start)"
trap 'scripts/s3-server.sh stop' EXIT
export CATHEDRAL_REQUIRE_S3=1
cargo test --locked "$@"
