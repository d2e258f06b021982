#!/usr/bin/env bash
# Checks every hash a fixture bundle commits to with the independent `b3sum`
# tool: the manifest's file hashes; the whole file of each blob whose stored
# hash is a whole-file hash (every zstd blob); and for each uncompressed
# blob, its data (after the 56-byte header) against its name (FORMAT.md §7).
# Installs b3sum with cargo if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v b3sum >/dev/null 2>&1; then
    echo "installing b3sum (cargo install b3sum)..." >&2
    cargo install --quiet --locked b3sum
fi

status=0
for bundle in fixtures/bundles/*.cath-bundle; do
    list=$(python3 - "$bundle" <<'PY'
import json, struct, sys
root = sys.argv[1]
manifest = json.load(open(f"{root}/MANIFEST.json"))
for name, entry in sorted(manifest["files"].items()):
    print(f"{entry['hash']}  {name}")
data = open(f"{root}/blobs.cath-list", "rb").read()
assert data[:7] == b"CATHBLS", "bad blob list magic"
(count,) = struct.unpack(">I", data[11:15])
assert len(data) == 15 + 88 * count, "bad blob list size"
for i in range(count):
    record = data[15 + 88 * i: 15 + 88 * (i + 1)]
    name = record[:32].hex()
    if record[81] == 1 or record[32:64] != record[:32]:
        print(f"{record[32:64].hex()}  blobs/{name[:2]}/{name}")
PY
)
    raw=$(python3 - "$bundle" <<'PY'
import struct, sys
data = open(f"{sys.argv[1]}/blobs.cath-list", "rb").read()
(count,) = struct.unpack(">I", data[11:15])
for i in range(count):
    record = data[15 + 88 * i: 15 + 88 * (i + 1)]
    if record[81] == 0:
        print(record[:32].hex())
PY
)
    for name in $raw; do
        got=$(tail -c +57 "$bundle/blobs/${name:0:2}/$name" | b3sum --no-names)
        if [ "$got" != "$name" ]; then
            echo "b3sum DISAGREES with $bundle/blobs/${name:0:2}/$name: content hashes to $got" >&2
            status=1
        fi
    done
    if (cd "$bundle" && printf '%s\n' "$list" | b3sum --check --quiet); then
        echo "b3sum agrees with $bundle ($(printf '%s\n' "$list" | wc -l) files)"
    else
        echo "b3sum DISAGREES with $bundle" >&2
        status=1
    fi
done
exit $status
