//! One MAXL iteration: stage 1 updates the multi-task network θ1, stage 2 updates the label
//! generator θ2 with the exact second-order meta-gradient
//!
//! ```text
//! t   = g(x, y; θ2)                                   (differentiable in θ2)
//! L1  = focal(f_pri(x; θ1), onehot(y)) + focal(f_aux(x; θ1), t)
//! G   = ∂L1/∂θ1                                        (create_graph: G is a function of θ2)
//! θ1⁺ = θ1 − α G
//! L2  = focal(f_pri(x; θ1⁺), onehot(y)) + λ R(t)
//! ∇θ2 = ∂L2/∂θ2
//! ```
//!
//! Batch norm: the stage-1 forwards (of f and of g) update running statistics once per batch;
//! everything in stage 2 normalises with batch statistics and leaves them untouched.

use tch::{Kind, Tensor};

use crate::loss::{anti_collapse, focal_loss, one_hot};
use crate::net::{BatchNorm, LabelGenerator, MultiTaskNet};
use crate::optim::{Sgd, defined_or_zero};

/// Loss settings shared by both stages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossConfig {
    /// γ of the focal loss.
    pub gamma: f64,
    /// λ, weight of the anti-collapse term in stage 2.
    pub lambda: f64,
}

/// The multi-task loss and its parts.
pub struct MultiTaskLoss {
    pub total: Tensor,
    pub primary: Tensor,
    pub aux: Option<Tensor>,
}

/// L1 = focal(primary) + focal(aux, target) at the given parameters. Without `aux_target` (the
/// single-task baseline) only the primary term.
pub fn multitask_loss(
    f: &MultiTaskNet,
    x: &Tensor,
    y: &Tensor,
    aux_target: Option<&Tensor>,
    params: &[Tensor],
    bn: BatchNorm,
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

/// The result of stage 2's meta-gradient computation.
pub struct MetaGradient {
    /// ∂L2/∂θ2, one tensor per generator parameter.
    pub grads: Vec<Tensor>,
    /// L2 = primary loss at θ1⁺ + λ R.
    pub loss: f64,
    /// The primary focal loss at θ1⁺.
    pub primary_at_fast: f64,
    /// R(t), the anti-collapse term (before λ).
    pub regulariser: f64,
}

/// Stage 2's meta-gradient at the current θ1 and θ2 on the batch (x, y).
///
/// `create_graph` must be true for the exact second-order gradient; false gives what a
/// first-order implementation that forgets to build the graph of G would compute (kept for the
/// test that proves the difference).
pub fn meta_gradient(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    x: &Tensor,
    y: &Tensor,
    alpha: f64,
    losses: LossConfig,
    create_graph: bool,
) -> MetaGradient {
    let theta1 = &f.store.params;
    let theta2 = &g.store.params;
    let t = g.forward(x, y, BatchNorm::Batch);
    let l1 = multitask_loss(f, x, y, Some(&t), theta1, BatchNorm::Batch, losses.gamma);
    let grad1 = Tensor::run_backward(&[&l1.total], theta1, true, create_graph);
    let grad1 = defined_or_zero(grad1, theta1);
    let fast: Vec<Tensor> = theta1
        .iter()
        .zip(&grad1)
        .map(|(p, g)| p - g * alpha)
        .collect();
    let out = f.forward_with(x, &fast, BatchNorm::Batch, false);
    let kind = out.primary.kind();
    let primary_at_fast = focal_loss(&out.primary, &one_hot(y, f.num_primary, kind), losses.gamma);
    let regulariser = anti_collapse(&t);
    let l2 = &primary_at_fast + &regulariser * losses.lambda;
    let grads = defined_or_zero(Tensor::run_backward(&[&l2], theta2, false, false), theta2);
    MetaGradient {
        grads,
        loss: l2.double_value(&[]),
        primary_at_fast: primary_at_fast.double_value(&[]),
        regulariser: regulariser.double_value(&[]),
    }
}

/// Where stage 1's auxiliary target comes from.
pub enum AuxTarget<'a> {
    /// The single-task baseline: no auxiliary task.
    None,
    /// Fixed labels (the `random` and `human` baselines), as a distribution [N, A].
    Fixed(Tensor),
    /// The label generator's output, held constant in stage 1.
    Generator(&'a LabelGenerator),
}

/// What stage 1 measured on its batch.
pub struct StageOne {
    pub primary_loss: f64,
    /// NaN without an auxiliary task.
    pub aux_loss: f64,
    /// Correct primary predictions (training mode, before the step).
    pub correct: i64,
}

/// Stage 1: one optimiser step of θ1 on L1 with the auxiliary target held constant. This is the
/// only forward that updates running statistics: f's, and g's when g produces the target.
pub fn stage1(
    f: &MultiTaskNet,
    target: AuxTarget<'_>,
    x: &Tensor,
    y: &Tensor,
    opt: &mut Sgd,
    lr: f64,
    gamma: f64,
) -> StageOne {
    let target = match target {
        AuxTarget::None => None,
        AuxTarget::Fixed(t) => Some(t),
        AuxTarget::Generator(g) => Some(tch::no_grad(|| g.forward(x, y, BatchNorm::BatchUpdate))),
    };
    let out = f.forward_with(x, &f.store.params, BatchNorm::BatchUpdate, target.is_some());
    let l = losses_from_output(f, &out, y, target.as_ref(), gamma);
    let grads = defined_or_zero(
        Tensor::run_backward(&[&l.total], &f.store.params, false, false),
        &f.store.params,
    );
    opt.step(&f.store.params, &grads, lr);
    StageOne {
        primary_loss: l.primary.double_value(&[]),
        aux_loss: l.aux.as_ref().map_or(f64::NAN, |a| a.double_value(&[])),
        correct: correct(&out.primary.detach(), y),
    }
}

/// Stage 2: one optimiser step of θ2 on the exact meta-gradient, α = `alpha`.
pub fn stage2(
    f: &MultiTaskNet,
    g: &LabelGenerator,
    (x, y): (&Tensor, &Tensor),
    opt: &mut Sgd,
    alpha: f64,
    lr: f64,
    losses: LossConfig,
) -> MetaGradient {
    let mg = meta_gradient(f, g, x, y, alpha, losses, true);
    opt.step(&g.store.params, &mg.grads, lr);
    mg
}

/// Class predictions (argmax of the logits).
pub fn correct(logits: &Tensor, y: &Tensor) -> i64 {
    logits
        .argmax(-1, false)
        .eq_tensor(y)
        .sum(Kind::Int64)
        .int64_value(&[])
}
