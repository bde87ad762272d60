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
  computes it: softmax(where(m, l, -1e9)) * m); for `maxl-weighted` also a weight head
  (`weight_head.weight` [1, feat], `weight_head.bias` [1]) on the same backbone features giving
  each sample a weight w = 2 sigmoid(s) in (0, 2), and the auxiliary target u = w t;
* focal loss -sum_i t_i (1 - p_i)^gamma log p_i, averaged over the batch (log p = log(softmax)
  as the authors write it, or log_softmax with stable=True);
* stage 2's L2: the primary focal loss at theta1+ = theta1 - alpha G plus lam R(t) (anti-collapse),
  mu Hbar(t) (mean per-image entropy) and, weighted, nu (mean_n w_n - 1)^2;
* the meta-gradient dL2/dtheta2 by double backward through theta1+, or without a second-order
  graph by one forward-mode JVP (L1 is linear in the auxiliary target u);
* `Schedule`: both networks with torch.optim.SGD stepped batch by batch by the `interleaved` or
  the `fused` schedule (the fixtures of two iterations of each, plain and weighted);
* `ResNet`: a torchvision-layout ResNet backbone (basic or bottleneck blocks, ImageNet or CIFAR
  stem, global average pooling) named and ordered as maxl-train's (`backbone.conv1.weight`,
  `backbone.layer2.0.downsample.1.running_var`, ...); `Maxl.preset` builds maxl-train's presets
  (`small`, `vgg16`, `resnet18`, `resnet34`, `resnet50`, `resnet18-cifar`) at any input size, with
  the label generator optionally its own network (a preset, or `PRESET-narrow`).

    import maxl_reference as mr
    m = mr.Maxl.small()                  # or mr.Maxl(layers, (C, H, W), hidden, psi, dtype, device, gamma)
    m = mr.Maxl.preset("resnet18", 10, 5, input_size=(64, 64), generator="resnet18-narrow")
    f, g = m.init_default(m.f_specs()), m.init_default(m.g_specs())
    grads, loss = m.meta_gradient(x, y, f, g, alpha=0.01, lam=0.2, mode="jvp")
    gw = m.init_default(m.g_specs(weighted=True))     # maxl-weighted: the generator with its weight head
    grads, loss = m.meta_gradient(x, y, f, gw, 0.01, 0.2, "jvp", mu=0.3, nu=0.5, weighted=True)
