#!/usr/bin/env python3
"""Writes the PyTorch reference fixture for maxl-train's meta-gradient tests.

An independent implementation of one MAXL iteration in plain PyTorch (torch.nn.functional,
torch.autograd.grad with create_graph=True), in float64 on a tiny network, following the
authors' formulas: mask softmax as M*exp(y)/sum(M*exp(y)), focal loss on probabilities.

    scripts/make_fixtures.py            # rewrites crates/maxl-train/tests/fixtures/meta_step.safetensors

Run with the project venv's Python (scripts/setup.sh installs torch and safetensors there).
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "maxl-train", "tests", "fixtures", "meta_step.safetensors")

# The tiny architecture (mirrored by the Rust test): input 2x8x8, blocks (2 convs x 3 ch), (1 conv x 4 ch),
# heads 16 -> 5 -> out. K = 3 primary classes, psi = [2, 1, 3] -> A = 6 auxiliary slots.
C, H, W = 2, 8, 8
LAYERS = [(2, 3, False), (3, 3, True), (3, 4, True)]  # (in, out, pool after)
HIDDEN = 5
PSI = [2, 1, 3]
K, A = len(PSI), sum(PSI)
FEAT = 4 * (H // 4) * (W // 4)
N = 6
ALPHA, GAMMA = 0.1, 2.0
LR_F, MOM_F, WD_F = 0.1, 0.9, 5e-4   # stage-1 optimiser (one step)
LR_G, WD_G = 1e-3, 5e-4              # stage-2 optimiser (one step)

torch.manual_seed(1234)
dt = torch.float64


def backbone_names():
    out = []
    for i, (cin, cout, _) in enumerate(LAYERS):
        p = f"backbone.{i}"
        out += [(f"{p}.conv.weight", (cout, cin, 3, 3)), (f"{p}.conv.bias", (cout,)),
                (f"{p}.bn.weight", (cout,)), (f"{p}.bn.bias", (cout,)),
                (f"{p}.bn.running_mean", (cout,)), (f"{p}.bn.running_var", (cout,))]
    return out


def head_names(head, out_dim):
    return [(f"{head}.0.weight", (HIDDEN, FEAT)), (f"{head}.0.bias", (HIDDEN,)),
            (f"{head}.2.weight", (out_dim, HIDDEN)), (f"{head}.2.bias", (out_dim,))]


def init(names):
    t = {}
    for n, shape in names:
        if n.endswith("running_var"):
            t[n] = torch.rand(shape, dtype=dt) + 0.5
        elif n.endswith("running_mean"):
            t[n] = 0.1 * torch.randn(shape, dtype=dt)
        elif n.endswith("bn.weight"):
            t[n] = 1.0 + 0.1 * torch.randn(shape, dtype=dt)
        elif len(shape) > 1:
            fan = shape[1] * (9 if len(shape) == 4 else 1)
            t[n] = torch.randn(shape, dtype=dt) / fan ** 0.5
        else:
            t[n] = 0.1 * torch.randn(shape, dtype=dt)
    return t


F_NAMES = backbone_names() + head_names("primary_head", K) + head_names("aux_head", A)
G_NAMES = backbone_names() + head_names("head", A)
f0, g0 = init(F_NAMES), init(G_NAMES)
x = torch.randn(N, C, H, W, dtype=dt)
y = torch.tensor([0, 1, 2, 0, 2, 1], dtype=torch.int64)
mask = torch.zeros(K, A, dtype=dt)
o = 0
for k, n in enumerate(PSI):
    mask[k, o:o + n] = 1
    o += n


def trainable(t):
    return {n: v for n, v in t.items() if "running" not in n}


def features(P, bufs, bn):
    h = x
    for i, (_, _, pool) in enumerate(LAYERS):
        p = f"backbone.{i}"
        h = F.conv2d(h, P[f"{p}.conv.weight"], P[f"{p}.conv.bias"], padding=1)
        rm, rv = bufs[f"{p}.bn.running_mean"], bufs[f"{p}.bn.running_var"]
        if bn == "update":
            h = F.batch_norm(h, rm, rv, P[f"{p}.bn.weight"], P[f"{p}.bn.bias"], True, 0.1, 1e-5)
        elif bn == "batch":
            h = F.batch_norm(h, None, None, P[f"{p}.bn.weight"], P[f"{p}.bn.bias"], True, 0.1, 1e-5)
        else:
            h = F.batch_norm(h, rm, rv, P[f"{p}.bn.weight"], P[f"{p}.bn.bias"], False, 0.1, 1e-5)
        h = F.relu(h)
        if pool:
            h = F.max_pool2d(h, 2)
    return h.flatten(1)


def head(feat, P, name):
    return F.linear(F.relu(F.linear(feat, P[f"{name}.0.weight"], P[f"{name}.0.bias"])), P[f"{name}.2.weight"], P[f"{name}.2.bias"])


def generator(P, bufs, bn):
    logits = head(features(P, bufs, bn), P, "head")
    m = mask[y]
    e = m * torch.exp(logits)          # the authors' formula
    return e / e.sum(1, keepdim=True)


def focal(logits, target):
    p = F.softmax(logits, 1)
    return -(target * (1 - p) ** GAMMA * torch.log(p)).sum(1).mean()


def multitask(P, bufs, bn, target):
    feat = features(P, bufs, bn)
    return focal(head(feat, P, "primary_head"), F.one_hot(y, K).to(dt)) + focal(head(feat, P, "aux_head"), target)


def meta_gradient(lam):
    P1 = {n: v.clone().requires_grad_(True) for n, v in trainable(f0).items()}
    P2 = {n: v.clone().requires_grad_(True) for n, v in trainable(g0).items()}
    bufs_f = {n: v.clone() for n, v in f0.items() if "running" in n}
    bufs_g = {n: v.clone() for n, v in g0.items() if "running" in n}
    t = generator(P2, bufs_g, "batch")
    l1 = multitask(P1, bufs_f, "batch", t)
    names = list(P1)
    grads = torch.autograd.grad(l1, [P1[n] for n in names], create_graph=True)
    fast = {n: P1[n] - ALPHA * g for n, g in zip(names, grads)}
    pri = head(features(fast, bufs_f, "batch"), fast, "primary_head")
    pbar = t.mean(0)
    l2 = focal(pri, F.one_hot(y, K).to(dt)) + lam * (pbar * torch.log(pbar)).sum()
    gnames = list(P2)
    g2 = torch.autograd.grad(l2, [P2[n] for n in gnames])
    return dict(zip(gnames, g2)), l2.item()


out = {}
for n, v in f0.items():
    out[f"f.{n}"] = v
for n, v in g0.items():
    out[f"g.{n}"] = v
out["x"], out["y"] = x, y
out["alpha"] = torch.tensor([ALPHA], dtype=dt)
for lam, tag in [(0.0, "lambda0"), (0.2, "lambda0.2")]:
    grads, loss = meta_gradient(lam)
    out[f"expected.{tag}.loss"] = torch.tensor([loss], dtype=dt)
    for n, g in grads.items():
        out[f"expected.{tag}.grad.{n}"] = g.detach()

# Stage 1 (one SGD step of f with momentum and weight decay; running statistics of f and g
# updated once), then stage 2 (one SGD step of g on the lambda = 0.2 meta-gradient at the
# updated f).
bufs_f = {n: v.clone() for n, v in f0.items() if "running" in n}
bufs_g = {n: v.clone() for n, v in g0.items() if "running" in n}
P1 = {n: v.clone().requires_grad_(True) for n, v in trainable(f0).items()}
with torch.no_grad():
    t = generator(trainable(g0), bufs_g, "update")
l1 = multitask(P1, bufs_f, "update", t)
names = list(P1)
grads = torch.autograd.grad(l1, [P1[n] for n in names])
opt_f = {}
for n, g in zip(names, grads):
    d = g + WD_F * P1[n].detach()
    opt_f[n] = P1[n].detach() - LR_F * d      # first momentum step: buffer = d
for n, v in opt_f.items():
    out[f"expected.stage1.f.{n}"] = v
for n, v in bufs_f.items():
    out[f"expected.stage1.f.{n}"] = v
for n, v in bufs_g.items():
    out[f"expected.stage1.g.{n}"] = v
out["expected.stage1.loss"] = torch.tensor([l1.item()], dtype=dt)

f0 = {**opt_f, **bufs_f}
g0 = {**trainable(g0), **bufs_g}
grads, _ = meta_gradient(0.2)
for n, g in grads.items():
    out[f"expected.stage2.g.{n}"] = g0[n] - LR_G * (g + WD_G * g0[n])

out = {k: v.contiguous() for k, v in out.items()}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
save_file(out, OUT, metadata={"producer": "scripts/make_fixtures.py", "torch": torch.__version__})
print(f"wrote {os.path.normpath(OUT)} ({len(out)} tensors)", file=sys.stderr)
