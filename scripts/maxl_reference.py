"""A plain-PyTorch reference implementation of MAXL's networks, losses and meta-gradient.

Functional: parameters and batch-norm buffers live in dicts name -> tensor, named as in
maxl-train's safetensors files (`backbone.{i}.conv.weight`, `primary_head.0.weight`, ...), so one
implementation serves the fixture writer (scripts/make_fixtures.py: float64, a tiny network) and
the Python side of the training benchmark (scripts/bench_train.py: float32, the `small` preset).

* backbone: per layer conv3x3 (padding 1) -> batch norm -> ReLU -> optional 2x2 max-pool, batch
  norm in one of three modes: "update" (batch statistics, running statistics updated in place),
  "batch" (batch statistics, buffers untouched and not needed), "running" (running statistics);
* heads: Linear -> ReLU -> Linear on the flattened features;
* label generator: own backbone and head, mask softmax over the slots of each sample's primary
  class, in the authors' form m*exp(l)/sum(m*exp(l)) (or, with stable=True, as maxl-train
  computes it: softmax(where(m, l, -1e9)) * m);
* focal loss -sum_i t_i (1 - p_i)^gamma log p_i, averaged over the batch (log p = log(softmax)
  as the authors write it, or log_softmax with stable=True);
* the meta-gradient dL2/dtheta2 by double backward through theta1+ = theta1 - alpha G, or without a
  second-order graph by one forward-mode JVP (L1 is linear in the generator's output t);
* `Schedule`: both networks with torch.optim.SGD stepped batch by batch by the `interleaved` or
  the `fused` schedule (the fixture of two iterations of each).

    import maxl_reference as mr
    m = mr.Maxl.small()                  # or mr.Maxl(layers, (C, H, W), hidden, psi, dtype, device, gamma)
    f, g = m.init_default(m.f_specs()), m.init_default(m.g_specs())
    grads, loss = m.meta_gradient(x, y, f, g, alpha=0.01, lam=0.2, mode="jvp")
"""
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

BN_MOMENTUM, BN_EPS = 0.1, 1e-5
MASK_FILL = -1e9            # disallowed logits under stable=True
REGULARISER_FLOOR = 1e-30   # floor inside R's log (only reached by slots with batch mean 0)
MODES = ("double-backward", "jvp")


def is_buffer(name):
    return "running" in name


def trainable(t):
    return {n: v for n, v in t.items() if not is_buffer(n)}


def buffers(t):
    return {n: v for n, v in t.items() if is_buffer(n)}


def leaves(t):
    """Fresh leaf copies of the trainable tensors of `t`, requiring grad."""
    return {n: v.detach().clone().requires_grad_(True) for n, v in trainable(t).items()}


def grad(loss, params, create_graph=False):
    """d loss / d params as a dict (zeros for parameters the loss does not reach)."""
    names = list(params)
    gs = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, gs)}


