#!/usr/bin/env python3
"""The Python side of `maxl-infer bench`: the same model and the same input images through
onnxruntime-python, doing what `classify` does per call (the primary head, the argmax, the
label generator for the predicted class). Prints images/s and p50/p99 per batch size as JSON.

    python scripts/bench_infer.py --model models --inputs inputs.f32 --json py.json
"""
import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="exported model directory")
    ap.add_argument("--inputs", required=True, help="raw little-endian f32 N×C×H×W (maxl-infer bench --save-inputs)")
    ap.add_argument("--batches", default="1,8,64", help="batch sizes, comma-separated")
    ap.add_argument("--seconds", type=float, default=2.0, help="least time per measurement")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()

    opts = ort.SessionOptions()
    primary = ort.InferenceSession(os.path.join(a.model, "primary.onnx"), opts, providers=["CPUExecutionProvider"])
    gen_path = os.path.join(a.model, "label_generator.onnx")
    generator = (
        ort.InferenceSession(gen_path, opts, providers=["CPUExecutionProvider"]) if os.path.exists(gen_path) else None
    )
    _, c, h, w = primary.get_inputs()[0].shape
    x = np.fromfile(a.inputs, dtype="<f4").reshape(-1, c, h, w)

    def call(b):
        probs = primary.run(["primary_probs"], {"image": b})[0]
        label = probs.argmax(axis=1).astype(np.int64)
        if generator is not None:
            generator.run(["aux_label_probs", "aux_slot"], {"image": b, "primary_label": label})

    rows = []
    for n in [int(v) for v in a.batches.split(",")]:
        b = np.ascontiguousarray(x[:n])
        for _ in range(3):
            call(b)
        lat = []
        start = time.perf_counter()
        while time.perf_counter() - start < a.seconds or len(lat) < 10:
            t = time.perf_counter()
            call(b)
            lat.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        lat.sort()
        pick = lambda p: float(np.percentile(lat, 100 * p)) * 1e3  # linear, as maxl-cli's quantile
        rows.append(
            {"backend": "onnxruntime-python", "batch": n, "calls": len(lat),
             "images_per_s": len(lat) * n / total, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}
        )
        r = rows[-1]
        print(f"{r['backend']:<19} {n:>6} {r['images_per_s']:>12.1f} {r['p50_ms']:>10.3f} {r['p99_ms']:>10.3f}")
    report = {"onnxruntime": ort.__version__, "throughput": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
