//! Timing of training iterations on synthetic data (a benchmark, not a test): ms per
//! single-task step and per MAXL iteration for each schedule × meta-gradient mode.
//!
//! `maxl-train bench` runs every mode in its own process (so each one's peak memory, VmHWM,
//! and on CUDA the most bytes of tensors allocated at once, is its own) and repeats the whole
//! set, interleaved, taking medians; ratios are to the single-task step of the same run.
//!
//! The label generator g is f's architecture unless the bench is given another
//! ([`generator_architecture`]): any preset, or a ResNet preset narrowed (`resnet18-narrow`).

use std::ffi::c_int;
use std::time::Instant;

use maxl_core::arch::{ArchError, Architecture, InputSpec};
use maxl_core::config::{MetaGradientMode, OptimizerConfig};
use maxl_core::hierarchy::Hierarchy;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::dist::{CommStats, DataParallel, Group};
use crate::first_line;
use crate::meta::{
    AuxTarget, Batch, Generator, LearningRates, LossConfig, fused_step_dp, interleaved_step_dp,
    meta_gradient, stage1_dp, stage2_dp,
};
use crate::net::{LabelGenerator, MultiTaskNet};
use crate::optim::Sgd;
use crate::shim::{self, maxl_cuda_peak_allocated};

/// What one timing measures on.
pub struct BenchConfig {
    /// The multi-task network f's architecture.
    pub arch: Architecture,
    /// The label generator g's architecture (f's unless a separate generator is timed); its
    /// input must be f's.
    pub generator_arch: Architecture,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Primary classes of the synthetic task.
    pub classes: usize,
    /// ψ of every class.
    pub psi_per_class: usize,
    /// Timed steps (after warm-up).
    pub iters: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Where to run.
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
    /// `maxl-weighted`'s interleaved iteration (the generator's weight head and the weighted L1).
    InterleavedWeighted(MetaGradientMode),
    /// `maxl-weighted`'s fused iteration.
    FusedWeighted(MetaGradientMode),
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
            BenchMode::InterleavedWeighted,
            BenchMode::FusedWeighted,
        ] {
            v.extend(MODES.map(make));
        }
        v
    }

    /// The MAXL mode a `maxl-weighted` mode adds its weights to (None for the others).
    pub fn unweighted(self) -> Option<BenchMode> {
        match self {
            BenchMode::InterleavedWeighted(m) => Some(BenchMode::Interleaved(m)),
            BenchMode::FusedWeighted(m) => Some(BenchMode::Fused(m)),
            _ => None,
        }
    }

    /// The mode's name (`single`, `fused-jvp`, …).
    pub fn name(self) -> String {
        match self {
            BenchMode::Single => "single".into(),
            BenchMode::Interleaved(m) => format!("interleaved-{}", m.name()),
            BenchMode::Reference(m) => format!("reference-{}", m.name()),
            BenchMode::Fused(m) => format!("fused-{}", m.name()),
            BenchMode::InterleavedWeighted(m) => format!("weighted-interleaved-{}", m.name()),
            BenchMode::FusedWeighted(m) => format!("weighted-fused-{}", m.name()),
        }
    }

    /// The mode called `name`.
    pub fn parse(name: &str) -> Option<BenchMode> {
        Self::all().into_iter().find(|m| m.name() == name)
    }
}

/// The suffix that narrows a ResNet preset into a generator ([`generator_architecture`]).
pub const NARROW_SUFFIX: &str = "-narrow";
/// How much narrower `PRESET-narrow` is than `PRESET`: every stage's width (and so the stem's)
/// and the head's hidden width are divided by it.
pub const NARROW_DIVISOR: usize = 4;

/// The generator architecture called `name`, with `input` (f's) as its input: a preset
/// ([`maxl_core::arch::PRESETS`]), or `PRESET-narrow` for a ResNet preset — the same layout
/// (blocks, stem) with every stage width and the head's hidden width divided by
/// [`NARROW_DIVISOR`]: `resnet18-narrow` has widths `[16, 32, 64, 128]` and a 128-wide head
/// (about 1/16 of resnet18's parameters and multiply-adds). Not validated.
pub fn generator_architecture(name: &str, input: &InputSpec) -> Result<Architecture, ArchError> {
    let mut arch = match name.strip_suffix(NARROW_SUFFIX) {
        Some(base) => {
            let mut arch = Architecture::preset(base)?;
            let Some(r) = arch.resnet.as_mut() else {
                return Err(ArchError::BadResNet(format!(
                    "`{name}`: only a ResNet preset can be narrowed (`{base}` is not one)"
                )));
            };
            for w in &mut r.widths {
                *w = (*w / NARROW_DIVISOR).max(1);
            }
            r.stem_width = r.stem_width.map(|w| (w / NARROW_DIVISOR).max(1));
            arch.head_hidden = (arch.head_hidden / NARROW_DIVISOR).max(1);
            arch
        }
        None => Architecture::preset(name)?,
    };
    arch.input = input.clone();
    Ok(arch)
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
    let g = LabelGenerator::new(&c.generator_arch, &h, Kind::Float, c.device);
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    let batch = Batch::new(&x, &y);
    let grads = |mode| meta_gradient(&f, &g, batch, 0.01, losses, mode).map(|m| m.grads);
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
    time_mode_on(c, mode, None).map(|(ms, _)| ms)
}

