#!/usr/bin/env bash
# Benchmarks maxl-label (release build) end to end against the Python pipeline of
# scripts/bench_label.py in the same run, interleaved RUNS times (default 5), on N generated
# 256×256 JPEGs and N 28×28 PNGs (default N = 2000), and its peak RSS at N and 10·N.
# The datasets are generated once into the cache directory and reused.
#   scripts/bench_label.sh [extra maxl-label bench flags]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
cargo build --release -q -p maxl-label-cli
"$CARGO_TARGET_DIR/release/maxl-label" bench \
  --runs "${RUNS:-5}" --images "${N:-2000}" \
  --dir "$(dirname "$CARGO_TARGET_DIR")/bench-label" \
  --python "$MAXL_PYTHON scripts/bench_label.py" "$@"
