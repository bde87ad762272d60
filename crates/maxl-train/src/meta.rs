//! One MAXL iteration: stage 1 updates the multi-task network θ1, stage 2 updates the label
//! generator θ2 with the exact second-order meta-gradient
//!
//! ```text
//! t   = g(x, y; θ2)                                   (differentiable in θ2)
//! L1  = focal(f_pri(x; θ1), onehot(y)) + focal(f_aux(x; θ1), t)
//! G   = ∂L1/∂θ1                                        (create_graph: G is a function of θ2)
//! θ1⁺ = θ1 − α G
//! L2  = focal(f_pri(x; θ1⁺), onehot(y)) + λ R(t) [+ μ mean_i H(t_i)]
//! ∇θ2 = ∂L2/∂θ2
//! ```
//!
//! `maxl-weighted`: g also outputs a weight w_i = 2·sigmoid(s_i) per image, and L1's auxiliary
//! target is u = w·t (row i scaled by w_i), so the auxiliary loss is mean_i w_i·L_aux,i. L1 stays
//! linear in u, and everything below holds with u in t's place; L2 may add ν(mean_i w_i − 1)².
//!
//! Batch norm: the stage-1 forwards (of f and of g) update running statistics once per batch;
//! everything in stage 2 normalises with batch statistics and leaves them untouched.
//!
//! Data-parallel (the `_dp` functions with a [`DataParallel`]): each rank holds a shard of the
//! global batch, and the step is the single-process algorithm on the global batch (batch norm
//! per shard). Reduced across ranks: G before θ1⁺ = θ1 − αG is formed; v̄ = ∇L_pri(θ1⁺) before
//! it is contracted with ∂G/∂θ2 (the jvp path contracts ⟨v̄, ∇c(θ1)⟩; the double-backward path
//! differentiates ⟨v̄, G_rank⟩ in θ2); the batch-mean prediction p̄ of the anti-collapse term
//! (R is not linear in it); and θ2's gradient.

use tch::{Kind, Tensor};

use maxl_core::config::{MetaGradientMode, OptimizerConfig};

use crate::TrainError;
use crate::dist::DataParallel;
use crate::forward_ad::DualLevel;
use crate::loss::{anti_collapse, anti_collapse_of_mean, focal_loss, mean_sample_entropy, one_hot};
use crate::net::{BatchNorm, GeneratorOutput, LabelGenerator, MultiTaskNet};
use crate::optim::{Sgd, defined_or_zero};

/// A batch: images x [N, C, H, W] and their primary labels y \[N\] (Int64), on one device.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    /// The images.
    pub x: &'a Tensor,
    /// The primary labels.
    pub y: &'a Tensor,
}

impl<'a> Batch<'a> {
    /// The batch of images `x` with labels `y`.
    pub fn new(x: &'a Tensor, y: &'a Tensor) -> Self {
        Self { x, y }
    }
}

/// The learning rates of one step: `f` for θ1 (and α, the inner step of the meta-gradient,
/// which follows θ1's schedule), `g` for θ2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearningRates {
    /// θ1's learning rate, and α.
    pub f: f64,
    /// θ2's learning rate.
    pub g: f64,
}

/// The label generator g(θ2) with the optimiser that steps it.
#[derive(Debug)]
pub struct Generator {
    /// g(θ2).
    pub net: LabelGenerator,
    /// The optimiser of θ2 (its momentum buffers are part of a checkpoint).
    pub opt: Sgd,
}

impl Generator {
    /// `net` with a fresh optimiser (no momentum buffers yet).
    pub fn new(net: LabelGenerator, config: OptimizerConfig) -> Self {
        let opt = Sgd::new(config, net.store.params.len());
        Self { net, opt }
    }

    /// One optimiser step of θ2 along `grads`.
    fn step(&mut self, grads: &[Tensor], lr: f64) {
        self.opt
            .step(&self.net.store.params, grads, lr, &self.net.store.lr_scales);
    }
}

