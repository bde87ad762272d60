//! Timing of training iterations on synthetic data (a benchmark, not a test): ms per single-task
//! step and per MAXL iteration under each schedule, measured in the same process so the ratios
//! compare like with like.

use std::fmt;
use std::time::Instant;

use maxl_core::arch::Architecture;
use maxl_core::config::OptimizerConfig;
use maxl_core::hierarchy::Hierarchy;
use tch::{Device, Kind, Tensor};

use crate::meta::{AuxTarget, LossConfig, stage1, stage2};
use crate::net::{LabelGenerator, MultiTaskNet};
use crate::optim::Sgd;

pub struct BenchConfig {
    pub arch: Architecture,
    pub batch_size: usize,
    pub classes: usize,
    pub psi_per_class: usize,
    pub iters: usize,
    pub warmup: usize,
    pub device: Device,
}

pub struct BenchReport {
    /// ms per stage-1 step of the single-task baseline (primary head only).
    pub single_ms: f64,
    /// ms per stage-1 step with the generator's labels (MAXL's stage 1 alone).
    pub stage1_ms: f64,
    /// ms per MAXL iteration with the interleaved schedule (stage 1 + stage 2 on one batch).
    pub interleaved_ms: f64,
    /// ms per MAXL iteration with the reference schedule (a stage-1 pass, then a stage-2 pass).
    pub reference_ms: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = |v: f64| v / self.single_ms;
        writeln!(
            f,
            "single-task step        {:9.2} ms   1.00×",
            self.single_ms
        )?;
        writeln!(
            f,
            "maxl stage 1 only       {:9.2} ms  {:5.2}×",
            self.stage1_ms,
            r(self.stage1_ms)
        )?;
        writeln!(
            f,
            "maxl interleaved iter.  {:9.2} ms  {:5.2}×",
            self.interleaved_ms,
            r(self.interleaved_ms)
        )?;
        writeln!(
            f,
            "maxl reference iter.    {:9.2} ms  {:5.2}×",
            self.reference_ms,
            r(self.reference_ms)
        )
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Mean ms of `step` over `iters` calls after `warmup` untimed calls.
fn time(device: Device, warmup: usize, iters: usize, mut step: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        step();
    }
    sync(device);
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    sync(device);
    start.elapsed().as_secs_f64() * 1000.0 / iters as f64
}

pub fn run(c: &BenchConfig) -> BenchReport {
    tch::manual_seed(0);
    let (kind, dev) = (Kind::Float, c.device);
    let h = Hierarchy::new(vec![c.psi_per_class; c.classes]).expect("validated by the caller");
    let i = &c.arch.input;
    let n = c.batch_size as i64;
    let x = Tensor::randn(
        [n, i.channels as i64, i.height as i64, i.width as i64],
        (kind, dev),
    );
    let y = Tensor::randint(c.classes as i64, [n], (Kind::Int64, dev));
    let sgd = OptimizerConfig {
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
    };

    let single = MultiTaskNet::new(&c.arch, c.classes, 0, kind, dev);
    let mut opt = Sgd::new(sgd, single.store.params.len());
    let single_ms = time(dev, c.warmup, c.iters, || {
        stage1(&single, AuxTarget::None, &x, &y, &mut opt, 0.01, 2.0);
    });
    drop(single);

    let f = MultiTaskNet::new(&c.arch, c.classes, h.num_aux(), kind, dev);
    let g = LabelGenerator::new(&c.arch, &h, kind, dev);
    let mut opt_f = Sgd::new(sgd, f.store.params.len());
    let mut opt_g = Sgd::new(
        OptimizerConfig {
            lr: 1e-3,
            momentum: 0.0,
            weight_decay: 5e-4,
        },
        g.store.params.len(),
    );
    let stage1_ms = time(dev, c.warmup, c.iters, || {
        stage1(&f, AuxTarget::Generator(&g), &x, &y, &mut opt_f, 0.01, 2.0);
    });
    let interleaved_ms = time(dev, c.warmup, c.iters, || {
        stage1(&f, AuxTarget::Generator(&g), &x, &y, &mut opt_f, 0.01, 2.0);
        stage2(&f, &g, (&x, &y), &mut opt_g, 0.01, 1e-3, losses);
    });
    // Reference schedule: all stage-1 steps, then all stage-2 steps; per-iteration cost.
    let stage2_ms = time(dev, c.warmup, c.iters, || {
        stage2(&f, &g, (&x, &y), &mut opt_g, 0.01, 1e-3, losses);
    });
    BenchReport {
        single_ms,
        stage1_ms,
        interleaved_ms,
        reference_ms: stage1_ms + stage2_ms,
    }
}