"""
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

BN_MOMENTUM, BN_EPS = 0.1, 1e-5
MASK_FILL = -1e9            # disallowed logits under stable=True
REGULARISER_FLOOR = 1e-30   # floor inside R's and Hbar's logs (reached by slots with probability 0)
WEIGHT_SCALE = 2.0          # w = WEIGHT_SCALE * sigmoid(s): in (0, 2), 1 at s = 0
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
    hidden width, psi (auxiliary slots per primary class), dtype, device, focal gamma. With
    `backbone` (a `ResNet`), that backbone instead of the VGG-style layers; with `gen` (another
    Maxl, its own backbone and hidden width), the label generator's network instead of f's."""

    def __init__(self, layers, chw, hidden, psi, dtype=torch.float64, device="cpu", gamma=2.0, stable=False,
                 backbone=None, gen=None):
        self.layers = [tuple(l) for l in layers]
        self.chw, self.hidden, self.psi = tuple(chw), hidden, list(psi)
        self.dtype, self.device, self.gamma, self.stable = dtype, torch.device(device), gamma, stable
        self.backbone, self.gen = backbone, gen
        self.K, self.A = len(self.psi), sum(self.psi)
        _, h, w = self.chw
        for *_, pool in self.layers:
            if pool:
                h, w = h // 2, w // 2
        self.feat = backbone.feat if backbone is not None else self.layers[-1][1] * h * w
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

    @classmethod
    def network(cls, name, psi, chw=None, dtype=torch.float32, device="cpu", gamma=2.0):
        """The network of maxl-train's preset `name` (at input `chw` when given, else the
        preset's), computed as maxl-train does (stable=True), without a separate generator.
        `PRESET-narrow` narrows a ResNet preset: every stage width and the heads' hidden width
        divided by 4 (resnet18-narrow: widths [16, 32, 64, 128], heads 128 wide)."""
        base = name[:-len(NARROW_SUFFIX)] if name.endswith(NARROW_SUFFIX) else name
        if base in VGG_PRESETS:
            if base != name:
                raise ValueError(f"`{name}`: only a ResNet preset can be narrowed")
            own_chw, blocks, hidden = VGG_PRESETS[base]
            chw = tuple(chw or own_chw)
            layers, cin = [], chw[0]
            for convs, cout in blocks:
                for i in range(convs):
                    layers.append((cin, cout, i == convs - 1))
                    cin = cout
            return cls(layers, chw, hidden, psi, dtype, device, gamma, stable=True)
        if base not in RESNET_PRESETS:
            known = ", ".join([*VGG_PRESETS, *RESNET_PRESETS])
            raise ValueError(f"unknown preset `{base}` (known: {known})")
        block, blocks, stem, side = RESNET_PRESETS[base]
        widths, hidden = [64, 128, 256, 512], 512
        if base != name:
            widths, hidden = [w // NARROW_DIVISOR for w in widths], hidden // NARROW_DIVISOR
        chw = tuple(chw or (3, side, side))
        net = ResNet(block, blocks, widths, stem, chw)
        return cls([], chw, hidden, psi, dtype, device, gamma, stable=True, backbone=net)

    @classmethod
    def preset(cls, name, classes=10, psi_per_class=5, input_size=None, generator=None, dtype=torch.float32,
               device="cpu", gamma=2.0):
        """maxl-train's preset `name` for `classes` primary classes with psi_per_class slots each,
        at input_size (H, W) when given, as maxl-train's bench builds it: f and the label
        generator from the same network, or the generator from preset `generator` (see
        `network`; `PRESET-narrow` too) at f's input."""
        psi = [psi_per_class] * classes
        m = cls.network(name, psi, None, dtype, device, gamma)
        if input_size is not None:
            m = cls.network(name, psi, (m.chw[0], *input_size), dtype, device, gamma)
        if generator is not None:
            m.gen = cls.network(generator, psi, m.chw, dtype, device, gamma)
        return m

    # ---- parameter specs and initialisation ----------------------------------------------------

    def backbone_specs(self):
        if self.backbone is not None:
            return self.backbone.specs()
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

    def g_specs(self, weighted=False):
        """The label generator; weighted=True appends the weight head (after the label head: a
        linear map of the same backbone features to one score per sample)."""
        net = self if self.gen is None else self.gen
        weight_head = [("weight_head.weight", (1, net.feat)), ("weight_head.bias", (1,))] if weighted else []
        return net.backbone_specs() + net.head_specs("head", self.A) + weight_head

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
        beta 0, running mean 0, running variance 1; convolutions without a bias (ResNet's)
        Kaiming-normal (fan-out, ReLU) as torchvision's."""
        kw = dict(dtype=self.dtype, device=self.device)
        names = {n for n, _ in specs}
        t = {}
        for n, shape in specs:
            if n.endswith("running_var") or (n.endswith(".weight") and len(shape) == 1):
                t[n] = torch.ones(shape, **kw)
            elif len(shape) == 4 and n[:-len("weight")] + "bias" not in names:
                t[n] = torch.nn.init.kaiming_normal_(torch.empty(shape, **kw), mode="fan_out",
                                                     nonlinearity="relu")
            elif len(shape) > 1:
                t[n] = torch.nn.init.xavier_uniform_(torch.empty(shape, **kw))
            else:
                t[n] = torch.zeros(shape, **kw)
        return t

    # ---- networks --------------------------------------------------------------------------

    def features(self, x, P, bufs, bn):
        """Backbone features [N, feat]; bufs may be None for bn="batch"."""
        if self.backbone is not None:
            return self.backbone.features(x, P, bufs, bn)
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
        net = self if self.gen is None else self.gen
        return self.mask_softmax(net.head(net.features(x, P, bufs, bn), P, "head"), y)

    def weighted_generator(self, x, y, P, bufs, bn):
        """(t [N, A], w [N]) from one backbone forward (so one running-statistics update under
        bn="update"): t as `generator`, w = 2 sigmoid(weight_head(features)) the per-sample
        weight of the auxiliary loss."""
        net = self if self.gen is None else self.gen
        feat = net.features(x, P, bufs, bn)
        s = F.linear(feat, P["weight_head.weight"], P["weight_head.bias"])
        return self.mask_softmax(net.head(feat, P, "head"), y), WEIGHT_SCALE * torch.sigmoid(s).squeeze(1)

    def aux_target(self, x, y, P, bufs, bn, weighted=False):
        """(t, w, u): the generator's output, the per-sample weights (None unweighted) and the
        auxiliary target u = w[:, None] t of L1 (t itself unweighted). The focal loss is linear
        in its target, so focal(aux, u) = mean_n w_n L_aux,n."""
        if not weighted:
            t = self.generator(x, y, P, bufs, bn)
            return t, None, t
        t, w = self.weighted_generator(x, y, P, bufs, bn)
        return t, w, w[:, None] * t

    def mask_softmax(self, logits, y):
        """The softmax of the generator's logits over the slots of each sample's class."""
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

    @staticmethod
    def sample_entropy(t):
        """Hbar(t) = -mean_n sum_i t_ni log t_ni, the mean per-image entropy in nats (the floor
        keeps the masked-out slots, t = 0, at 0 and their gradient finite)."""
        return -(t * t.clamp_min(REGULARISER_FLOOR).log()).sum(1).mean()

    @staticmethod
    def weight_penalty(w):
        """(mean_n w_n - 1)^2: keeps the weights' batch mean near 1, so the weight head rescales
        the auxiliary loss between samples rather than overall."""
        return (w.mean() - 1) ** 2

    def regularisers(self, t, lam, mu=0.0, w=None, nu=0.0):
        """Stage 2's terms on g's outputs: lam R(t) [+ mu Hbar(t)] [+ nu (mean w - 1)^2]. A term
        with weight 0 is left out, so mu = nu = 0 gives the unweighted L2 and its gradient bit for
        bit (the fixtures written before these terms stay as they are)."""
        reg = lam * self.regulariser(t)
        if mu != 0:
            reg = reg + mu * self.sample_entropy(t)
        if w is not None and nu != 0:
            reg = reg + nu * self.weight_penalty(w)
        return reg

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

    def meta_objective(self, x, y, P1, t, G, alpha, lam, mode, mu=0.0, w=None, nu=0.0):
        """A scalar whose gradient in theta2 (through t, and w when weighted) is dL2/dtheta2,
        given G = dL1/dtheta1 at theta1 with L1's auxiliary target u = w t (t unweighted, w None):
        built with create_graph and u ("double-backward"; the scalar is L2 itself), or plain from
        L1 with u detached ("jvp"; a surrogate, linear in u: dG/du_ni = (1/N) dc_ni/dtheta1, so
        dL2/du_ni = -alpha/N <v, dc_ni/dtheta1> with v the primary loss's gradient at theta1+)."""
        if mode == "double-backward":
            fast = {n: P1[n] - alpha * G[n] for n in P1}
            return self.primary_focal(x, y, fast) + self.regularisers(t, lam, mu, w, nu)
        assert mode == "jvp", mode
        with torch.no_grad():
            fast = {n: (P1[n] - alpha * G[n]).requires_grad_(True) for n in P1}
        v = grad(self.primary_focal(x, y, fast), fast)
        dot = self.slot_loss_jvp(x, P1, v)
        u = t if w is None else w[:, None] * t
        return (u * (dot * (-alpha / x.shape[0]))).sum() + self.regularisers(t, lam, mu, w, nu)

    def meta_gradient(self, x, y, f, g, alpha, lam, mode="double-backward", mu=0.0, nu=0.0, weighted=False):
        """dL2/dtheta2 at f's theta1 and g's theta2 (both full dicts, left unchanged; g with the
        weight head when weighted), batch statistics everywhere. Returns (grads dict, L2 for
        double-backward / surrogate for jvp)."""
        P1, P2 = leaves(f), leaves(g)
        t, w, u = self.aux_target(x, y, P2, None, "batch", weighted)
        if mode == "double-backward":
            G = grad(self.l1(x, y, P1, None, "batch", u), P1, create_graph=True)
        else:
            G = grad(self.l1(x, y, P1, None, "batch", u.detach()), P1)
        obj = self.meta_objective(x, y, P1, t, G, alpha, lam, mode, mu, w, nu)
        return grad(obj, P2), obj.item()


class Schedule:
    """Both networks with their torch.optim.SGD optimisers, stepped one batch at a time by the
    `interleaved` or the `fused` schedule (double backward through theta1+ = theta1 - alpha G,
    alpha = theta1's learning rate). f and g are full dicts (parameters and buffers); they are
    copied. Batch norm as maxl-train: each batch's stage-1 forwards of f and of g update the
    running statistics once, everything in the meta-gradient uses batch statistics. With
    weighted=True (`maxl-weighted`; g with its weight head) L1's auxiliary target is u = w t, and
    stage 1's one forward of g gives both t and w (the weight head has no statistics of its own);
    mu and nu weigh stage 2's entropy and weight terms (see `Maxl.regularisers`).

        s = mr.Schedule(m, f, g, dict(lr=0.1, momentum=0.9, weight_decay=5e-4), dict(lr=0.05), lam=0.2)
        s.interleaved(x, y)      # or s.fused(x, y); then s.f(), s.g(), s.losses
    """

    def __init__(self, maxl, f, g, opt_f, opt_g, lam, mu=0.0, nu=0.0, weighted=False):
        self.m, self.lam, self.mu, self.nu, self.weighted = maxl, lam, mu, nu, weighted
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

    def _meta_loss(self, x, y, G, t, w):
        """L2 = primary focal loss at theta1+ = theta1 - alpha G (batch statistics) + lam R(t)
        [+ mu Hbar(t)] [+ nu (mean w - 1)^2]."""
        alpha = self.opt_f.param_groups[0]["lr"]
        fast = {n: self.P1[n] - alpha * G[n] for n in self.P1}
        return self.m.primary_focal(x, y, fast) + self.m.regularisers(t, self.lam, self.mu, w, self.nu)

    def interleaved(self, x, y):
        """Stage 1 (one step of theta1 on L1, g's output a constant), then stage 2 on the same
        batch at the updated theta1 (one step of theta2 on dL2/dtheta2)."""
        m = self.m
        with torch.no_grad():
            _, _, u = m.aux_target(x, y, self.P2, self.B2, "update", self.weighted)
        l1 = m.l1(x, y, self.P1, self.B1, "update", u)
        self._step(self.opt_f, self.P1, grad(l1, self.P1))
        t, w, u = m.aux_target(x, y, self.P2, None, "batch", self.weighted)
        G = grad(m.l1(x, y, self.P1, None, "batch", u), self.P1, create_graph=True)
        l2 = self._meta_loss(x, y, G, t, w)
        self._step(self.opt_g, self.P2, grad(l2, self.P2))
        self.losses = {"l1": l1.item(), "l2": l2.item()}

    def fused(self, x, y):
        """One forward of f and g and one gradient G of L1 at theta1 serve both stages: the
        meta-gradient through theta1+ = theta1 - alpha G, then theta1 steps along the same G
        (theta1+ itself under plain SGD) and theta2 along dL2/dtheta2."""
        m = self.m
        t, w, u = m.aux_target(x, y, self.P2, self.B2, "update", self.weighted)
        l1 = m.l1(x, y, self.P1, self.B1, "update", u)
        G = grad(l1, self.P1, create_graph=True)
        l2 = self._meta_loss(x, y, G, t, w)
        grads2 = grad(l2, self.P2)
        self._step(self.opt_f, self.P1, G)
        self._step(self.opt_g, self.P2, grads2)
        self.losses = {"l1": l1.item(), "l2": l2.item()}


# ---- ResNet backbones ---------------------------------------------------------------------------

NARROW_SUFFIX, NARROW_DIVISOR = "-narrow", 4
# name -> (input (C, H, W), blocks [(convs, channels)], heads' hidden width): a 2x2 max-pool
# after every block, features flattened.
VGG_PRESETS = {
    "small": ((1, 28, 28), [(1, 16), (1, 32)], 128),
    "vgg16": ((3, 32, 32), [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], 512),
}
# name -> (block, blocks per stage, stem, default input side); widths 64, 128, 256, 512.
RESNET_PRESETS = {
    "resnet18": ("basic", [2, 2, 2, 2], "imagenet", 224),
    "resnet34": ("basic", [3, 4, 6, 3], "imagenet", 224),
    "resnet50": ("bottleneck", [3, 4, 6, 3], "imagenet", 224),
    "resnet18-cifar": ("basic", [2, 2, 2, 2], "cifar", 32),
}


def batch_norm(h, P, bufs, name, bn):
    """Batch norm `name` ({name}.weight, .bias; .running_mean, .running_var in bufs) in mode bn
    ("update", "batch" or "running", as `Maxl.features`)."""
    w, b = P[f"{name}.weight"], P[f"{name}.bias"]
    if bn == "batch":
        return F.batch_norm(h, None, None, w, b, True, BN_MOMENTUM, BN_EPS)
    rm, rv = bufs[f"{name}.running_mean"], bufs[f"{name}.running_var"]
    return F.batch_norm(h, rm, rv, w, b, bn == "update", BN_MOMENTUM, BN_EPS)


class ResNet:
    """A torchvision-layout ResNet backbone, functional, as maxl-train lowers it: stem
    conv1/bn1/ReLU (7x7 stride 2 and a 3x3 stride-2 max-pool for "imagenet", 3x3 stride 1 without
    pool for "cifar"), stages layer1.. of "basic" (conv1/bn1, conv2/bn2) or "bottleneck" (conv1/bn1,
    conv2/bn2 strided, conv3/bn3; expansion 4) blocks with downsample.0/.1 where the shape
    changes, ReLU after each sum, global average pooling. Convolutions have no bias; padding
    kernel // 2. Tensors are named `backbone.<torchvision name>`, in maxl-train's order (each
    block's main path, then its downsample)."""

    def __init__(self, block, layers, widths, stem, chw, stem_width=None):
        assert block in ("basic", "bottleneck") and stem in ("imagenet", "cifar"), (block, stem)
        self.block, self.layers, self.widths, self.stem = block, list(layers), list(widths), stem
        self.chw, self.stem_width = tuple(chw), stem_width or widths[0]
        self.expansion = 4 if block == "bottleneck" else 1
        self.feat = self.widths[-1] * self.expansion
        # [(prefix, [(conv, cin, cout, kernel, stride, bn)] main path, [same] shortcut)]
        self.plan, cin = [], self.stem_width
        for s, (n, width) in enumerate(zip(self.layers, self.widths)):
            for b in range(n):
                stride, p, cout = 2 if b == 0 and s > 0 else 1, f"backbone.layer{s + 1}.{b}", width * self.expansion
                if block == "basic":
                    body = [("conv1", cin, width, 3, stride, "bn1"), ("conv2", width, width, 3, 1, "bn2")]
                else:
                    body = [("conv1", cin, width, 1, 1, "bn1"), ("conv2", width, width, 3, stride, "bn2"),
                            ("conv3", width, cout, 1, 1, "bn3")]
                short = [("downsample.0", cin, cout, 1, stride, "downsample.1")] if stride != 1 or cin != cout else []
                self.plan.append((p, body, short))
                cin = cout

    def _stem_conv(self):
        k, s = (7, 2) if self.stem == "imagenet" else (3, 1)
        return ("conv1", self.chw[0], self.stem_width, k, s, "bn1")

    @staticmethod
    def _conv_specs(prefix, convs):
        out = []
        for conv, cin, cout, k, _, bn in convs:
            out.append((f"{prefix}.{conv}.weight", (cout, cin, k, k)))
            out += [(f"{prefix}.{bn}.{t}", (cout,)) for t in ("weight", "bias", "running_mean", "running_var")]
        return out

    def specs(self):
        """[(name, shape)] of every parameter and buffer, in maxl-train's order."""
        out = self._conv_specs("backbone", [self._stem_conv()])
        for p, body, short in self.plan:
            out += self._conv_specs(p, body) + self._conv_specs(p, short)
        return out

    @staticmethod
    def _path(h, prefix, convs, P, bufs, bn):
        """conv -> batch norm (-> ReLU between convs, not after the last)."""
        for i, (conv, _, _, k, s, b) in enumerate(convs):
            h = F.conv2d(h, P[f"{prefix}.{conv}.weight"], None, stride=s, padding=k // 2)
            h = batch_norm(h, P, bufs, f"{prefix}.{b}", bn)
            if i < len(convs) - 1:
                h = F.relu(h)
        return h

    def features(self, x, P, bufs, bn):
        """Features [N, feat] (global average pool); bufs may be None for bn="batch"."""
        h = F.relu(self._path(x, "backbone", [self._stem_conv()], P, bufs, bn))
        if self.stem == "imagenet":
            h = F.max_pool2d(h, 3, 2, 1)
        for p, body, short in self.plan:
            main = self._path(h, p, body, P, bufs, bn)
            h = F.relu(main + (self._path(h, p, short, P, bufs, bn) if short else h))
        return h.mean((2, 3))


def from_torchvision(state_dict):
    """A torchvision ResNet's state dict as maxl-train names its backbone (`backbone.` + name;
    the classifier fc.* and num_batches_tracked dropped)."""
    return {f"backbone.{n}": v for n, v in state_dict.items()
            if not n.startswith("fc.") and not n.endswith("num_batches_tracked")}