/// Loss settings shared by both stages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// γ of the focal loss.
    pub gamma: f64,
    /// λ, weight of the anti-collapse term in stage 2.
    pub lambda: f64,
    /// μ, weight of the per-image entropy term mean_i H(t_i) in stage 2 (0: the paper's L2).
    pub sample_entropy: f64,
    /// ν, weight of (mean_i w_i − 1)² in stage 2 (`maxl-weighted`; 0: no penalty).
    pub weight_mean_penalty: f64,
}

impl LossConfig {
    /// Stage 2's regularisers of g's output (with its graph), given R(t): λR, plus
    /// μ·mean_i H(t_i) when μ > 0, plus ν(mean_i w_i − 1)² when ν > 0 and g outputs weights.
    fn regularise(&self, out: &GeneratorOutput, r: &Tensor) -> Tensor {
        let mut total = r * self.lambda;
        if self.sample_entropy != 0.0 {
            total += mean_sample_entropy(&out.labels) * self.sample_entropy;
        }
        if let (Some(w), true) = (&out.weights, self.weight_mean_penalty != 0.0) {
            total += weight_mean_penalty(&w.mean(w.kind())) * self.weight_mean_penalty;
        }
        total
    }
}

/// (w̄ − 1)² of a batch-mean weight w̄.
fn weight_mean_penalty(mean: &Tensor) -> Tensor {
    (mean - 1.0).square()
}

/// The multi-task loss and its parts.
pub struct MultiTaskLoss {
    /// L1: the primary term plus the auxiliary term.
    pub total: Tensor,
    /// The primary focal loss.
    pub primary: Tensor,
    /// The auxiliary focal loss; None without an auxiliary target.
    pub aux: Option<Tensor>,
}

/// L1 = focal(primary) + focal(aux, target) at the given parameters. Without `aux_target` (the
/// single-task baseline) only the primary term.
pub fn multitask_loss(
    f: &MultiTaskNet,
    params: &[Tensor],
    bn: BatchNorm,
    Batch { x, y }: Batch<'_>,
    aux_target: Option<&Tensor>,
    gamma: f64,
) -> MultiTaskLoss {
    let out = f.forward_with(x, params, bn, aux_target.is_some());
    losses_from_output(f, &out, y, aux_target, gamma)
}

/// L1 from an already computed forward.
pub fn losses_from_output(
    f: &MultiTaskNet,
    out: &crate::net::MultiTaskOutput,
    y: &Tensor,
    aux_target: Option<&Tensor>,
    gamma: f64,
) -> MultiTaskLoss {
    let kind = out.primary.kind();
    let primary = focal_loss(&out.primary, &one_hot(y, f.num_primary, kind), gamma);
    let aux = match (aux_target, &out.aux) {
        (Some(t), Some(a)) => Some(focal_loss(a, t, gamma)),
        _ => None,
    };
    let total = match &aux {
        Some(a) => &primary + a,
        None => primary.shallow_clone(),
    };
    MultiTaskLoss {
        total,
        primary,
        aux,
    }
}

/// The result of stage 2's meta-gradient computation. The losses are 0-dimensional tensors on
/// the training device (reading them is a device→host copy: the training loop sums them on the
/// device and reads once per epoch).
pub struct MetaGradient {
    /// ∂L2/∂θ2, one tensor per generator parameter.
    pub grads: Vec<Tensor>,
    /// L2 = primary loss at θ1⁺ + λ R (+ μ mean_i H(t_i) + ν (w̄ − 1)²).
    pub loss: Tensor,
    /// The primary focal loss at θ1⁺.
    pub primary_at_fast: Tensor,
    /// R(t), the anti-collapse term (before λ).
    pub regulariser: Tensor,
}

/// How stage 2 takes ∂L2/∂θ2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaPath {
    /// The exact second-order meta-gradient, by either computation.
    Exact(MetaGradientMode),
    /// G taken without create_graph: what a first-order implementation that forgets to build
    /// the graph of G computes (kept for the test that proves the difference).
    WithoutSecondOrder,
}

impl From<MetaGradientMode> for MetaPath {
    fn from(m: MetaGradientMode) -> Self {
        MetaPath::Exact(m)
    }
}

