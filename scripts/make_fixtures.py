#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for maxl-train's meta-gradient and schedule tests.

MAXL iterations in plain PyTorch (scripts/maxl_reference.py: torch.nn.functional,
torch.autograd.grad with create_graph=True, torch.optim.SGD for the schedules), in float64 on a
tiny network, following the authors' formulas: mask softmax as M*exp(y)/sum(M*exp(y)), focal
loss on probabilities.

* meta_step.safetensors: the meta-gradient at lambda 0 and 0.2, and one stage 1 then stage 2;
* schedule_step.safetensors: two iterations of the `interleaved` and of the `fused` schedule
  (the weights, running statistics and losses after each).

    scripts/make_fixtures.py              # rewrites both files in crates/maxl-train/tests/fixtures/
    scripts/make_fixtures.py --out PATH --schedule-out PATH2   # writes elsewhere (to compare)

Run with the project venv's Python (scripts/setup.sh installs torch and safetensors there).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import maxl_reference as mr  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "crates", "maxl-train", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "meta_step.safetensors")
SCHEDULE_OUT = os.path.join(FIXTURES, "schedule_step.safetensors")

# The tiny architecture (mirrored by the Rust test): input 2x8x8, blocks (2 convs x 3 ch), (1 conv x 4 ch),
# heads 16 -> 5 -> out. K = 3 primary classes, psi = [2, 1, 3] -> A = 6 auxiliary slots.
C, H, W = 2, 8, 8
LAYERS = [(2, 3, False), (3, 3, True), (3, 4, True)]  # (in, out, pool after)
HIDDEN = 5
PSI = [2, 1, 3]
N = 6
ALPHA, GAMMA = 0.1, 2.0
LR_F, MOM_F, WD_F = 0.1, 0.9, 5e-4   # stage-1 optimiser (one step)
LR_G, WD_G = 1e-3, 5e-4              # stage-2 optimiser (one step)

