//! SGD with momentum and weight decay, exactly as `torch.optim.SGD` (dampening 0, no Nesterov),
//! and the step learning-rate schedule. Implemented here rather than with tch's optimisers so the
//! parameters stay plain tensors that the functional forwards take, and so the state is ours to
//! save and restore.

use maxl_core::config::{LrStep, OptimizerConfig};
use tch::Tensor;

/// SGD with momentum and weight decay, as PyTorch's `torch.optim.SGD` (dampening 0, no
/// Nesterov). The learning rate is given to each [`step`](Sgd::step), so the schedule sets it.
#[derive(Debug)]
pub struct Sgd {
    /// Momentum and weight decay (`lr` is only the schedule's base: `step` takes the current rate).
    pub config: OptimizerConfig,
    /// Momentum buffers, created on the first step (as PyTorch does).
    pub momentum_buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser for `num_params` parameters, with no momentum buffers yet.
    pub fn new(config: OptimizerConfig, num_params: usize) -> Self {
        Self {
            config,
            momentum_buffers: (0..num_params).map(|_| None).collect(),
        }
    }

    /// One update `p ← p − lr·s · d` with `d = grad + wd·p`, through momentum when enabled,
    /// where `s` is each parameter's learning-rate scale (`scales`, as PyTorch's parameter
    /// groups). A parameter with scale 0 is frozen: neither it nor its momentum buffer changes.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor], lr: f64, scales: &[f64]) {
        let OptimizerConfig {
            momentum,
            weight_decay,
            ..
        } = self.config;
        tch::no_grad(|| {
            for (((p, g), buf), &scale) in params
                .iter()
                .zip(grads)
                .zip(self.momentum_buffers.iter_mut())
                .zip(scales)
            {
                if scale == 0.0 {
                    continue;
                }
                let mut d = if weight_decay != 0.0 {
                    g + p * weight_decay
                } else {
                    g.shallow_clone()
                };
                if momentum != 0.0 {
                    // buf ← momentum · buf + d, in place (PyTorch: buf.mul_(momentum).add_(d)).
                    match buf {
                        None => *buf = Some(d.detach().copy()),
                        Some(b) => {
                            *b *= momentum;
                            *b += &d;
                        }
                    }
                    d = buf.as_ref().map_or(d, Tensor::shallow_clone);
                }
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(d * (lr * scale))).expect("parameter update");
            }
        });
    }
}

/// The learning rate in (0-based) `epoch`: `base · gamma^⌊epoch / every⌋`.
pub fn scheduled_lr(base: f64, step: LrStep, epoch: usize) -> f64 {
    base * step.gamma.powi((epoch / step.every_epochs) as i32)
}

/// Replaces undefined gradients (parameters the loss does not reach) by zeros.
pub fn defined_or_zero(grads: Vec<Tensor>, params: &[Tensor]) -> Vec<Tensor> {
    grads
        .into_iter()
        .zip(params)
        .map(|(g, p)| if g.defined() { g } else { p.zeros_like() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn sgd_matches_torch_semantics() {
        let p = Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true);
        let cfg = OptimizerConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.5,
            backbone_lr_scale: 1.0,
        };
        let mut sgd = Sgd::new(cfg, 1);
        let g = Tensor::from_slice(&[0.2f64, 0.4]);
        // step 1: d = g + 0.5 p = [0.7, -0.6]; buf = d; p = p − 0.1 d.
        sgd.step(&[p.shallow_clone()], &[g.shallow_clone()], 0.1, &[1.0]);
        let v1 = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert!(
            (v1[0] - 0.93).abs() < 1e-12 && (v1[1] + 1.94).abs() < 1e-12,
            "{v1:?}"
        );
        // step 2: d = g + 0.5 p; buf = 0.9 buf + d; p −= 0.1 buf.
        sgd.step(&[p.shallow_clone()], &[g.shallow_clone()], 0.1, &[1.0]);
        let d = [0.2 + 0.5 * 0.93, 0.4 + 0.5 * -1.94];
        let buf = [0.9 * 0.7 + d[0], 0.9 * -0.6 + d[1]];
        let v2 = Vec::<f64>::try_from(&p.detach()).unwrap();
        assert!((v2[0] - (0.93 - 0.1 * buf[0])).abs() < 1e-12, "{v2:?}");
        assert!((v2[1] - (-1.94 - 0.1 * buf[1])).abs() < 1e-12, "{v2:?}");
        assert!(p.requires_grad());
    }

    #[test]
    fn step_schedule_and_zero_fill() {
        let s = LrStep {
            every_epochs: 50,
            gamma: 0.5,
        };
        assert_eq!(scheduled_lr(0.01, s, 0), 0.01);
        assert_eq!(scheduled_lr(0.01, s, 49), 0.01);
        assert_eq!(scheduled_lr(0.01, s, 50), 0.005);
        assert_eq!(scheduled_lr(0.01, s, 199), 0.00125);
        let p = [Tensor::ones([2], (Kind::Float, Device::Cpu))];
        let g = defined_or_zero(vec![Tensor::new()], &p);
        assert_eq!(g[0].sum(Kind::Float).double_value(&[]), 0.0);
    }
}
