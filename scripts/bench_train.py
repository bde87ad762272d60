#!/usr/bin/env python3
"""The Python side of `maxl-train bench`: the same training steps in PyTorch-Python, so the
per-step times of the two can be compared as ratios to the single-task step.

Setup (the `small` preset, float32): x ~ N(0, 1) [100, 1, 28, 28], random labels in [0, 10),
backbone conv(1->16)+BN+ReLU+pool, conv(16->32)+BN+ReLU+pool, heads 1568 -> 128 -> out; the
multi-task net f has a primary head (10) and an auxiliary head (10 classes x psi 5 = 50 slots),
the label generator g its own backbone and a 50-slot head under the mask softmax. Hand-written
SGD: theta1 lr 0.01; theta2 lr 1e-3, weight decay 5e-4. alpha 0.01, lambda 0.2, gamma 2.

Modes (meta-gradient by double backward, or by one forward-mode JVP; see maxl_reference.py):
  single                          single-task step (primary head only)
  interleaved-{double-backward,jvp}  t = g(x, y) once; stage 1 (theta1 step) then stage 2 (theta2 step)
  reference-{double-backward,jvp}    the authors' schedule per iteration: a stage-1 loop
                                     (g under no_grad) plus a stage-2 loop, each timed alone
  fused-{double-backward,jvp}        one forward of f and g and one G for both stages, at the
                                     pre-update theta1 (alpha = lr), then both steps

Each repeat runs every mode in its own subprocess (`--worker MODE`), which prints one JSON line
{"mode", "ms" (mean per step), "peak_rss_mib"}; the report gives the median ms over repeats, its
ratio to `single` and the largest peak RSS.

    python scripts/bench_train.py                        # all modes, 5 repeats, table
    python scripts/bench_train.py --modes single,fused-jvp --iters 10 --repeats 3 --threads 2 --json
    python scripts/bench_train.py --check                # float64: jvp == double backward
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import maxl_reference as mr  # noqa: E402

MODES = ["single", "interleaved-double-backward", "interleaved-jvp", "reference-double-backward",
         "reference-jvp", "fused-double-backward", "fused-jvp"]
N, CLASSES, PSI = 100, 10, 5
LR_F, LR_G, WD_G, ALPHA, LAM = 0.01, 1e-3, 5e-4, 0.01, 0.2


def sgd(P, G, lr, wd=0.0):
    """Plain SGD in place: p -= lr (g + wd p)."""
    with torch.no_grad():
        for n, p in P.items():
            p.sub_(lr * (G[n] + wd * p) if wd else lr * G[n])


class Bench:
    """Data, f (theta1 P1, buffers B1) and g (theta2 P2, buffers B2) as `maxl-train bench` builds them."""

    def __init__(self, dtype=torch.float32, aux=True):
        torch.manual_seed(0)
        self.m = m = mr.Maxl.small(CLASSES, PSI, dtype)
        self.x = torch.randn(N, *m.chw, dtype=dtype)
        self.y = torch.randint(CLASSES, (N,))
        f = m.init_default(m.f_specs(aux))
        self.P1, self.B1 = mr.leaves(f), mr.buffers(f)
        if aux:
            g = m.init_default(m.g_specs())
            self.P2, self.B2 = mr.leaves(g), mr.buffers(g)

    def t(self, bn):
        """The generator's output t = g(x, y), with its graph to theta2."""
        return self.m.generator(self.x, self.y, self.P2, self.B2, bn)

    def single(self):
        loss = self.m.l1(self.x, self.y, self.P1, self.B1, "update", None, aux=False)
        sgd(self.P1, mr.grad(loss, self.P1), LR_F)

    def stage1(self, t):
        loss = self.m.l1(self.x, self.y, self.P1, self.B1, "update", t.detach())
        sgd(self.P1, mr.grad(loss, self.P1), LR_F)

    def meta_grads(self, t, mode, bufs=None, bn="batch", alpha=ALPHA):
        """(G = dL1/dtheta1, dL2/dtheta2); L1 from a forward of f with `bn` (t kept in the graph
        for double backward, detached for jvp)."""
        db = mode == "double-backward"
        l1 = self.m.l1(self.x, self.y, self.P1, bufs, bn, t if db else t.detach())
        G = mr.grad(l1, self.P1, create_graph=db)
        obj = self.m.meta_objective(self.x, self.y, self.P1, t, G, alpha, LAM, mode)
        return G, mr.grad(obj, self.P2)

    def stage2(self, t, mode):
        sgd(self.P2, self.meta_grads(t, mode)[1], LR_G, WD_G)

    def interleaved(self, mode):
        t = self.t("update")
        self.stage1(t)
        self.stage2(t, mode)

    def reference_stage1(self):
        with torch.no_grad():
            t = self.t("update")
        self.stage1(t)

    def reference_stage2(self, mode):
        self.stage2(self.t("batch"), mode)

    def fused(self, mode):
        G, g2 = self.meta_grads(self.t("update"), mode, self.B1, "update", alpha=LR_F)
        sgd(self.P1, {n: g.detach() for n, g in G.items()}, LR_F)
        sgd(self.P2, g2, LR_G, WD_G)


