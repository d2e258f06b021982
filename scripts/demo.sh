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
echo "\$ cathedral explain --bundle $bundle"
"$cathedral" explain --bundle "$bundle"
echo
echo "\$ cathedral replay --bundle $bundle"
"$cathedral" replay --bundle "$bundle"
echo
