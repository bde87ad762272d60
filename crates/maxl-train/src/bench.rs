//! Timing of training iterations on synthetic data (a benchmark, not a test): ms per
//! single-task step and per MAXL iteration for each schedule × meta-gradient mode.
//!
//! `maxl-train bench` runs every mode in its own process (so each one's peak memory, VmHWM,
//! and on CUDA the most bytes of tensors allocated at once, is its own) and repeats the whole
//! set, interleaved, taking medians; ratios are to the single-task step of the same run.

use std::ffi::c_int;
use std::fmt;
use std::time::Instant;

use maxl_core::arch::Architecture;
use maxl_core::config::{MetaGradientMode, OptimizerConfig};
use maxl_core::hierarchy::Hierarchy;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::files::first_line;
use crate::meta::{
    AuxTarget, LossConfig, fused_step, interleaved_step, meta_gradient, stage1, stage2,
};
use crate::net::{LabelGenerator, MultiTaskNet};
use crate::optim::Sgd;
use crate::shim::{self, maxl_cuda_peak_allocated};

pub struct BenchConfig {
    pub arch: Architecture,
    pub batch_size: usize,
    pub classes: usize,
    pub psi_per_class: usize,
    pub iters: usize,
    pub warmup: usize,
    pub device: Device,
}

/// What one timed step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// A single-task step (primary head only): the baseline of every ratio.
    Single,
    /// Stage 1 then stage 2 on each batch.
    Interleaved(MetaGradientMode),
    /// The authors' schedule: a stage-1 step plus a stage-2 step, each timed in its own loop.
    Reference(MetaGradientMode),
    /// One gradient of L1 serves both stages.
    Fused(MetaGradientMode),
}

const MODES: [MetaGradientMode; 2] = [MetaGradientMode::DoubleBackward, MetaGradientMode::Jvp];

impl BenchMode {
    /// Every mode, in the order of the report.
    pub fn all() -> Vec<BenchMode> {
        let mut v = vec![BenchMode::Single];
        for make in [
            BenchMode::Reference as fn(MetaGradientMode) -> BenchMode,
            BenchMode::Interleaved,
            BenchMode::Fused,
        ] {
            v.extend(MODES.map(make));
        }
        v
    }

    pub fn name(self) -> String {
        match self {
            BenchMode::Single => "single".into(),
            BenchMode::Interleaved(m) => format!("interleaved-{}", m.name()),
            BenchMode::Reference(m) => format!("reference-{}", m.name()),
            BenchMode::Fused(m) => format!("fused-{}", m.name()),
        }
    }

    pub fn parse(name: &str) -> Option<BenchMode> {
        Self::all().into_iter().find(|m| m.name() == name)
    }
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Mean ms of `step` over `iters` calls after `warmup` untimed calls.
fn time(
    device: Device,
    warmup: usize,
    iters: usize,
    mut step: impl FnMut() -> Result<(), TrainError>,
) -> Result<f64, TrainError> {
    for _ in 0..warmup {
        step()?;
    }
    sync(device);
    let start = Instant::now();
    for _ in 0..iters {
        step()?;
    }
    sync(device);
    Ok(start.elapsed().as_secs_f64() * 1000.0 / iters as f64)
}

/// A random f32 batch of the preset's input shape and its labels, and ψ_k = `psi_per_class`.
fn synthetic(c: &BenchConfig) -> (Tensor, Tensor, Hierarchy) {
    let h = Hierarchy::new(vec![c.psi_per_class; c.classes]).expect("validated by the caller");
    let i = &c.arch.input;
    let n = c.batch_size as i64;
    let x = Tensor::randn(
        [n, i.channels as i64, i.height as i64, i.width as i64],
        (Kind::Float, c.device),
    );
    let y = Tensor::randint(c.classes as i64, [n], (Kind::Int64, c.device));
    (x, y, h)
}

/// The jvp and the double-backward meta-gradient of one batch at fresh f32 weights: the
/// largest absolute difference over all of θ2, divided by the largest magnitude of the
/// double-backward gradient.
pub fn jvp_difference(c: &BenchConfig) -> Result<f64, TrainError> {
    tch::manual_seed(0);
    let (x, y, h) = synthetic(c);
    let f = MultiTaskNet::new(&c.arch, c.classes, h.num_aux(), Kind::Float, c.device);
    let g = LabelGenerator::new(&c.arch, &h, Kind::Float, c.device);
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
    };
    let grads = |mode| meta_gradient(&f, &g, &x, &y, 0.01, losses, mode).map(|m| m.grads);
    let db = grads(MetaGradientMode::DoubleBackward)?;
    let jvp = grads(MetaGradientMode::Jvp)?;
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (a, b) in db.iter().zip(&jvp) {
        diff = diff.max((a - b).abs().max().double_value(&[]));
        scale = scale.max(a.abs().max().double_value(&[]));
    }
    Ok(diff / scale)
}

