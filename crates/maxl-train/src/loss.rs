//! MAXL's losses, computed so that no extreme logit produces a NaN.
//!
//! * [`mask_softmax`]: softmax over the slots of the sample's own primary class, exact zeros
//!   elsewhere (the authors' code, not the paper's printed formula).
//! * [`focal_loss`]: −Σ t_i (1 − p_i)^γ log p_i, with log p from `log_softmax` so that t_i = 0
//!   against an underflowed p_i never computes 0 · (−∞).
//! * [`anti_collapse`]: Σ p̄ log p̄ of the batch-mean generator output (minus its entropy).

use tch::{Kind, Tensor};

/// What disallowed logits are replaced by before the softmax: far below any real logit, yet
/// finite, so `x − max(x)` never computes −∞ − (−∞).
pub const MASK_FILL: f64 = -1e9;

/// Floor inside the regulariser's log. It only changes slots whose batch mean is 0 (no sample of
/// their class in the batch), where p̄ log p̄ must be 0 with a finite gradient; elsewhere the
/// value is exact.
pub const REGULARISER_FLOOR: f64 = 1e-30;

/// Mask softmax: `softmax(where(mask, logits, MASK_FILL)) * mask`. Rows sum to 1 over the allowed
/// slots; disallowed slots are exactly 0 (the multiply makes that a property of the graph).
pub fn mask_softmax(logits: &Tensor, mask: &Tensor) -> Tensor {
    let filled = logits.masked_fill(&mask.eq(0.0), MASK_FILL);
    filled.softmax(-1, filled.kind()) * mask
}

/// Focal loss on logits against a (possibly soft) target distribution, summed over classes
/// and averaged over the batch.
pub fn focal_loss(logits: &Tensor, target: &Tensor, gamma: f64) -> Tensor {
    let log_p = logits.log_softmax(-1, logits.kind());
    let weight = (-log_p.exp() + 1.0).pow_tensor_scalar(gamma);
    -(target * weight * log_p)
        .sum_dim_intlist(-1, false, logits.kind())
        .mean(logits.kind())
}

/// One-hot targets [N, classes] of int64 labels, in `kind`.
pub fn one_hot(labels: &Tensor, classes: usize, kind: Kind) -> Tensor {
    labels.one_hot(classes as i64).to_kind(kind)
}

/// R = Σ_k p̄_k log p̄_k with p̄ the batch mean of the generator's outputs [N, A]. Adding λR to the
/// loss spreads the batch over all auxiliary slots; it does not reward per-sample uncertainty.
pub fn anti_collapse(generated: &Tensor) -> Tensor {
    anti_collapse_of_mean(&generated.mean_dim(0, false, generated.kind()))
}

/// mean_i H(t_i) = −mean_i Σ_k t_ik log t_ik (nats) of the generator's outputs [N, A]: 0 when
/// every image's label is one slot, ln ψ for uniform labels over ψ slots. Slots outside an
/// image's class hold 0 and add nothing.
pub fn mean_sample_entropy(generated: &Tensor) -> Tensor {
    let h = -(generated * generated.clamp_min(REGULARISER_FLOOR).log()).sum_dim_intlist(
        -1,
        false,
        generated.kind(),
    );
    h.mean(generated.kind())
}

