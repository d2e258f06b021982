#!/usr/bin/env bash
# Checks every hash a fixture bundle commits to with the independent `b3sum`
# tool: the manifest's file hashes, and each blob file's stored hash from
# blobs.cath-list. Installs b3sum with cargo if it is missing.
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
    print(f"{record[32:64].hex()}  blobs/{name[:2]}/{name}")
PY
)
    if (cd "$bundle" && printf '%s\n' "$list" | b3sum --check --quiet); then
        echo "b3sum agrees with $bundle ($(printf '%s\n' "$list" | wc -l) files)"
    else
        echo "b3sum DISAGREES with $bundle" >&2
        status=1
    fi
done
exit $status
