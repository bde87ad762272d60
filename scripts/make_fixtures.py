#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures for maxl-train's meta-gradient and schedule tests.

MAXL iterations in plain PyTorch (scripts/maxl_reference.py: torch.nn.functional,
torch.autograd.grad with create_graph=True, torch.optim.SGD for the schedules), in float64 on a
tiny network, following the authors' formulas: mask softmax as M*exp(y)/sum(M*exp(y)), focal
loss on probabilities.

* meta_step.safetensors: the meta-gradient at lambda 0 and 0.2, and one stage 1 then stage 2;
* schedule_step.safetensors: two iterations of the `interleaved` and of the `fused` schedule
  (the weights, running statistics and losses after each);
* weighted_step.safetensors: `maxl-weighted` (g with a weight head, L1's auxiliary target w t,
  stage 2 with the per-image entropy and weight terms): its meta-gradient for (lambda, mu, nu) =
  (0.2, 0, 0) ("plain") and (0.2, 0.3, 0.5) ("mi"), checked here jvp against double backward and
  by a finite difference, and two iterations of each schedule from other initial weights.

    scripts/make_fixtures.py              # rewrites the three files in crates/maxl-train/tests/fixtures/
    scripts/make_fixtures.py --out PATH --schedule-out PATH2 --weighted-out PATH3   # elsewhere (to compare)

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
WEIGHTED_OUT = os.path.join(FIXTURES, "weighted_step.safetensors")

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

# The weighted fixture: tag -> (lambda, mu, nu) of its meta-gradient cases. "plain" leaves out the
# entropy and weight terms, so the weight head's gradient comes through L1's target alone; "mi"
# has both (lambda R + mu Hbar: the mutual-information form of the regulariser).
WEIGHTED_CASES = {"plain": (0.2, 0.0, 0.0), "mi": (0.2, 0.3, 0.5)}
WEIGHTED_SCHEDULE = (0.2, 0.3, 0.5)   # (lambda, mu, nu) of its schedule iterations
JVP_TOLERANCE = 1e-10                 # jvp vs double backward: max abs difference / max abs
FD_STEP, FD_TOLERANCE = 1e-6, 1e-6    # central difference on weight_head.bias: step, relative error


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
    schedule_iterations(out, m, f0, g0, batches, SCHEDULE_LAMBDA)
    return {k: v.contiguous() for k, v in out.items()}


def schedule_iterations(out, m, f0, g0, batches, lam, **weighting):
    """Two iterations of each schedule from (f0, g0) on `batches` into `out`: the optimisers,
    `<schedule>.opt_f.<k>` / `.opt_g.<k>`, and after each iteration `<schedule>.<i>.f.<name>`,
    `<schedule>.<i>.g.<name>` (parameters and running statistics), `<schedule>.<i>.l1`, `.l2`."""
    dt = m.dtype
    for schedule, (opt_f, opt_g) in SCHEDULE_OPT.items():
        s = mr.Schedule(m, f0, g0, opt_f, opt_g, lam, **weighting)
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


