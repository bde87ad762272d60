#!/usr/bin/env bash
# Runs every test of the workspace (set-up first if needed). Extra arguments go to `cargo test`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
# End-to-end tests run the real binaries: build them all first (all targets, so the features
# match those of `cargo test` and nothing is built twice).
cargo build --workspace --all-targets
cargo test --workspace "$@"
