#!/usr/bin/env bash
# A real S3-compatible server on loopback for the remote tests and benchmarks.
#
#   eval "$(scripts/s3-server.sh start)"   installs the server if missing, starts it on 127.0.0.1 with a
#                                          fresh data directory, creates a bucket and a key, and prints
#                                          `export NAME=value` lines (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#                                          AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP,
#                                          CATHEDRAL_TEST_BUCKET)
#   scripts/s3-server.sh stop              stops it and removes its data
#
# The server is s3s-fs (the S3 protocol over a directory; `cargo install s3s-fs --version 0.14.1
# --features binary`, about 3 minutes). Its state lives in target/s3-server/.
set -euo pipefail
cd "$(dirname "$0")/.."
state="$PWD/target/s3-server"
port="${CATHEDRAL_S3_PORT:-9317}"

start() {
    if ! command -v s3s-fs >/dev/null 2>&1; then
        echo "installing s3s-fs (cargo install s3s-fs --version 0.14.1)..." >&2
        cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary >&2
    fi
    stop_quietly
    mkdir -p "$state/data"
    local bucket="cathedral-test"
    mkdir -p "$state/data/$bucket"
    # A fresh key for each start: 20 and 40 random characters, as AWS keys are.
    local key secret
    key="CATH$(head -c 4096 /dev/urandom | tr -dc 'A-Z0-9' | head -c 16)"
    secret="$(head -c 4096 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 40)"
    s3s-fs --host 127.0.0.1 --port "$port" --access-key "$key" --secret-key "$secret" "$state/data" \
        >"$state/server.log" 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export CATHEDRAL_TEST_BUCKET=$bucket
ENV
            return 0
        fi
        sleep 0.1
    done
    echo "s3s-fs did not start; its log:" >&2
    cat "$state/server.log" >&2
    exit 1
}

stop_quietly() {
    if [ -f "$state/pid" ]; then
        kill "$(cat "$state/pid")" 2>/dev/null || true
        rm -f "$state/pid"
    fi
    rm -rf "$state/data"
}

case "${1:-}" in
    start) start ;;
    stop) stop_quietly ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