def build_weighted():
    """The `maxl-weighted` fixture. Meta-gradient part: `f.<name>`, `g.<name>` (the weight head
    drawn at random too, so the weights are not all 1), `x`, `y`, `alpha`, and per case of
    WEIGHTED_CASES `<tag>.lambda` / `.mu` / `.nu`, `expected.<tag>.grad.<name>` (every trainable
    tensor of g) and `expected.<tag>.loss` (L2). Schedule part, from its own initial weights
    `sched.f.<name>` / `sched.g.<name>` (drawn after the first part's, so independent of them):
    `sched.lambda` / `.mu` / `.nu`, the batches `x1`, `y1`, `x2`, `y2`, and the keys of
    `schedule_iterations`."""
    torch.manual_seed(2468)
    dt = torch.float64
    m = mr.Maxl(LAYERS, (C, H, W), HIDDEN, PSI, dtype=dt, gamma=GAMMA)
    f0, g0 = m.init_random(m.f_specs()), m.init_random(m.g_specs(weighted=True))
    x = torch.randn(N, C, H, W, dtype=dt)
    y = torch.tensor([0, 1, 2, 0, 2, 1], dtype=torch.int64)

    out = {f"f.{n}": v for n, v in f0.items()}
    out.update({f"g.{n}": v for n, v in g0.items()})
    out["x"], out["y"] = x, y
    out["alpha"] = torch.tensor([ALPHA], dtype=dt)
    for tag, (lam, mu, nu) in WEIGHTED_CASES.items():
        for k, v in [("lambda", lam), ("mu", mu), ("nu", nu)]:
            out[f"{tag}.{k}"] = torch.tensor([v], dtype=dt)
        weighting = dict(mu=mu, nu=nu, weighted=True)
        grads, loss = m.meta_gradient(x, y, f0, g0, ALPHA, lam, "double-backward", **weighting)
        # The two modes share nothing past the generator's forward: agreement checks the jvp
        # surrogate's weighted target (u = w t) against the exact second-order gradient.
        jvp, _ = m.meta_gradient(x, y, f0, g0, ALPHA, lam, "jvp", **weighting)
        diff = max((grads[n] - jvp[n]).abs().max().item() for n in grads)
        scale = max(g.abs().max().item() for g in grads.values())
        print(f"weighted {tag}: jvp vs double backward max |diff| {diff:.3e} (max |grad| {scale:.3e}, "
              f"relative {diff / scale:.3e})", file=sys.stderr)
        assert diff <= JVP_TOLERANCE * scale, (tag, diff, scale)
        out[f"expected.{tag}.loss"] = torch.tensor([loss], dtype=dt)
        for n, g in grads.items():
            out[f"expected.{tag}.grad.{n}"] = g.detach()
        if tag == "mi":
            check_finite_difference(m, x, y, f0, g0, lam, weighting, grads)

    # Schedule part: a fresh network and its own draws, in build_schedules' order (f, g, batches).
    m = mr.Maxl(LAYERS, (C, H, W), HIDDEN, PSI, dtype=dt, gamma=GAMMA)
    f0, g0 = m.init_random(m.f_specs()), m.init_random(m.g_specs(weighted=True))
    batches = [(torch.randn(N, C, H, W, dtype=dt), torch.tensor(y, dtype=torch.int64))
               for y in ([0, 1, 2, 0, 2, 1], [2, 2, 0, 1, 0, 1])]
    out.update({f"sched.f.{n}": v for n, v in f0.items()})
    out.update({f"sched.g.{n}": v for n, v in g0.items()})
    lam, mu, nu = WEIGHTED_SCHEDULE
    for k, v in [("lambda", lam), ("mu", mu), ("nu", nu)]:
        out[f"sched.{k}"] = torch.tensor([v], dtype=dt)
    for i, (x, y) in enumerate(batches, 1):
        out[f"x{i}"], out[f"y{i}"] = x, y
    schedule_iterations(out, m, f0, g0, batches, lam, mu=mu, nu=nu, weighted=True)
    return {k: v.contiguous() for k, v in out.items()}


def check_finite_difference(m, x, y, f0, g0, lam, weighting, grads):
    """A central difference of L2 in weight_head.bias (theta1 fixed) against the analytic
    meta-gradient: an independent check of the weight head's path (through u into G, and the
    nu term), which jvp and double backward share."""
    name = "weight_head.bias"
    value = {}
    for sign in (1, -1):
        g = {**g0, name: g0[name] + sign * FD_STEP}
        _, value[sign] = m.meta_gradient(x, y, f0, g, ALPHA, lam, "double-backward", **weighting)
    fd = (value[1] - value[-1]) / (2 * FD_STEP)
    analytic = grads[name].item()
    rel = abs(fd - analytic) / abs(analytic)
    print(f"weighted mi: d L2 / d {name} finite difference {fd:.12e}, analytic {analytic:.12e}, "
          f"relative error {rel:.3e}", file=sys.stderr)
    assert rel < FD_TOLERANCE, (fd, analytic, rel)


def save(out, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(out, path, metadata={"producer": "scripts/make_fixtures.py", "torch": torch.__version__})
    print(f"wrote {os.path.normpath(path)} ({len(out)} tensors)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT, help="where to write the meta-gradient fixture")
    ap.add_argument("--schedule-out", default=SCHEDULE_OUT, help="where to write the schedule fixture")
    ap.add_argument("--weighted-out", default=WEIGHTED_OUT, help="where to write the maxl-weighted fixture")
    a = ap.parse_args()
    save(build(), a.out)
    save(build_schedules(), a.schedule_out)
    save(build_weighted(), a.weighted_out)


if __name__ == "__main__":
    main()
