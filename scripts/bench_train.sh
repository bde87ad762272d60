#!/usr/bin/env bash
# Times maxl-train's training steps (release build) against the same steps in PyTorch-Python
# (scripts/bench_train.py), interleaved RUNS times (default 5): each run does one repeat of every
# mode in Rust, then one in Python, each mode in its own process. Prints medians, ratios to the
# single-task step of the same implementation, Rust/Python per mode and peak RSS.
#   scripts/bench_train.sh [--threads N] [--iters N] [--modes a,b]   (flags go to both sides)
#   scripts/bench_train.sh --preset resnet18 --input-size 64x64 --generator-preset resnet18-narrow
# Both sides take --preset, --input-size, --generator-preset, --batch-size, --classes,
# --psi-per-class, --device, --modes, --iters, --warmup, --threads.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
cargo build --release -q -p maxl-train-cli --bin maxl-train
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "${RUNS:-5}"); do
  "$CARGO_TARGET_DIR/release/maxl-train" bench --repeats 1 --json "$@" >> "$out"
  # maxl-train sets glibc's allocator parameters itself (maxl_train::keep_freed_memory); the
  # Python side gets the same ones through glibc's tunables, so the rows compare implementations.
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 \
    "$MAXL_PYTHON" scripts/bench_train.py --repeats 1 --json "$@" | sed 's/^{/{"impl": "python", /' >> "$out"
done
"$MAXL_PYTHON" - "$out" "$@" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ms, rss, order = {}, {}, []
for r in rows:
    key = (r["impl"], r["mode"])
    ms.setdefault(key, []).append(r.get("ms") if r["impl"] == "rust" else r["median_ms"])
    rss[key] = max(rss.get(key, 0), r["peak_rss_mib"])
    if r["mode"] not in order:
        order.append(r["mode"])
med = {k: statistics.median(v) for k, v in ms.items()}
print(f"{'step':28s} {'Rust ms':>9s} {'× single':>9s} {'Python ms':>10s} {'× single':>9s} {'Rust/Python':>12s} {'RSS MiB (R/P)':>14s}")
for m in order:
    r, p = med.get(("rust", m)), med.get(("python", m))
    rs, ps = med.get(("rust", "single")), med.get(("python", "single"))
    f = lambda v, d: f"{v:.2f}" if v is not None else "—"
    print(f"{m:28s} {f(r,2):>9s} {f(r/rs if r and rs else None,2):>9s} {f(p,2):>10s} "
          f"{f(p/ps if p and ps else None,2):>9s} {f(r/p if r and p else None,2):>12s} "
          f"{rss.get(('rust', m), 0):6.0f}/{rss.get(('python', m), 0):<6.0f}")
print(f"medians of {len(ms[('rust', order[0])])} interleaved repeats; flags: {' '.join(sys.argv[2:]) or '(defaults)'}")
PY