/// What one rank of a data-parallel timing measured: ms per step, and the collectives of one
/// step (calls, bytes reduced, seconds inside them, averaged over the warm-up and timed steps).
pub type RankTiming = (f64, CommStats);

/// [`time_mode`] as one rank of `group`: the rank's shard is `batch_size / world` images of
/// the global `batch_size` (all ranks must call it with the same settings).
pub fn time_mode_on(
    c: &BenchConfig,
    mode: BenchMode,
    group: Option<&Group>,
) -> Result<RankTiming, TrainError> {
    let world = group.map_or(1, Group::world);
    if !c.batch_size.is_multiple_of(world) || c.batch_size / world < 2 {
        return Err(TrainError::Invalid(format!(
            "batch size {} does not split into {world} shards of 2 or more",
            c.batch_size
        )));
    }
    let local = BenchConfig {
        batch_size: c.batch_size / world,
        arch: c.arch.clone(),
        generator_arch: c.generator_arch.clone(),
        ..*c
    };
    let before = group.map(Group::stats).unwrap_or_default();
    let dp = group.map(|group| DataParallel {
        group,
        share: 1.0 / world as f64,
        skip_g_reduce: false,
    });
    let ms = time_steps(&local, mode, dp.as_ref())?;
    let after = group.map(Group::stats).unwrap_or_default();
    let steps = (c.warmup + c.iters) as f64
        * if matches!(mode, BenchMode::Reference(_)) {
            2.0
        } else {
            1.0
        };
    let per_step = CommStats {
        calls: ((after.calls - before.calls) as f64 / steps).round() as u64,
        bytes: ((after.bytes - before.bytes) as f64 / steps).round() as u64,
        seconds: (after.seconds - before.seconds) / steps,
    };
    Ok((ms, per_step))
}

fn time_steps(
    c: &BenchConfig,
    mode: BenchMode,
    dp: Option<&DataParallel<'_>>,
) -> Result<f64, TrainError> {
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
        backbone_lr_scale: 1.0,
    };
    let losses = LossConfig {
        gamma: 2.0,
        lambda: 0.2,
        sample_entropy: 0.0,
        weight_mean_penalty: 0.0,
    };
    let lr = LearningRates { f: 0.01, g: 1e-3 };
    let batch = Batch::new(&x, &y);
    if mode == BenchMode::Single {
        let single = MultiTaskNet::new(&c.arch, c.classes, 0, kind, dev);
        let mut opt = Sgd::new(sgd, single.store.params.len());
        return time(dev, c.warmup, c.iters, || {
            stage1_dp(&single, &mut opt, AuxTarget::None, batch, lr.f, losses, dp).map(drop)
        });
    }
    let f = MultiTaskNet::new(&c.arch, c.classes, h.num_aux(), kind, dev);
    let weighted = mode.unweighted().is_some();
    let net = if weighted {
        LabelGenerator::new_weighted(&c.generator_arch, &h, kind, dev)
    } else {
        LabelGenerator::new(&c.generator_arch, &h, kind, dev)
    };
    let mut g = Generator::new(
        net,
        OptimizerConfig {
            lr: lr.g,
            momentum: 0.0,
            weight_decay: 5e-4,
            backbone_lr_scale: 1.0,
        },
    );
    let mut opt_f = Sgd::new(sgd, f.store.params.len());
    match mode {
        BenchMode::Single => unreachable!("timed above"),
        BenchMode::Interleaved(m) | BenchMode::InterleavedWeighted(m) => {
            time(dev, c.warmup, c.iters, || {
                interleaved_step_dp(&f, &mut opt_f, &mut g, batch, lr, losses, m, dp).map(drop)
            })
        }
        BenchMode::Fused(m) | BenchMode::FusedWeighted(m) => time(dev, c.warmup, c.iters, || {
            fused_step_dp(&f, &mut opt_f, &mut g, batch, lr, losses, m, dp).map(drop)
        }),
        BenchMode::Reference(m) => {
            let stage1_ms = time(dev, c.warmup, c.iters, || {
                let target = AuxTarget::Generator(&g.net);
                stage1_dp(&f, &mut opt_f, target, batch, lr.f, losses, dp).map(drop)
            })?;
            let stage2_ms = time(dev, c.warmup, c.iters, || {
                stage2_dp(&f, &mut g, batch, lr, losses, m, dp).map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in BenchMode::all() {
            assert_eq!(BenchMode::parse(&m.name()), Some(m));
        }
        assert_eq!(BenchMode::all().len(), 11);
    }

    #[test]
    fn narrow_generators() {
        let f = Architecture::preset("resnet18")
            .unwrap()
            .with_input_size(64, 64);
        let g = generator_architecture("resnet18-narrow", &f.input).unwrap();
        g.validate().unwrap();
        assert_eq!(g.input, f.input);
        let r = g.resnet.as_ref().unwrap();
        assert_eq!(r.widths, vec![16, 32, 64, 128]);
        assert_eq!(r.layers, f.resnet.as_ref().unwrap().layers);
        assert_eq!((g.head_hidden, g.feature_dim()), (128, 128));
        assert_eq!(g.backbone_params()[0].shape, vec![16, 3, 7, 7]);
        let same = generator_architecture("resnet18", &f.input).unwrap();
        assert_eq!(same, f);
        for bad in ["small-narrow", "resnet-narrow", "nope"] {
            assert!(generator_architecture(bad, &f.input).is_err(), "{bad}");
        }
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