/// Stage 2's meta-gradient at the current θ1 and θ2 on the batch, with inner step α = `alpha`.
pub fn meta_gradient(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    batch: Batch<'_>,
    alpha: f64,
    losses: LossConfig,
    path: impl Into<MetaPath>,
) -> Result<MetaGradient, TrainError> {
    let out = g.outputs(batch.x, batch.y, BatchNorm::Batch);
    let u = out.target();
    let inner = InnerStep {
        out: &out,
        u: &u,
        alpha,
        losses,
    };
    meta_gradient_for(f, g, batch, inner, path.into(), None)
}

/// [`meta_gradient`] with g's output t = g(x, y; θ2) already computed (with its graph to θ2),
/// so an iteration that also needs t for stage 1 runs g's forward once.
fn meta_gradient_for(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    batch: Batch<'_>,
    inner: InnerStep<'_>,
    path: MetaPath,
    dp: Option<&DataParallel<'_>>,
) -> Result<MetaGradient, TrainError> {
    let (theta1, InnerStep { u: t, losses, .. }) = (&f.store.params, inner);
    match (path, dp) {
        (MetaPath::Exact(mode), Some(dp)) => {
            let detached = mode == MetaGradientMode::Jvp;
            let l1 = if detached {
                let out = f.forward_with(batch.x, theta1, BatchNorm::Batch, true);
                losses_from_output(f, &out, batch.y, Some(&t.detach()), losses.gamma)
            } else {
                multitask_loss(f, theta1, BatchNorm::Batch, batch, Some(t), losses.gamma)
            };
            let grad1 = gradient(&l1.total, theta1, !detached);
            let g_bar = dp.mean(&grad1)?;
            let for_fast = if dp.skip_g_reduce { &grad1 } else { &g_bar };
            by_ranks(f, g, batch, inner, (&grad1, for_fast), mode, dp)
        }
        (MetaPath::Exact(MetaGradientMode::Jvp), None) => {
            let out = f.forward_with(batch.x, theta1, BatchNorm::Batch, true);
            let l1 = losses_from_output(f, &out, batch.y, Some(&t.detach()), losses.gamma);
            let grad1 = gradient(&l1.total, theta1, false);
            by_jvp(f, g, batch, inner, &grad1)
        }
        (path, _) => {
            let l1 = multitask_loss(f, theta1, BatchNorm::Batch, batch, Some(t), losses.gamma);
            let create_graph = path == MetaPath::Exact(MetaGradientMode::DoubleBackward);
            let grad1 = gradient(&l1.total, theta1, create_graph);
            Ok(by_double_backward(f, g, batch, inner, &grad1))
        }
    }
}

/// What both computations of the meta-gradient share: g's output (with its graph to θ2), L1's
/// auxiliary target u (t, or w·t with weights), the inner step α of θ1⁺ = θ1 − αG, and the
/// losses.
#[derive(Clone, Copy)]
struct InnerStep<'a> {
    out: &'a GeneratorOutput,
    u: &'a Tensor,
    alpha: f64,
    losses: LossConfig,
}

/// ∂loss/∂params (zeros for parameters the loss does not reach).
fn gradient(loss: &Tensor, params: &[Tensor], create_graph: bool) -> Vec<Tensor> {
    defined_or_zero(
        Tensor::run_backward(&[loss], params, create_graph, create_graph),
        params,
    )
}

fn primary_focal(f: &MultiTaskNet, logits: &Tensor, y: &Tensor, gamma: f64) -> Tensor {
    focal_loss(logits, &one_hot(y, f.num_primary, logits.kind()), gamma)
}

/// The fast weights θ1⁺ = θ1 − αG at f's live θ1, each parameter's α scaled by its
/// learning-rate scale (the stage-1 update's own step).
fn fast_weights(f: &MultiTaskNet, grad1: &[Tensor], alpha: f64) -> Vec<Tensor> {
    f.store
        .params
        .iter()
        .zip(grad1)
        .zip(&f.store.lr_scales)
        .map(|((p, g), s)| p - g * (alpha * s))
        .collect()
}

