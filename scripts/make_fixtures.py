#!/usr/bin/env python3
"""Writes the PyTorch reference fixture for maxl-train's meta-gradient tests.

One MAXL iteration in plain PyTorch (scripts/maxl_reference.py: torch.nn.functional,
torch.autograd.grad with create_graph=True), in float64 on a tiny network, following the
authors' formulas: mask softmax as M*exp(y)/sum(M*exp(y)), focal loss on probabilities.

    scripts/make_fixtures.py              # rewrites crates/maxl-train/tests/fixtures/meta_step.safetensors
    scripts/make_fixtures.py --out PATH   # writes elsewhere (to compare with the committed file)

Run with the project venv's Python (scripts/setup.sh installs torch and safetensors there).
"""
import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import maxl_reference as mr  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "maxl-train", "tests", "fixtures", "meta_step.safetensors")

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help="where to write the safetensors file")
    a = ap.parse_args()
    out = build()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(out, a.out, metadata={"producer": "scripts/make_fixtures.py", "torch": torch.__version__})
    print(f"wrote {os.path.normpath(a.out)} ({len(out)} tensors)", file=sys.stderr)


if __name__ == "__main__":
    main()