class Maxl:
    """One architecture and hierarchy: layers [(in, out, pool_after)], input (C, H, W), the heads'
    hidden width, psi (auxiliary slots per primary class), dtype, device, focal gamma."""

    def __init__(self, layers, chw, hidden, psi, dtype=torch.float64, device="cpu", gamma=2.0, stable=False):
        self.layers = [tuple(l) for l in layers]
        self.chw, self.hidden, self.psi = tuple(chw), hidden, list(psi)
        self.dtype, self.device, self.gamma, self.stable = dtype, torch.device(device), gamma, stable
        self.K, self.A = len(self.psi), sum(self.psi)
        _, h, w = self.chw
        for *_, pool in self.layers:
            if pool:
                h, w = h // 2, w // 2
        self.feat = self.layers[-1][1] * h * w
        self.mask = torch.zeros(self.K, self.A, dtype=dtype, device=self.device)
        o = 0
        for k, n in enumerate(self.psi):
            self.mask[k, o:o + n] = 1
            o += n

    @classmethod
    def small(cls, classes=10, psi_per_class=5, dtype=torch.float32, device="cpu", gamma=2.0):
        """maxl-train's `small` preset: 1x28x28, conv(1->16)+pool, conv(16->32)+pool, heads
        1568 -> 128 -> out; computed as maxl-train does (stable=True)."""
        return cls([(1, 16, True), (16, 32, True)], (1, 28, 28), 128, [psi_per_class] * classes,
                   dtype, device, gamma, stable=True)

    # ---- parameter specs and initialisation ----------------------------------------------------

    def backbone_specs(self):
        out = []
        for i, (cin, cout, _) in enumerate(self.layers):
            p = f"backbone.{i}"
            out += [(f"{p}.conv.weight", (cout, cin, 3, 3)), (f"{p}.conv.bias", (cout,)),
                    (f"{p}.bn.weight", (cout,)), (f"{p}.bn.bias", (cout,)),
                    (f"{p}.bn.running_mean", (cout,)), (f"{p}.bn.running_var", (cout,))]
        return out

    def head_specs(self, head, out_dim):
        return [(f"{head}.0.weight", (self.hidden, self.feat)), (f"{head}.0.bias", (self.hidden,)),
                (f"{head}.2.weight", (out_dim, self.hidden)), (f"{head}.2.bias", (out_dim,))]

    def f_specs(self, aux=True):
        """The multi-task network (primary head, and the auxiliary head unless aux=False)."""
        aux_head = self.head_specs("aux_head", self.A) if aux else []
        return self.backbone_specs() + self.head_specs("primary_head", self.K) + aux_head

    def g_specs(self):
        """The label generator."""
        return self.backbone_specs() + self.head_specs("head", self.A)

    def init_random(self, specs):
        """Random values everywhere (buffers and biases too), drawn in spec order from the
        global generator: what the meta-gradient fixture uses."""
        kw = dict(dtype=self.dtype, device=self.device)
        t = {}
        for n, shape in specs:
            if n.endswith("running_var"):
                t[n] = torch.rand(shape, **kw) + 0.5
            elif n.endswith("running_mean"):
                t[n] = 0.1 * torch.randn(shape, **kw)
            elif n.endswith("bn.weight"):
                t[n] = 1.0 + 0.1 * torch.randn(shape, **kw)
            elif len(shape) > 1:
                fan = shape[1] * (9 if len(shape) == 4 else 1)
                t[n] = torch.randn(shape, **kw) / fan ** 0.5
            else:
                t[n] = 0.1 * torch.randn(shape, **kw)
        return t

    def init_default(self, specs):
        """A training init as maxl-train's: Xavier-uniform weights, zero biases, BN gamma 1,
        beta 0, running mean 0, running variance 1."""
        kw = dict(dtype=self.dtype, device=self.device)
        t = {}
        for n, shape in specs:
            if n.endswith(("running_var", "bn.weight")):
                t[n] = torch.ones(shape, **kw)
            elif len(shape) > 1:
                t[n] = torch.nn.init.xavier_uniform_(torch.empty(shape, **kw))
            else:
                t[n] = torch.zeros(shape, **kw)
        return t

    # ---- networks --------------------------------------------------------------------------

    def features(self, x, P, bufs, bn):
        """Backbone features [N, feat]; bufs may be None for bn="batch"."""
        h = x
        for i, (_, _, pool) in enumerate(self.layers):
            p = f"backbone.{i}"
            h = F.conv2d(h, P[f"{p}.conv.weight"], P[f"{p}.conv.bias"], padding=1)
            w, b = P[f"{p}.bn.weight"], P[f"{p}.bn.bias"]
            if bn == "batch":
                h = F.batch_norm(h, None, None, w, b, True, BN_MOMENTUM, BN_EPS)
            else:
                rm, rv = bufs[f"{p}.bn.running_mean"], bufs[f"{p}.bn.running_var"]
                h = F.batch_norm(h, rm, rv, w, b, bn == "update", BN_MOMENTUM, BN_EPS)
            h = F.relu(h)
            if pool:
                h = F.max_pool2d(h, 2)
        return h.flatten(1)

    @staticmethod
    def head(feat, P, name):
        return F.linear(F.relu(F.linear(feat, P[f"{name}.0.weight"], P[f"{name}.0.bias"])),
                        P[f"{name}.2.weight"], P[f"{name}.2.bias"])

    def forward_f(self, x, P, bufs, bn, aux=True):
        """The multi-task network: (primary logits, auxiliary logits or None)."""
        feat = self.features(x, P, bufs, bn)
        return self.head(feat, P, "primary_head"), self.head(feat, P, "aux_head") if aux else None

    def generator(self, x, y, P, bufs, bn):
        """t = g(x, y) [N, A]: the mask softmax over the slots of each sample's class."""
        logits = self.head(self.features(x, P, bufs, bn), P, "head")
        m = self.mask[y]
        if self.stable:
            return F.softmax(logits.masked_fill(m == 0, MASK_FILL), 1) * m
        e = m * torch.exp(logits)          # the authors' formula
        return e / e.sum(1, keepdim=True)

    # ---- losses ----------------------------------------------------------------------------

    def onehot(self, y):
        return F.one_hot(y, self.K).to(self.dtype)

    def focal(self, logits, target):
        if self.stable:
            log_p = F.log_softmax(logits, 1)
            return -(target * (1 - log_p.exp()) ** self.gamma * log_p).sum(1).mean()
        p = F.softmax(logits, 1)
        return -(target * (1 - p) ** self.gamma * torch.log(p)).sum(1).mean()

    def slot_focal(self, logits):
        """Per-sample, per-slot focal terms c = -(1 - p)^gamma log p [N, A] (L_aux = mean_n sum_i t c)."""
        log_p = F.log_softmax(logits, 1)
        return -((1 - log_p.exp()) ** self.gamma * log_p)

    @staticmethod
    def regulariser(t):
        """R(t) = sum_k pbar_k log pbar_k, pbar the batch mean of the generator's output."""
        pbar = t.mean(0)
        return (pbar * pbar.clamp_min(REGULARISER_FLOOR).log()).sum()

    def l1(self, x, y, P, bufs, bn, target, aux=True):
        """L1 = focal(primary, onehot(y)) [+ focal(aux, target)]."""
        pri, aux_logits = self.forward_f(x, P, bufs, bn, aux)
        loss = self.focal(pri, self.onehot(y))
        return loss + self.focal(aux_logits, target) if aux else loss

    def primary_focal(self, x, y, P):
        """The primary focal loss with batch statistics (the stage-2 forward at theta1+)."""
        feat = self.features(x, P, None, "batch")
        return self.focal(self.head(feat, P, "primary_head"), self.onehot(y))

    # ---- the meta-gradient -------------------------------------------------------------------

    def slot_loss_jvp(self, x, P1, v):
        """<v, d c_ni / d theta1> [N, A] for every sample n and slot i: one forward-mode product
        at theta1 (batch statistics)."""
        with fwAD.dual_level():
            duals = {n: fwAD.make_dual(p.detach(), v[n].detach()) for n, p in P1.items()}
            _, aux = self.forward_f(x, duals, None, "batch")
            return fwAD.unpack_dual(self.slot_focal(aux)).tangent

    def meta_objective(self, x, y, P1, t, G, alpha, lam, mode):
        """A scalar whose gradient in theta2 (through t) is dL2/dtheta2, given
        G = dL1/dtheta1 at theta1: built with create_graph and t ("double-backward"; the scalar is
        L2 itself), or plain from L1 with t detached ("jvp"; a surrogate, linear in t)."""
        if mode == "double-backward":
            fast = {n: P1[n] - alpha * G[n] for n in P1}
            return self.primary_focal(x, y, fast) + lam * self.regulariser(t)
        assert mode == "jvp", mode
        with torch.no_grad():
            fast = {n: (P1[n] - alpha * G[n]).requires_grad_(True) for n in P1}
        v = grad(self.primary_focal(x, y, fast), fast)
        dot = self.slot_loss_jvp(x, P1, v)
        return (t * (dot * (-alpha / x.shape[0]))).sum() + lam * self.regulariser(t)

    def meta_gradient(self, x, y, f, g, alpha, lam, mode="double-backward"):
        """dL2/dtheta2 at f's theta1 and g's theta2 (both full dicts, left unchanged), batch
        statistics everywhere. Returns (grads dict, L2 for double-backward / surrogate for jvp)."""
        P1, P2 = leaves(f), leaves(g)
        t = self.generator(x, y, P2, None, "batch")
        if mode == "double-backward":
            G = grad(self.l1(x, y, P1, None, "batch", t), P1, create_graph=True)
        else:
            G = grad(self.l1(x, y, P1, None, "batch", t.detach()), P1)
        obj = self.meta_objective(x, y, P1, t, G, alpha, lam, mode)
        return grad(obj, P2), obj.item()