# The schedule fixture: two batches of N (every primary class in each), lambda 0.2, alpha = theta1's
# lr. Interleaved: momentum and weight decay on both networks (the second step reads the momentum
# buffers of the first); fused: plain SGD on theta1, as that schedule requires.
SCHEDULE_LAMBDA = 0.2
SCHEDULE_OPT = {
    "interleaved": (dict(lr=0.1, momentum=0.9, weight_decay=5e-4), dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
    "fused": (dict(lr=0.1, momentum=0.0, weight_decay=0.0), dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
}


def build():
    """All fixture tensors, in the order and with the random draws the Rust test expects."""
    torch.manual_seed(1234)
    dt = torch.float64
    m = mr.Maxl(LAYERS, (C, H, W), HIDDEN, PSI, dtype=dt, gamma=GAMMA)
    f0, g0 = m.init_random(m.f_specs()), m.init_random(m.g_specs())
    x = torch.randn(N, C, H, W, dtype=dt)
    y = torch.tensor([0, 1, 2, 0, 2, 1], dtype=torch.int64)

    out = {f"f.{n}": v for n, v in f0.items()}
    out.update({f"g.{n}": v for n, v in g0.items()})
    out["x"], out["y"] = x, y
    out["alpha"] = torch.tensor([ALPHA], dtype=dt)
    for lam, tag in [(0.0, "lambda0"), (0.2, "lambda0.2")]:
        grads, loss = m.meta_gradient(x, y, f0, g0, ALPHA, lam)
        out[f"expected.{tag}.loss"] = torch.tensor([loss], dtype=dt)
        for n, g in grads.items():
            out[f"expected.{tag}.grad.{n}"] = g.detach()

    # Stage 1 (one SGD step of f with momentum and weight decay; running statistics of f and g
    # updated once), then stage 2 (one SGD step of g on the lambda = 0.2 meta-gradient at the
    # updated f).
    bufs_f = {n: v.clone() for n, v in mr.buffers(f0).items()}
    bufs_g = {n: v.clone() for n, v in mr.buffers(g0).items()}
    P1 = mr.leaves(f0)
    with torch.no_grad():
        t = m.generator(x, y, mr.trainable(g0), bufs_g, "update")
    l1 = m.l1(x, y, P1, bufs_f, "update", t)
    grads = mr.grad(l1, P1)
    opt_f = {}
    for n, g in grads.items():
        d = g + WD_F * P1[n].detach()
        opt_f[n] = P1[n].detach() - LR_F * d      # first momentum step: buffer = d
    for n, v in opt_f.items():
        out[f"expected.stage1.f.{n}"] = v
    for n, v in bufs_f.items():
        out[f"expected.stage1.f.{n}"] = v
    for n, v in bufs_g.items():
        out[f"expected.stage1.g.{n}"] = v
    out["expected.stage1.loss"] = torch.tensor([l1.item()], dtype=dt)

    f1 = {**opt_f, **bufs_f}
    g1 = {**mr.trainable(g0), **bufs_g}
    grads, _ = m.meta_gradient(x, y, f1, g1, ALPHA, 0.2)
    for n, g in grads.items():
        out[f"expected.stage2.g.{n}"] = g1[n] - LR_G * (g + WD_G * g1[n])
    return {k: v.contiguous() for k, v in out.items()}


def build_schedules():
    """Initial weights, two batches, and for each schedule the state after each of two
    iterations: `<schedule>.<i>.f.<name>`, `<schedule>.<i>.g.<name>` (parameters and running
    statistics), `<schedule>.<i>.l1` (stage 1's L1), `<schedule>.<i>.l2` (L2 of the meta-gradient),
    the optimisers, `<schedule>.opt_f.lr` / `.momentum` / `.weight_decay` (the same for opt_g),
    and the losses' `gamma` and `lambda`."""
    torch.manual_seed(4321)
    dt = torch.float64
    m = mr.Maxl(LAYERS, (C, H, W), HIDDEN, PSI, dtype=dt, gamma=GAMMA)
    f0, g0 = m.init_random(m.f_specs()), m.init_random(m.g_specs())
    batches = [(torch.randn(N, C, H, W, dtype=dt), torch.tensor(y, dtype=torch.int64))
               for y in ([0, 1, 2, 0, 2, 1], [2, 2, 0, 1, 0, 1])]
    out = {f"f.{n}": v for n, v in f0.items()}
    out.update({f"g.{n}": v for n, v in g0.items()})
    out["gamma"], out["lambda"] = torch.tensor([GAMMA], dtype=dt), torch.tensor([SCHEDULE_LAMBDA], dtype=dt)
    for i, (x, y) in enumerate(batches, 1):
        out[f"x{i}"], out[f"y{i}"] = x, y
    for schedule, (opt_f, opt_g) in SCHEDULE_OPT.items():
        s = mr.Schedule(m, f0, g0, opt_f, opt_g, SCHEDULE_LAMBDA)
        for net, opt in [("f", opt_f), ("g", opt_g)]:
            for k, v in opt.items():
                out[f"{schedule}.opt_{net}.{k}"] = torch.tensor([v], dtype=dt)
        for i, (x, y) in enumerate(batches, 1):
            getattr(s, schedule)(x, y)
            for n, v in s.f().items():
                out[f"{schedule}.{i}.f.{n}"] = v
            for n, v in s.g().items():
                out[f"{schedule}.{i}.g.{n}"] = v
            for n, v in s.losses.items():
                out[f"{schedule}.{i}.{n}"] = torch.tensor([v], dtype=dt)
    return {k: v.contiguous() for k, v in out.items()}


def save(out, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(out, path, metadata={"producer": "scripts/make_fixtures.py", "torch": torch.__version__})
    print(f"wrote {os.path.normpath(path)} ({len(out)} tensors)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help="where to write the meta-gradient fixture")
    ap.add_argument("--schedule-out", default=SCHEDULE_OUT, help="where to write the schedule fixture")
    a = ap.parse_args()
    save(build(), a.out)
    save(build_schedules(), a.schedule_out)


if __name__ == "__main__":
    main()
