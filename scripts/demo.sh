#!/usr/bin/env bash
# The main job on the shipped sample store: capture a run into a bundle,
# verify it, and show what is inside.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
cathedral=target/release/cathedral
bundle=target/demo/model-eval.cath-bundle

echo "\$ cathedral bundle --store fixtures/store --run ba738917 --output $bundle --force"
"$cathedral" bundle --store fixtures/store --run ba738917 --output "$bundle" --force
echo
echo "\$ cathedral verify-bundle --bundle $bundle"
"$cathedral" verify-bundle --bundle "$bundle"
echo
echo "\$ cathedral inspect --bundle $bundle"
"$cathedral" inspect --bundle "$bundle"
echo
echo "\$ cathedral inspect --bundle $bundle --events --kind NodeFailed"
failed=$("$cathedral" inspect --bundle "$bundle" --events --kind NodeFailed)
echo "$failed"
echo
echo "# the failing event's payload, decoded from base64:"
echo "$failed" | sed -E 's/.*"payload":"([^"]*)".*/\1/' | base64 -d
echo