/// The meta-gradient by a backward through θ1⁺ = θ1 − αG, with `grad1` = G built with
/// create_graph (G is then a function of θ2 through t).
fn by_double_backward(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    Batch { x, y }: Batch<'_>,
    InnerStep {
        out: g_out,
        alpha,
        losses,
        ..
    }: InnerStep<'_>,
    grad1: &[Tensor],
) -> MetaGradient {
    let fast = fast_weights(f, grad1, alpha);
    let out = f.forward_with(x, &fast, BatchNorm::Batch, false);
    let primary_at_fast = primary_focal(f, &out.primary, y, losses.gamma);
    let regulariser = anti_collapse(&g_out.labels);
    let l2 = &primary_at_fast + losses.regularise(g_out, &regulariser);
    let theta2 = &g.store.params;
    MetaGradient {
        grads: defined_or_zero(Tensor::run_backward(&[&l2], theta2, false, false), theta2),
        loss: l2.detach(),
        primary_at_fast: primary_at_fast.detach(),
        regulariser: regulariser.detach(),
    }
}

/// The same meta-gradient without a second-order graph. L1 is linear in its auxiliary target u
/// (t, or w·t): L1 = F_pri(θ1) + (1/N) Σ_n Σ_i u_ni c_ni(θ1), so with v = ∇F_pri(θ1⁺)
/// ∂L2/∂u_ni = −(α/N) ⟨v, ∇c_ni(θ1)⟩ (the regularisers add their own terms in t and w), and
/// ⟨v, ∇c_ni(θ1)⟩ for every n, i is one forward-mode product of θ1 ↦ C(θ1) along v (batch
/// statistics, as in L1); the chain rule through u = w·t reaches both heads. `grad1` = G is
/// plain (no graph); θ1 is read from f's live parameters.
fn by_jvp(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    Batch { x, y }: Batch<'_>,
    InnerStep {
        out: g_out,
        u,
        alpha,
        losses,
    }: InnerStep<'_>,
    grad1: &[Tensor],
) -> Result<MetaGradient, TrainError> {
    let fast: Vec<Tensor> = tch::no_grad(|| fast_weights(f, grad1, alpha))
        .into_iter()
        .map(|p| p.set_requires_grad(true))
        .collect();
    let out = f.forward_with(x, &fast, BatchNorm::Batch, false);
    let primary_at_fast = primary_focal(f, &out.primary, y, losses.gamma);
    let v = gradient(&primary_at_fast, &fast, false);
    // θ1⁺ = θ1 − α·s⊙G: the contraction is with s⊙v.
    let v: Vec<Tensor> = v
        .into_iter()
        .zip(&f.store.lr_scales)
        .map(|(v, &s)| if s == 1.0 { v } else { v * s })
        .collect();
    let regulariser = anti_collapse(&g_out.labels);
    let regularisers = losses.regularise(g_out, &regulariser);
    // A surrogate whose gradient in θ2 is ∂L2/∂θ2: u enters linearly with the weight above.
    let surrogate = slot_surrogate(f, x, u, &v, alpha, losses.gamma)? + &regularisers;
    let theta2 = &g.store.params;
    let grads = defined_or_zero(
        Tensor::run_backward(&[&surrogate], theta2, false, false),
        theta2,
    );
    let (primary_at_fast, regulariser) = (primary_at_fast.detach(), regulariser.detach());
    Ok(MetaGradient {
        grads,
        loss: &primary_at_fast + regularisers.detach(),
        primary_at_fast,
        regulariser,
    })
}

/// Σ_n Σ_i u_ni · (−α/N) ⟨v, ∇c_ni(θ1)⟩: its gradient in θ2 (through L1's target u) is the
/// meta-gradient's part through θ1⁺ (see [`by_jvp`]); N is the batch size on this process.
fn slot_surrogate(
    f: &MultiTaskNet,
    x: &Tensor,
    t: &Tensor,
    v: &[Tensor],
    alpha: f64,
    gamma: f64,
) -> Result<Tensor, TrainError> {
    let dot = slot_loss_jvp(f, x, v, gamma)?;
    let n = x.size()[0] as f64;
    Ok((t * (dot * (-alpha / n))).sum(t.kind()))
}