def time_loop(step, warmup, iters):
    """Mean ms of step() over `iters` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) * 1000.0 / iters


def worker(mode, warmup, iters):
    b = Bench(aux=mode != "single")
    schedule, _, meta = mode.partition("-")
    if schedule == "single":
        ms = time_loop(b.single, warmup, iters)
    elif schedule == "interleaved":
        ms = time_loop(lambda: b.interleaved(meta), warmup, iters)
    elif schedule == "reference":
        ms = time_loop(b.reference_stage1, warmup, iters) + time_loop(lambda: b.reference_stage2(meta), warmup, iters)
    else:
        ms = time_loop(lambda: b.fused(meta), warmup, iters)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "ms": ms, "peak_rss_mib": rss}), flush=True)


def max_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def check():
    """float64: the jvp meta-gradient equals the double-backward one (interleaved stage 2 after
    one stage-1 step; fused at the pre-update theta1). Returns the worst difference."""
    worst = 0.0
    for schedule in ("interleaved", "fused"):
        grads = {}
        for mode in mr.MODES:
            b = Bench(torch.float64)
            if schedule == "interleaved":
                t = b.t("update")
                b.stage1(t)
                grads[mode] = b.meta_grads(t, mode)[1]
            else:
                grads[mode] = b.meta_grads(b.t("update"), mode, b.B1, "update", alpha=LR_F)[1]
        d = max_diff(grads["jvp"], grads["double-backward"])
        scale = max(g.abs().max().item() for g in grads["double-backward"].values())
        print(f"{schedule:12s} stage 2: max |jvp - double-backward| = {d:.3e}   (max |grad| = {scale:.3e})")
        worst = max(worst, d)
    ok = worst < 1e-10
    print(f"{'ok' if ok else 'FAILED'}: worst {worst:.3e} {'<' if ok else '>='} 1e-10")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, from: " + ", ".join(MODES))
    ap.add_argument("--iters", type=int, default=20, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    ap.add_argument("--repeats", type=int, default=5, help="subprocesses per mode (median reported)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--json", action="store_true", help="one JSON object per mode instead of a table")
    ap.add_argument("--check", action="store_true", help="float64 check of jvp against double backward, then exit")
    ap.add_argument("--worker", metavar="MODE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check:
        sys.exit(0 if check() else 1)
    if a.worker:
        return worker(a.worker, a.warmup, a.iters)

    modes = a.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    cmd = [sys.executable, os.path.abspath(__file__), "--iters", str(a.iters), "--warmup", str(a.warmup)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    runs = {m: [] for m in modes}
    for _ in range(a.repeats):
        for mode in modes:
            out = subprocess.run(cmd + ["--worker", mode], check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.strip().splitlines()[-1]))
    ms = {m: statistics.median(r["ms"] for r in rs) for m, rs in runs.items()}
    base = ms.get("single")
    if not a.json:
        print(f"{'mode':30s} {'median ms':>10s} {'ratio':>7s} {'peak RSS MiB':>13s}")
    for mode, rs in runs.items():
        ratio = ms[mode] / base if base else None
        rss = max(r["peak_rss_mib"] for r in rs)
        if a.json:
            print(json.dumps({"mode": mode, "median_ms": ms[mode], "ratio_to_single": ratio, "peak_rss_mib": rss,
                              "ms": [r["ms"] for r in rs], "iters": a.iters, "threads": a.threads}))
        else:
            r = f"{ratio:6.2f}x" if ratio else "      -"
            print(f"{mode:30s} {ms[mode]:10.2f} {r:>7s} {rss:13.0f}")


if __name__ == "__main__":
    main()
