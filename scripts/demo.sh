#!/usr/bin/env bash
# The main job end to end on the default dataset (Fashion-MNIST from the Debian package):
# set-up if needed → train a small MAXL model on the CPU → (export to models/ → label a folder
# of images to a CSV). Extra arguments go to maxl-train.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
# The same build as scripts/test.sh (all targets: identical features, nothing built twice).
cargo build --workspace --all-targets
bin="$CARGO_TARGET_DIR/debug"
run="runs/demo-$(date -u +%Y%m%d-%H%M%S)"

echo "== 1/3 train: MAXL, small preset, Fashion-MNIST (a few minutes on two cores) =="
"$bin/maxl-train" --out "$run" "$@"
echo "metrics: $run/metrics.csv   config: $run/config.yaml   weights: $run/*.safetensors"

echo "== 2/3 export to models/: not implemented yet (maxl-train has no --export so far) =="
echo "== 3/3 label a folder of images: not implemented yet (needs the exported label generator) =="