/// The meta-gradient on this rank's shard, reduced across ranks (see the module's notes).
/// `grad1`: (this rank's G — with its graph to θ2 for the double-backward path —, the G that
/// forms θ1⁺: the ranks' mean). Returns θ2's gradient, the same on every rank; the losses are
/// this rank's primary loss at θ1⁺ and the global R.
fn by_ranks(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    Batch { x, y }: Batch<'_>,
    InnerStep {
        out: g_out,
        u,
        alpha,
        losses,
    }: InnerStep<'_>,
    (grad1, for_fast): (&[Tensor], &[Tensor]),
    mode: MetaGradientMode,
    dp: &DataParallel<'_>,
) -> Result<MetaGradient, TrainError> {
    let fast: Vec<Tensor> = tch::no_grad(|| fast_weights(f, for_fast, alpha))
        .into_iter()
        .map(|p| p.set_requires_grad(true))
        .collect();
    let out = f.forward_with(x, &fast, BatchNorm::Batch, false);
    let primary_at_fast = primary_focal(f, &out.primary, y, losses.gamma);
    let mut local = gradient(&primary_at_fast, &fast, false);
    let t = &g_out.labels;
    // p̄ (and w̄ when ν penalises it) ride along with v: one collective for all.
    let mean_t = t.mean_dim(0, false, t.kind());
    local.push(mean_t.detach());
    let mean_w = match &g_out.weights {
        Some(w) if losses.weight_mean_penalty != 0.0 => Some(w.mean(w.kind()).reshape([1])),
        _ => None,
    };
    if let Some(m) = &mean_w {
        local.push(m.detach());
    }
    let mut reduced = dp.mean(&local)?;
    let w_bar = mean_w
        .as_ref()
        .map(|_| reduced.pop().expect("w̄ was pushed"));
    let p_bar = reduced.pop().expect("p̄ was pushed");
    // θ1⁺ = θ1 − α·s⊙G: the contraction is with s⊙v̄.
    let v: Vec<Tensor> = reduced
        .into_iter()
        .zip(&f.store.lr_scales)
        .map(|(v, &s)| if s == 1.0 { v } else { v * s })
        .collect();
    // R(p̄) and a surrogate linear in this rank's mean whose weighted sum over ranks has R's
    // gradient: Σ_k ∂R/∂p̄_k · mean_k.
    let p_bar = p_bar.set_requires_grad(true);
    let regulariser = anti_collapse_of_mean(&p_bar);
    let d_r = gradient(&regulariser, std::slice::from_ref(&p_bar), false).remove(0);
    let reg_surrogate = (&mean_t * d_r).sum(t.kind());
    let through_fast = match mode {
        MetaGradientMode::Jvp => slot_surrogate(f, x, u, &v, alpha, losses.gamma)?,
        MetaGradientMode::DoubleBackward => {
            let dots: Vec<Tensor> = grad1
                .iter()
                .zip(&v)
                .map(|(g1, v)| (g1 * v).sum(Kind::Double))
                .collect();
            Tensor::stack(&dots, 0).sum(Kind::Double).to_kind(t.kind()) * -alpha
        }
    };
    let mut surrogate = through_fast + reg_surrogate * losses.lambda;
    // mean_i H(t_i) is a mean over images: this rank's mean, weighted by its share in the sum.
    let sample_entropy = (losses.sample_entropy != 0.0).then(|| mean_sample_entropy(t));
    if let Some(h) = &sample_entropy {
        surrogate += h * losses.sample_entropy;
    }
    // ν(w̄ − 1)² through a surrogate linear in this rank's mean weight, as R's.
    let weight_penalty = match (&mean_w, w_bar) {
        (Some(mean_w), Some(w_bar)) => {
            let w_bar = w_bar.set_requires_grad(true);
            let penalty = weight_mean_penalty(&w_bar).sum(w_bar.kind());
            let d = gradient(&penalty, std::slice::from_ref(&w_bar), false).remove(0);
            surrogate += (mean_w * d).sum(t.kind()) * losses.weight_mean_penalty;
            Some(penalty.detach())
        }
        _ => None,
    };
    let theta2 = &g.store.params;
    let local = defined_or_zero(
        Tensor::run_backward(&[&surrogate], theta2, false, false),
        theta2,
    );
    let grads = dp.mean(&local)?;
    let (primary_at_fast, regulariser) = (primary_at_fast.detach(), regulariser.detach());
    let mut loss = &primary_at_fast + &regulariser * losses.lambda;
    if let Some(h) = sample_entropy {
        loss += h.detach() * losses.sample_entropy;
    }
    if let Some(p) = weight_penalty {
        loss += p * losses.weight_mean_penalty;
    }
    Ok(MetaGradient {
        grads,
        loss,
        primary_at_fast,
        regulariser,
    })
}