class Schedule:
    """Both networks with their torch.optim.SGD optimisers, stepped one batch at a time by the
    `interleaved` or the `fused` schedule (double backward through theta1+ = theta1 - alpha G,
    alpha = theta1's learning rate). f and g are full dicts (parameters and buffers); they are
    copied. Batch norm as maxl-train: each batch's stage-1 forwards of f and of g update the
    running statistics once, everything in the meta-gradient uses batch statistics.

        s = mr.Schedule(m, f, g, dict(lr=0.1, momentum=0.9, weight_decay=5e-4), dict(lr=0.05), lam=0.2)
        s.interleaved(x, y)      # or s.fused(x, y); then s.f(), s.g(), s.losses
    """

    def __init__(self, maxl, f, g, opt_f, opt_g, lam):
        self.m, self.lam = maxl, lam
        self.P1, self.P2 = leaves(f), leaves(g)
        self.B1 = {n: v.detach().clone() for n, v in buffers(f).items()}
        self.B2 = {n: v.detach().clone() for n, v in buffers(g).items()}
        self.opt_f = torch.optim.SGD(list(self.P1.values()), **opt_f)
        self.opt_g = torch.optim.SGD(list(self.P2.values()), **opt_g)
        self.losses = {}

    def f(self):
        """A copy of f's parameters and running statistics now."""
        return {n: v.detach().clone() for n, v in {**self.P1, **self.B1}.items()}

    def g(self):
        """A copy of g's parameters and running statistics now."""
        return {n: v.detach().clone() for n, v in {**self.P2, **self.B2}.items()}

    @staticmethod
    def _step(opt, params, grads):
        for n, p in params.items():
            p.grad = grads[n].detach().clone()
        opt.step()

    def _meta_loss(self, x, y, G, t):
        """L2 = primary focal loss at theta1+ = theta1 - alpha G (batch statistics) + lam R(t)."""
        alpha = self.opt_f.param_groups[0]["lr"]
        fast = {n: self.P1[n] - alpha * G[n] for n in self.P1}
        return self.m.primary_focal(x, y, fast) + self.lam * self.m.regulariser(t)

    def interleaved(self, x, y):
        """Stage 1 (one step of theta1 on L1, g's output a constant), then stage 2 on the same
        batch at the updated theta1 (one step of theta2 on dL2/dtheta2)."""
        m = self.m
        with torch.no_grad():
            t = m.generator(x, y, self.P2, self.B2, "update")
        l1 = m.l1(x, y, self.P1, self.B1, "update", t)
        self._step(self.opt_f, self.P1, grad(l1, self.P1))
        t = m.generator(x, y, self.P2, None, "batch")
        G = grad(m.l1(x, y, self.P1, None, "batch", t), self.P1, create_graph=True)
        l2 = self._meta_loss(x, y, G, t)
        self._step(self.opt_g, self.P2, grad(l2, self.P2))
        self.losses = {"l1": l1.item(), "l2": l2.item()}

    def fused(self, x, y):
        """One forward of f and g and one gradient G of L1 at theta1 serve both stages: the
        meta-gradient through theta1+ = theta1 - alpha G, then theta1 steps along the same G
        (theta1+ itself under plain SGD) and theta2 along dL2/dtheta2."""
        m = self.m
        t = m.generator(x, y, self.P2, self.B2, "update")
        l1 = m.l1(x, y, self.P1, self.B1, "update", t)
        G = grad(l1, self.P1, create_graph=True)
        l2 = self._meta_loss(x, y, G, t)
        grads2 = grad(l2, self.P2)
        self._step(self.opt_f, self.P1, G)
        self._step(self.opt_g, self.P2, grads2)
        self.losses = {"l1": l1.item(), "l2": l2.item()}
