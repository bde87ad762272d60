#!/usr/bin/env python3
"""The Python side of `maxl-train bench`: the same training steps in PyTorch-Python, so the
per-step times of the two can be compared as ratios to the single-task step.

Setup (by default the `small` preset, float32): x ~ N(0, 1) [100, 1, 28, 28], random labels in
[0, 10), backbone conv(1->16)+BN+ReLU+pool, conv(16->32)+BN+ReLU+pool, heads 1568 -> 128 -> out;
the multi-task net f has a primary head (10) and an auxiliary head (10 classes x psi 5 = 50
slots), the label generator g its own backbone and a 50-slot head under the mask softmax.
Hand-written SGD: theta1 lr 0.01; theta2 lr 1e-3, weight decay 5e-4. alpha 0.01, lambda 0.2,
gamma 2. The flags `maxl-train bench` has change the shapes the same way: --preset (small, vgg16,
resnet18, resnet34, resnet50, resnet18-cifar), --input-size HxW, --generator-preset NAME (g's
own network at f's input: a preset, or PRESET-narrow, a ResNet preset with every width and the
heads' hidden width divided by 4), --batch-size, --classes, --psi-per-class, --device.

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
    python scripts/bench_train.py --preset resnet18 --input-size 64x64 --generator-preset resnet18-narrow
    python scripts/bench_train.py --check                # float64: jvp == double backward
    python scripts/bench_train.py --check --preset resnet18 --input-size 64x64 --batch-size 4
                                 # also: the ResNet's forward == torchvision's (eval mode)
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
LR_F, LR_G, WD_G, ALPHA, LAM = 0.01, 1e-3, 5e-4, 0.01, 0.2


def sgd(P, G, lr, wd=0.0):
    """Plain SGD in place: p -= lr (g + wd p)."""
    with torch.no_grad():
        for n, p in P.items():
            p.sub_(lr * (G[n] + wd * p) if wd else lr * G[n])


class Bench:
    """Data, f (theta1 P1, buffers B1) and g (theta2 P2, buffers B2) as `maxl-train bench` builds
    them, for the networks and sizes of the parsed flags `a`."""

    def __init__(self, a, dtype=torch.float32, aux=True):
        torch.manual_seed(0)
        self.device = dev = device(a.device)
        self.m = m = mr.Maxl.preset(a.preset, a.classes, a.psi_per_class, a.input_size, a.generator_preset,
                                    dtype, dev)
        self.x = torch.randn(a.batch_size, *m.chw, dtype=dtype, device=dev)
        self.y = torch.randint(a.classes, (a.batch_size,), device=dev)
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


def device(name):
    """cpu, cuda or auto (cuda when there is one) as a torch.device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_loop(step, warmup, iters, dev=torch.device("cpu")):
    """Mean ms of step() over `iters` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(dev)
    return (time.perf_counter() - start) * 1000.0 / iters


def worker(mode, a):
    b = Bench(a, aux=mode != "single")
    if b.device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # as maxl-train on CUDA

    def timed(step):
        return time_loop(step, a.warmup, a.iters, b.device)

    schedule, _, meta = mode.partition("-")
    if schedule == "single":
        ms = timed(b.single)
    elif schedule == "interleaved":
        ms = timed(lambda: b.interleaved(meta))
    elif schedule == "reference":
        ms = timed(b.reference_stage1) + timed(lambda: b.reference_stage2(meta))
    else:
        ms = timed(lambda: b.fused(meta))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = {"mode": mode, "ms": ms, "peak_rss_mib": rss}
    if b.device.type == "cuda":
        line["peak_gpu_mib"] = torch.cuda.max_memory_allocated(b.device) / 1048576
    print(json.dumps(line), flush=True)


def max_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def torchvision_check(net, dtype=torch.float64):
    """The ResNet `net`'s features (running statistics) against torchvision's ResNet of the same
    layout (for the CIFAR stem: conv1 3x3 stride 1 and no max-pool), eval mode, at the same
    random weights and running statistics, on a random batch of 2 at net's input size: the
    largest relative difference, or None when torchvision has no such network (a narrowed one).
    Also checks that the names, shapes and order of the tensors are torchvision's."""
    import torchvision.models.resnet as tvr
    if net.widths != [64, 128, 256, 512] or net.stem_width != 64 or len(net.layers) != 4:
        return None
    torch.manual_seed(1)
    tv = tvr.ResNet(tvr.BasicBlock if net.block == "basic" else tvr.Bottleneck, net.layers)
    if net.stem == "cifar":
        tv.conv1 = torch.nn.Conv2d(net.chw[0], 64, 3, 1, 1, bias=False)
        tv.maxpool = torch.nn.Identity()
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        for mod in tv.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.1)
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    tv = tv.to(dtype).eval()
    sd = mr.from_torchvision(tv.state_dict())
    specs = net.specs()
    if [n for n, _ in specs] != list(sd) or any(tuple(sd[n].shape) != tuple(s) for n, s in specs):
        raise AssertionError("the ResNet's tensors are not torchvision's (names, shapes or order)")
    x = torch.randn(2, *net.chw, dtype=dtype)
    with torch.no_grad():
        want = tv(x)
        got = net.features(x, sd, sd, "running")
    return ((got - want).abs().max() / want.abs().max()).item()