/// ⟨v, ∇c_ni(θ1)⟩ [N, A] at f's live θ1, with c_ni = −(1 − p_ni)^γ log p_ni the per-slot focal
/// loss of the auxiliary head (batch statistics; running statistics untouched).
pub fn slot_loss_jvp(
    f: &MultiTaskNet,
    x: &Tensor,
    v: &[Tensor],
    gamma: f64,
) -> Result<Tensor, TrainError> {
    let level = DualLevel::enter()?;
    let duals: Vec<Tensor> = f
        .store
        .params
        .iter()
        .zip(v)
        .map(|(p, v)| Tensor::internal_make_dual(&p.detach(), &v.detach(), level.index()))
        .collect();
    let aux = f
        .forward_with(x, &duals, BatchNorm::Batch, true)
        .aux
        .expect("MAXL's network has an auxiliary head");
    let log_p = aux.log_softmax(-1, aux.kind());
    let c = -((-log_p.exp() + 1.0).pow_tensor_scalar(gamma) * &log_p);
    let (_, tangent) = Tensor::internal_unpack_dual(&c, level.index());
    // Own storage, valid after the level (and its tangents) is gone.
    let tangent = tangent.detach().copy();
    drop(level);
    Ok(tangent)
}

/// Where stage 1's auxiliary target comes from.
pub enum AuxTarget<'a> {
    /// The single-task baseline: no auxiliary task.
    None,
    /// Fixed labels (the `random` and `human` baselines), as a distribution [N, A].
    Fixed(Tensor),
    /// The label generator's output (w·t with a weight head), held constant in stage 1.
    Generator(&'a LabelGenerator),
}

/// What stage 1 measured on its batch: 0-dimensional tensors on the training device (see
/// [`MetaGradient`]).
pub struct StageOne {
    /// The primary focal loss.
    pub primary_loss: Tensor,
    /// None without an auxiliary task.
    pub aux_loss: Option<Tensor>,
    /// Correct primary predictions (training mode, before the step), Int64.
    pub correct: Tensor,
}

impl StageOne {
    fn measure(l: &MultiTaskLoss, logits: &Tensor, y: &Tensor) -> Self {
        StageOne {
            primary_loss: l.primary.detach(),
            aux_loss: l.aux.as_ref().map(Tensor::detach),
            correct: correct_count(&logits.detach(), y),
        }
    }
}

/// Stage 1: one step of θ1 by `opt` with learning rate `lr` on L1, the auxiliary target held
/// constant. This is the only forward that updates running statistics: f's, and g's when g
/// produces the target.
pub fn stage1(
    f: &MultiTaskNet,
    opt: &mut Sgd,
    target: AuxTarget<'_>,
    batch: Batch<'_>,
    lr: f64,
    losses: LossConfig,
) -> StageOne {
    stage1_dp(f, opt, target, batch, lr, losses, None).expect("a single process has no collective")
}