/// Times `mode` in this process: mean ms per step (per MAXL iteration).
pub fn time_mode(c: &BenchConfig, mode: BenchMode) -> Result<f64, TrainError> {
    tch::manual_seed(0);
    if let Device::Cuda(_) = c.device {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let (kind, dev) = (Kind::Float, c.device);
    let (x, y, h) = synthetic(c);
    let sgd = OptimizerConfig {
        lr: 0.01,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
    };
    let (lr_f, lr_g) = (0.01, 1e-3);
    if mode == BenchMode::Single {
        let single = MultiTaskNet::new(&c.arch, c.classes, 0, kind, dev);
        let mut opt = Sgd::new(sgd, single.store.params.len());
        return time(dev, c.warmup, c.iters, || {
            stage1(
                &single,
                AuxTarget::None,
                &x,
                &y,
                &mut opt,
                lr_f,
                losses.gamma,
            );
            Ok(())
        });
    }
    let f = MultiTaskNet::new(&c.arch, c.classes, h.num_aux(), kind, dev);
    let g = LabelGenerator::new(&c.arch, &h, kind, dev);
    let mut opt_f = Sgd::new(sgd, f.store.params.len());
    let mut opt_g = Sgd::new(
        OptimizerConfig {
            lr: lr_g,
            momentum: 0.0,
            weight_decay: 5e-4,
        },
        g.store.params.len(),
    );
    let xy = (&x, &y);
    match mode {
        BenchMode::Single => unreachable!("timed above"),
        BenchMode::Interleaved(m) => time(dev, c.warmup, c.iters, || {
            let opts = (&mut opt_f, &mut opt_g);
            interleaved_step(&f, &g, xy, opts, lr_f, lr_g, losses, m).map(drop)
        }),
        BenchMode::Fused(m) => time(dev, c.warmup, c.iters, || {
            let opts = (&mut opt_f, &mut opt_g);
            fused_step(&f, &g, xy, opts, lr_f, lr_g, losses, m).map(drop)
        }),
        BenchMode::Reference(m) => {
            let stage1_ms = time(dev, c.warmup, c.iters, || {
                stage1(&f, AuxTarget::Generator(&g), &x, &y, &mut opt_f, lr_f, 2.0);
                Ok(())
            })?;
            let stage2_ms = time(dev, c.warmup, c.iters, || {
                stage2(&f, &g, xy, &mut opt_g, lr_f, lr_g, losses, m).map(drop)
            })?;
            Ok(stage1_ms + stage2_ms)
        }
    }
}

/// The most bytes of tensors this process had allocated at once on CUDA device `index`
/// (PyTorch's `torch.cuda.max_memory_allocated`): libtorch's caching allocator's peak, without
/// the cache it keeps beyond that.
pub fn cuda_peak_bytes(index: usize) -> Result<u64, TrainError> {
    let fail = |why: &str| {
        TrainError::Torch(format!(
            "cannot read CUDA device {index}'s allocator statistics: {}",
            first_line(why)
        ))
    };
    // The allocator's per-device tables exist once CUDA is initialised, which making a tensor
    // there does (an error without a GPU).
    let _ = Tensor::f_zeros([0], (Kind::Float, Device::Cuda(index)))
        .map_err(|e| fail(&e.to_string()))?;
    let mut bytes = 0i64;
    // SAFETY: both pointers are valid for the call; the shim writes at most `len` bytes.
    shim::call(|err, len| unsafe {
        maxl_cuda_peak_allocated(index as c_int, &mut bytes, err, len)
    })
    .map_err(|m| fail(&m))?;
    Ok(bytes.max(0) as u64)
}

/// This process's peak resident memory (VmHWM) in KiB, where /proc has it.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One mode's result over the repeats.
#[derive(Debug, Clone)]
pub struct ModeResult {
    pub mode: BenchMode,
    /// ms per step of every repeat.
    pub ms: Vec<f64>,
    /// The largest VmHWM of its processes, KiB.
    pub peak_rss_kib: Option<u64>,
    /// On CUDA: the largest peak of tensor bytes allocated on the GPU of its processes.
    pub peak_gpu_bytes: Option<u64>,
}

/// Median of a non-empty list.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The report: medians, ratios to the single-task median, peak memory.
pub struct BenchReport(pub Vec<ModeResult>);

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self
            .0
            .iter()
            .find(|r| r.mode == BenchMode::Single)
            .map(|r| median(&r.ms));
        let gpu = self.0.iter().any(|r| r.peak_gpu_bytes.is_some());
        let mib =
            |b: Option<u64>| b.map_or("—".into(), |b| format!("{:.0}", b as f64 / 1048576.0));
        write!(
            f,
            "{:<28} {:>10} {:>8} {:>10} {:>14}",
            "step", "median ms", "× single", "spread", "peak RSS MiB"
        )?;
        writeln!(f, "{}", if gpu { "   peak GPU MiB" } else { "" })?;
        for r in &self.0 {
            let m = median(&r.ms);
            let lo = r.ms.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.ms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            write!(
                f,
                "{:<28} {:>10.2} {:>8} {:>10} {:>14}",
                r.mode.name(),
                m,
                base.map_or("—".into(), |b| format!("{:.2}", m / b)),
                format!("±{:.0}%", 50.0 * (hi - lo) / m),
                mib(r.peak_rss_kib.map(|k| k * 1024))
            )?;
            if gpu {
                write!(f, " {:>15}", mib(r.peak_gpu_bytes))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_medians() {
        for m in BenchMode::all() {
            assert_eq!(BenchMode::parse(&m.name()), Some(m));
        }
        assert_eq!(BenchMode::all().len(), 7);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(peak_rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn the_cuda_peak_is_read_on_a_gpu_and_refused_with_a_reason_without_one() {
        match cuda_peak_bytes(0) {
            Ok(_) => assert!(tch::Cuda::is_available()),
            Err(e) => {
                assert!(!tch::Cuda::is_available(), "{e}");
                let e = e.to_string();
                assert!(
                    e.starts_with("libtorch: cannot read CUDA device 0") && e.len() > 60,
                    "{e}"
                );
            }
        }
    }
}