/// R = Σ_k p̄_k log p̄_k of a batch-mean prediction p̄ [A] (for a batch split across ranks, the
/// weighted mean of the ranks' means).
pub fn anti_collapse_of_mean(mean: &Tensor) -> Tensor {
    (mean * mean.clamp_min(REGULARISER_FLOOR).log()).sum(mean.kind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([rows.len() as i64, rows[0].len() as i64])
    }

    fn vals(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&x.flatten(0, -1).to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn mask_softmax_is_a_softmax_over_the_own_class() {
        let logits = t(&[&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0]]);
        let mask = t(&[&[1.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 1.0, 1.0]]);
        let p = vals(&mask_softmax(&logits, &mask));
        let e = 1f64.exp();
        let want = [
            1.0 / (1.0 + e),
            e / (1.0 + e),
            0.0,
            0.0,
            0.0,
            0.0,
            1.0 / (1.0 + e),
            e / (1.0 + e),
        ];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        assert_eq!(p[2], 0.0);
        assert_eq!(p[4], 0.0);
    }

    #[test]
    fn mask_softmax_survives_extreme_logits() {
        for kind in [Kind::Float, Kind::Double] {
            let logits =
                t(&[&[1e4, -1e4, 1e4, -1e4, 0.0], &[-1e4, -1e4, 1e4, 1e4, -1e4]]).to_kind(kind);
            let mask = t(&[&[0.0, 1.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 0.0, 0.0, 0.0]]).to_kind(kind);
            let p = vals(&mask_softmax(&logits, &mask));
            assert!(p.iter().all(|v| v.is_finite()), "{p:?}");
            for (row, m) in p
                .chunks(5)
                .zip([[0., 1., 0., 1., 1.], [1., 1., 0., 0., 0.]])
            {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{row:?}");
                for (v, m) in row.iter().zip(m) {
                    if m == 0.0 {
                        assert_eq!(*v, 0.0, "off-class slot must be exactly 0: {row:?}");
                    }
                }
            }
            // Row 0: allowed logits are −1e4, −1e4, 0 → all mass on slot 4.
            assert_eq!(p[4], 1.0);
            // Gradients stay finite too.
            let l = logits.set_requires_grad(true);
            let out = mask_softmax(&l, &mask).sum(kind);
            let g = Tensor::run_backward(&[&out], &[&l], false, false);
            assert!(vals(&g[0]).iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn focal_loss_matches_hand_computation() {
        // p = softmax([0, ln 3]) = [0.25, 0.75]; target [0, 1]:
        // −(1 − 0.75)² · ln 0.75.
        let logits = t(&[&[0.0, 3f64.ln()]]);
        let target = t(&[&[0.0, 1.0]]);
        let l = focal_loss(&logits, &target, 2.0).double_value(&[]);
        assert!(
            (l - (-(0.25f64.powi(2)) * 0.75f64.ln())).abs() < 1e-14,
            "{l}"
        );
        // Soft target [0.5, 0.5], batch of two rows (the second counts 0): mean over the batch.
        let logits = t(&[&[0.0, 3f64.ln()], &[0.0, 0.0]]);
        let target = t(&[&[0.5, 0.5], &[0.0, 0.0]]);
        let want =
            -(0.5 * 0.75f64.powi(2) * 0.25f64.ln() + 0.5 * 0.25f64.powi(2) * 0.75f64.ln()) / 2.0;
        let l = focal_loss(&logits, &target, 2.0).double_value(&[]);
        assert!((l - want).abs() < 1e-14, "{l} vs {want}");
        // γ = 0 is cross-entropy.
        let l = focal_loss(&t(&[&[0.0, 3f64.ln()]]), &t(&[&[1.0, 0.0]]), 0.0).double_value(&[]);
        assert!((l - 4f64.ln()).abs() < 1e-14);
    }

    #[test]
    fn focal_loss_has_no_nan_where_the_target_is_zero_and_p_underflows() {
        for kind in [Kind::Float, Kind::Double] {
            // p_1 = exp(−2e4) underflows to 0 exactly; its target is 0.
            let logits = t(&[&[1e4, -1e4]]).to_kind(kind).set_requires_grad(true);
            let target = t(&[&[1.0, 0.0]]).to_kind(kind);
            let l = focal_loss(&logits, &target, 2.0);
            assert_eq!(l.double_value(&[]), 0.0);
            let g = Tensor::run_backward(&[&l], &[&logits], false, false);
            assert!(vals(&g[0]).iter().all(|v| v.is_finite()));
            // The wrong class at full confidence: finite and large.
            let l = focal_loss(&logits.detach(), &t(&[&[0.0, 1.0]]).to_kind(kind), 2.0)
                .double_value(&[]);
            assert!(l.is_finite() && l > 1e4 * 0.99, "{l}");
        }
    }

    #[test]
    fn anti_collapse_is_minus_the_entropy_of_the_batch_mean() {
        // Two samples, A = 4: mean = [0.5, 0.25, 0.25, 0].
        let g = t(&[&[1.0, 0.0, 0.0, 0.0], &[0.0, 0.5, 0.5, 0.0]]);
        let r = anti_collapse(&g).double_value(&[]);
        let want = 0.5 * 0.5f64.ln() + 2.0 * 0.25 * 0.25f64.ln();
        assert!((r - want).abs() < 1e-10, "{r} vs {want}");
        // Collapsed batch (all mass on one slot): R = 0, the maximum. Spread batch: −ln A, the minimum.
        let collapsed = t(&[&[1.0, 0.0], &[1.0, 0.0]]);
        assert!(anti_collapse(&collapsed).double_value(&[]).abs() < 1e-10);
        let spread = Tensor::full([3, 4], 0.25, (Kind::Double, Device::Cpu));
        assert!((anti_collapse(&spread).double_value(&[]) + 4f64.ln()).abs() < 1e-10);
        // A zero slot has a finite gradient.
        let g = g.set_requires_grad(true);
        let r = anti_collapse(&g);
        let grad = Tensor::run_backward(&[&r], &[&g], false, false);
        assert!(vals(&grad[0]).iter().all(|v| v.is_finite()));
    }
}