/// [`stage1`] on this rank's shard of a global batch: G is reduced across ranks before the step.
pub fn stage1_dp(
    f: &MultiTaskNet,
    opt: &mut Sgd,
    target: AuxTarget<'_>,
    Batch { x, y }: Batch<'_>,
    lr: f64,
    losses: LossConfig,
    dp: Option<&DataParallel<'_>>,
) -> Result<StageOne, TrainError> {
    let target = match target {
        AuxTarget::None => None,
        AuxTarget::Fixed(t) => Some(t),
        AuxTarget::Generator(g) => Some(tch::no_grad(|| {
            g.outputs(x, y, BatchNorm::BatchUpdate).target()
        })),
    };
    let out = f.forward_with(x, &f.store.params, BatchNorm::BatchUpdate, target.is_some());
    let l = losses_from_output(f, &out, y, target.as_ref(), losses.gamma);
    let mut grads = defined_or_zero(
        Tensor::run_backward(&[&l.total], &f.store.params, false, false),
        &f.store.params,
    );
    if let Some(dp) = dp {
        grads = dp.mean(&grads)?;
    }
    opt.step(&f.store.params, &grads, lr, &f.store.lr_scales);
    Ok(StageOne::measure(&l, &out.primary, y))
}

/// Stage 2: one step of θ2 by g's optimiser with learning rate `lr.g` on the exact
/// meta-gradient, α = `lr.f` (θ1's learning rate).
pub fn stage2(
    f: &MultiTaskNet,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
) -> Result<MetaGradient, TrainError> {
    stage2_dp(f, g, batch, lr, losses, mode, None)
}

/// [`stage2`] on this rank's shard of a global batch.
pub fn stage2_dp(
    f: &MultiTaskNet,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
    dp: Option<&DataParallel<'_>>,
) -> Result<MetaGradient, TrainError> {
    let out = g.net.outputs(batch.x, batch.y, BatchNorm::Batch);
    let u = out.target();
    let inner = InnerStep {
        out: &out,
        u: &u,
        alpha: lr.f,
        losses,
    };
    let mg = meta_gradient_for(f, &g.net, batch, inner, mode.into(), dp)?;
    g.step(&mg.grads, lr.g);
    Ok(mg)
}

/// One MAXL iteration on a batch, both networks stepping (θ1 by the given optimiser, θ2 by
/// the generator's): [`interleaved_step`] or [`fused_step`].
pub type Iteration = fn(
    &MultiTaskNet,
    &mut Sgd,
    &mut Generator,
    Batch<'_>,
    LearningRates,
    LossConfig,
    MetaGradientMode,
) -> Result<(StageOne, MetaGradient), TrainError>;

/// [`Iteration`] on this rank's shard of a global batch: [`interleaved_step_dp`] or
/// [`fused_step_dp`].
pub type IterationDp = fn(
    &MultiTaskNet,
    &mut Sgd,
    &mut Generator,
    Batch<'_>,
    LearningRates,
    LossConfig,
    MetaGradientMode,
    Option<&DataParallel<'_>>,
) -> Result<(StageOne, MetaGradient), TrainError>;

/// One iteration of the `interleaved` schedule: stage 1, then stage 2 on the same batch
/// (α = `lr.f`). θ2 does not change in between, so g's forward runs once (updating g's running
/// statistics, as stage 1's forward does): stage 1 uses its output as a constant, stage 2
/// differentiates it.
pub fn interleaved_step(
    f: &MultiTaskNet,
    opt_f: &mut Sgd,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
) -> Result<(StageOne, MetaGradient), TrainError> {
    interleaved_step_dp(f, opt_f, g, batch, lr, losses, mode, None)
}

/// [`interleaved_step`] on this rank's shard of a global batch.
#[allow(clippy::too_many_arguments)]
pub fn interleaved_step_dp(
    f: &MultiTaskNet,
    opt_f: &mut Sgd,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
    dp: Option<&DataParallel<'_>>,
) -> Result<(StageOne, MetaGradient), TrainError> {
    let out = g.net.outputs(batch.x, batch.y, BatchNorm::BatchUpdate);
    let u = out.target();
    let target = AuxTarget::Fixed(u.detach());
    let s = stage1_dp(f, opt_f, target, batch, lr.f, losses, dp)?;
    let inner = InnerStep {
        out: &out,
        u: &u,
        alpha: lr.f,
        losses,
    };
    let mg = meta_gradient_for(f, &g.net, batch, inner, mode.into(), dp)?;
    g.step(&mg.grads, lr.g);
    Ok((s, mg))
}

