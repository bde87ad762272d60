#!/usr/bin/env bash
# Reproduces the model committed in models/: the default configuration (small preset, MAXL,
# Fashion-MNIST, seed 0) trained on the CPU and exported, plus the weights it was exported from
# (models/weights/, used by the export conformance tests).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
cargo build --workspace --bins
run="runs/models-default-$(date -u +%Y%m%d-%H%M%S)"
"$CARGO_TARGET_DIR/debug/maxl-train" --out "$run" --export models/
mkdir -p models/weights
cp "$run/multitask.safetensors" "$run/label_generator.safetensors" "$run/config.yaml" models/weights/
echo "models/ now holds the export of $run"
