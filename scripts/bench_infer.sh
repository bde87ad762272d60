#!/usr/bin/env bash
# Benchmarks maxl-infer (release build) against onnxruntime-python on the same model and inputs,
# alternating RUNS times (default 5), and prints the medians and the ratios the README reports.
#   scripts/bench_infer.sh [--model DIR] [extra maxl-infer bench flags]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
maxl_env
RUNS="${RUNS:-5}"
MODEL=models
if [ "${1:-}" = "--model" ]; then MODEL="$2"; shift 2; fi
cargo build --release -q -p maxl-infer-cli
BIN="$CARGO_TARGET_DIR/release/maxl-infer"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$RUNS"); do
  echo "== run $i of $RUNS: maxl-infer bench" >&2
  "$BIN" bench --model "$MODEL" --json "$out/rust-$i.json" --save-inputs "$out/inputs.f32" "$@" >&2
  echo "== run $i of $RUNS: onnxruntime-python" >&2
  python scripts/bench_infer.py --model "$MODEL" --inputs "$out/inputs.f32" --json "$out/py-$i.json" >&2
done
python - "$out" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rust = [json.load(open(f"{out}/rust-{i}.json")) for i in range(1, runs + 1)]
py = [json.load(open(f"{out}/py-{i}.json")) for i in range(1, runs + 1)]
med = statistics.median

def rows(reports, backend, batch, key):
    return [r[key] for rep in reports for r in rep["throughput"] if r["backend"] == backend and r["batch"] == batch]

print(f"medians of {runs} runs ({rust[0]['cores']} cores)\n")
print("| backend | batch | images/s | p50 ms | p99 ms | images/s ÷ onnxruntime-python |")
print("|---|---:|---:|---:|---:|---:|")
backends = sorted({r["backend"] for r in rust[0]["throughput"]}) + ["onnxruntime-python"]
for b in backends:
    for n in sorted({r["batch"] for r in rust[0]["throughput"]}):
        src = py if b == "onnxruntime-python" else rust
        ips = rows(src, b, n, "images_per_s")
        if not ips:
            continue
        base = med(rows(py, "onnxruntime-python", n, "images_per_s"))
        print(f"| {b} | {n} | {med(ips):.0f} | {med(rows(src, b, n, 'p50_ms')):.3f} | {med(rows(src, b, n, 'p99_ms')):.3f} | {med(ips) / base:.2f}× |")
pools = [r["pool"] for r in rust if r.get("pool")]
if pools:
    print(f"\nort-cpu session pool, 2 threads of batch-1 calls (1 intra-op thread per session): "
          f"1 session behind a lock {med([p['one_session_calls_per_s'] for p in pools]):.0f} calls/s, "
          f"2-session pool {med([p['two_sessions_calls_per_s'] for p in pools]):.0f} calls/s, "
          f"ratio {med([p['ratio'] for p in pools]):.2f}×")
if rust[0]["server"]:
    print("\n| server | clients | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    def srv(batching, clients, key):
        return med([s[key] for rep in rust for s in rep["server"] if s["batching"] == batching and s["clients"] == clients])
    clients = sorted({s["clients"] for s in rust[0]["server"]}, reverse=True)
    for c in clients:
        for on in (True, False):
            print(f"| batching {'on' if on else 'off'} | {c} | {srv(on, c, 'requests_per_s'):.0f} | {srv(on, c, 'p50_ms'):.3f} | {srv(on, c, 'p99_ms'):.3f} |")
    many = clients[0]
    wait = rust[0]["server"][0]["max_wait_ms"]
    print(f"\ndynamic batching at {many} clients: {srv(True, many, 'requests_per_s') / srv(False, many, 'requests_per_s'):.2f}× the requests/s of batching off")
    print(f"at 1 client: p50 {srv(True, 1, 'p50_ms'):.3f} ms with batching, {srv(False, 1, 'p50_ms'):.3f} ms without (+ max-wait {wait:.0f} ms = {srv(False, 1, 'p50_ms') + wait:.3f} ms)")
PY