/// One iteration of the `fused` schedule: one forward of f and g (updating running statistics)
/// and one gradient G of L1 serve both stages. With plain SGD the stage-1 update θ1 − lr·G is
/// θ1⁺ itself (α = lr), so the meta-gradient is taken at the pre-update θ1; then both networks
/// step. A different algorithm from `reference` and `interleaved`.
pub fn fused_step(
    f: &MultiTaskNet,
    opt_f: &mut Sgd,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
) -> Result<(StageOne, MetaGradient), TrainError> {
    fused_step_dp(f, opt_f, g, batch, lr, losses, mode, None)
}

/// [`fused_step`] on this rank's shard of a global batch: the reduced G is both θ1⁺'s and
/// θ1's step.
#[allow(clippy::too_many_arguments)]
pub fn fused_step_dp(
    f: &MultiTaskNet,
    opt_f: &mut Sgd,
    g: &mut Generator,
    batch: Batch<'_>,
    lr: LearningRates,
    losses: LossConfig,
    mode: MetaGradientMode,
    dp: Option<&DataParallel<'_>>,
) -> Result<(StageOne, MetaGradient), TrainError> {
    if opt_f.config.momentum != 0.0 || opt_f.config.weight_decay != 0.0 {
        return Err(TrainError::Invalid(
            "the fused schedule needs plain SGD for θ1 (no momentum, no weight decay)".into(),
        ));
    }
    let (theta1, Batch { x, y }) = (&f.store.params, batch);
    let g_out = g.net.outputs(x, y, BatchNorm::BatchUpdate);
    let u = g_out.target();
    let out = f.forward_with(x, theta1, BatchNorm::BatchUpdate, true);
    let inner = InnerStep {
        out: &g_out,
        u: &u,
        alpha: lr.f,
        losses,
    };
    if let Some(dp) = dp {
        let detached = mode == MetaGradientMode::Jvp;
        let target = if detached {
            u.detach()
        } else {
            u.shallow_clone()
        };
        let l1 = losses_from_output(f, &out, y, Some(&target), losses.gamma);
        let grad1 = gradient(&l1.total, theta1, !detached);
        let g_bar = dp.mean(&grad1)?;
        let for_fast = if dp.skip_g_reduce { &grad1 } else { &g_bar };
        let mg = by_ranks(f, &g.net, batch, inner, (&grad1, for_fast), mode, dp)?;
        opt_f.step(theta1, &g_bar, lr.f, &f.store.lr_scales);
        g.step(&mg.grads, lr.g);
        return Ok((StageOne::measure(&l1, &out.primary, y), mg));
    }
    let (l1, grad1, mg) = match mode {
        MetaGradientMode::Jvp => {
            let l1 = losses_from_output(f, &out, y, Some(&u.detach()), losses.gamma);
            let grad1 = gradient(&l1.total, theta1, false);
            let mg = by_jvp(f, &g.net, batch, inner, &grad1)?;
            (l1, grad1, mg)
        }
        MetaGradientMode::DoubleBackward => {
            let l1 = losses_from_output(f, &out, y, Some(&u), losses.gamma);
            let grad1 = gradient(&l1.total, theta1, true);
            let mg = by_double_backward(f, &g.net, batch, inner, &grad1);
            (l1, grad1.iter().map(Tensor::detach).collect(), mg)
        }
    };
    opt_f.step(theta1, &grad1, lr.f, &f.store.lr_scales);
    g.step(&mg.grads, lr.g);
    Ok((StageOne::measure(&l1, &out.primary, y), mg))
}

/// How many argmax predictions of the logits equal `y` (a 0-dimensional Int64 tensor on the
/// logits' device).
pub fn correct_count(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.argmax(-1, false).eq_tensor(y).sum(Kind::Int64)
}

/// [`correct_count`] read back.
pub fn correct(logits: &Tensor, y: &Tensor) -> i64 {
    correct_count(logits, y).int64_value(&[])
}
