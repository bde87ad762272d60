#!/usr/bin/env bash
# The main job end to end on the default dataset (Fashion-MNIST from the Debian package):
# set-up if needed → train a small MAXL model on the CPU → export it to ONNX → label a folder of
# real images with the exported label generator → print a summary. Extra arguments go to
# maxl-train. The committed model in models/ is left untouched: the demo exports into its run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
# The binaries only: the test targets' features (maxl-label's crash-test hook) stay out of them.
cargo build --workspace --bins
bin="$CARGO_TARGET_DIR/debug"
run="runs/demo-$(date -u +%Y%m%d-%H%M%S)"

echo "== 1/3 train MAXL (small preset, Fashion-MNIST, a few minutes on two cores) and export to ONNX =="
"$bin/maxl-train" --out "$run" --export "$run/models" "$@"

echo "== 2/3 a folder of real images: 20 Fashion-MNIST test images per class =="
"$bin/maxl-train" dump-images --per-class 20 --out "$run/images"

echo "== 3/3 label them with the exported label generator (ONNX Runtime) =="
"$bin/maxl-label" --input "$run/images" --out "$run/labels.csv" --model "$run/models" \
  --errors "$run/label-errors.csv" --gallery "$run/gallery"

echo
echo "run:      $run (metrics.csv, accuracy.png, loss.png, slot_usage.png, checkpoints/)"
echo "model:    $run/models (maxl.yaml, primary.onnx, label_generator.onnx)"
echo "labels:   $run/labels.csv"
echo "gallery:  $run/gallery/index.html (what the label generator found, one sheet per class)"
