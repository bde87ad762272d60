#!/usr/bin/env bash
# Decoded batches per second of maxl's streaming loader against torchvision's ImageFolder +
# DataLoader (scripts/bench_loader.py), on the same 256×256 JPEGs, 2 workers, batches of 64
# 224×224 centre crops. Flags go to bench_loader.py (--images N, --repeats N, --workers N …).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
cargo build --release -q -p maxl-data --example bench_loader
"$MAXL_PYTHON" scripts/bench_loader.py --maxl "$CARGO_TARGET_DIR/release/examples/bench_loader" "$@"