def check(a):
    """float64, at the flags' networks and sizes: the jvp meta-gradient equals the double-backward
    one (interleaved stage 2 after one stage-1 step; fused at the pre-update theta1), and a
    ResNet's forward equals torchvision's. Returns whether both hold."""
    ok = True
    m = mr.Maxl.preset(a.preset, a.classes, a.psi_per_class, a.input_size, a.generator_preset, torch.float64)
    for who, net in (("f", m), ("generator", m.gen)):
        if net is not None and net.backbone is not None:
            d = torchvision_check(net.backbone)
            if d is None:
                print(f"{who:12s} forward vs torchvision: no torchvision network of this layout (skipped)")
                continue
            print(f"{who:12s} forward vs torchvision (eval, float64): max |difference| / max |features| = {d:.3e}")
            ok &= d < 1e-12
    worst = 0.0
    for schedule in ("interleaved", "fused"):
        grads = {}
        for mode in mr.MODES:
            b = Bench(a, torch.float64)
            if schedule == "interleaved":
                t = b.t("update")
                b.stage1(t)
                grads[mode] = b.meta_grads(t, mode)[1]
            else:
                grads[mode] = b.meta_grads(b.t("update"), mode, b.B1, "update", alpha=LR_F)[1]
        d = max_diff(grads["jvp"], grads["double-backward"])
        scale = max(g.abs().max().item() for g in grads["double-backward"].values())
        print(f"{schedule:12s} stage 2: max |jvp - double-backward| = {d:.3e}   (max |grad| = {scale:.3e})")
        worst = max(worst, d / max(1.0, scale))
    ok &= worst < 1e-10
    print(f"{'ok' if ok else 'FAILED'}: worst meta-gradient difference {worst:.3e} (/ max |grad| where > 1), bound 1e-10")
    return ok


def input_size(s):
    """HxW (64x64) or one side (64) as (H, W)."""
    try:
        h, _, w = s.lower().replace("×", "x").partition("x")
        hw = (int(h), int(w or h))
    except ValueError:
        hw = (0, 0)
    if min(hw) <= 0:
        raise argparse.ArgumentTypeError(f"`{s}` is not HxW with positive sizes (e.g. 64x64)")
    return hw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, from: " + ", ".join(MODES))
    ap.add_argument("--iters", type=int, default=20, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    ap.add_argument("--repeats", type=int, default=5, help="subprocesses per mode (median reported)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads")
    ap.add_argument("--json", action="store_true", help="one JSON object per mode instead of a table")
    ap.add_argument("--check", action="store_true",
                    help="float64 check of jvp against double backward (and of a ResNet against torchvision), then exit")
    ap.add_argument("--preset", default="small", help="architecture preset, as maxl-train's")
    ap.add_argument("--input-size", type=input_size, metavar="HxW", help="the preset at this input size")
    ap.add_argument("--generator-preset", metavar="NAME",
                    help="the label generator's own network: a preset, or PRESET-narrow (a ResNet preset, widths / 4)")
    ap.add_argument("--batch-size", type=int, default=100, help="mini-batch size")
    ap.add_argument("--classes", type=int, default=10, help="primary classes of the synthetic task")
    ap.add_argument("--psi-per-class", type=int, default=5, help="psi of every class")
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where to run")
    ap.add_argument("--worker", metavar="MODE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.batch_size < 2 or min(a.iters, a.repeats, a.classes, a.psi_per_class) < 1:
        ap.error("--batch-size must be >= 2 and --iters, --repeats, --classes, --psi-per-class >= 1")
    try:
        mr.Maxl.preset(a.preset, a.classes, a.psi_per_class, a.input_size, a.generator_preset)
    except ValueError as e:
        ap.error(str(e))
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check:
        sys.exit(0 if check(a) else 1)
    if a.worker:
        return worker(a.worker, a)

    modes = a.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    cmd = [sys.executable, os.path.abspath(__file__), "--iters", str(a.iters), "--warmup", str(a.warmup)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    cmd += ["--preset", a.preset, "--batch-size", str(a.batch_size), "--classes", str(a.classes),
            "--psi-per-class", str(a.psi_per_class), "--device", a.device]
    if a.input_size:
        cmd += ["--input-size", "{}x{}".format(*a.input_size)]
    if a.generator_preset:
        cmd += ["--generator-preset", a.generator_preset]
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
            row = {"mode": mode, "median_ms": ms[mode], "ratio_to_single": ratio, "peak_rss_mib": rss,
                   "ms": [r["ms"] for r in rs], "iters": a.iters, "threads": a.threads}
            if any("peak_gpu_mib" in r for r in rs):
                row["peak_gpu_mib"] = max(r.get("peak_gpu_mib", 0) for r in rs)
            print(json.dumps(row))
        else:
            r = f"{ratio:6.2f}x" if ratio else "      -"
            print(f"{mode:30s} {ms[mode]:10.2f} {r:>7s} {rss:13.0f}")


if __name__ == "__main__":
    main()
