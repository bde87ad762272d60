//! The training loop shared by all five methods: same backbone, heads, optimiser and schedule;
//! the methods differ only in where the auxiliary target comes from (and `single` has none).

use std::time::Instant;

use maxl_core::arch::Architecture;
use maxl_core::config::{Method, Schedule, TrainConfig};
use maxl_data::Dataset;
use maxl_data::batch::{Augment, Normalize, assemble};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

use crate::data::PreparedData;
use crate::loss::one_hot;
use crate::meta::{
    AuxTarget, LossConfig, MetaGradient, StageOne, correct, fused_step, interleaved_step, stage1,
    stage2,
};
use crate::net::{BatchNorm, LabelGenerator, MultiTaskNet};
use crate::optim::{Sgd, scheduled_lr};

/// Batch size used for evaluation passes.
const EVAL_BATCH: usize = 1000;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub primary_loss: f64,
    /// NaN for `single`.
    pub aux_loss: f64,
    /// L2 and R of stage 2, NaN for methods without a generator.
    pub meta_loss: f64,
    pub regulariser: f64,
    pub train_acc: f64,
    pub val_acc: f64,
    pub test_acc: f64,
    pub seconds: f64,
    /// CPU seconds the process spent in the same part (all its threads): the training cost
    /// without the waiting caused by other load on the machine.
    pub cpu_seconds: f64,
    pub generator: Option<GeneratorStats>,
}

/// How the label generator uses its slots, on the validation set (running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorStats {
    /// Per primary class: entropy of the histogram of argmax slots, divided by ln ψ_k.
    /// 0 = every image of the class gets the same slot (collapse), 1 = all slots used equally.
    pub usage_entropy: Vec<f64>,
    /// Mean over images of the entropy of g's distribution divided by ln ψ_k.
    /// Near 1 = near-uniform soft labels (noise), near 0 = confident labels.
    pub sample_entropy: f64,
    /// How many images got each slot as their argmax, per slot (A entries).
    pub usage_counts: Vec<usize>,
}

pub struct Trainer {
    pub config: TrainConfig,
    pub arch: Architecture,
    pub data: PreparedData,
    pub f: MultiTaskNet,
    pub g: Option<LabelGenerator>,
    pub(crate) opt_f: Sgd,
    pub(crate) opt_g: Option<Sgd>,
    /// Re-seeded from (seed, epoch) at the start of every epoch, so a run resumed at an epoch
    /// boundary draws exactly the batches and augmentations of an uninterrupted one.
    rng: StdRng,
    device: Device,
    kind: Kind,
    norm: Normalize,
    augment: Option<Augment>,
    pub epochs_done: usize,
    /// Stage-1 optimiser steps taken so far (over all epochs).
    pub steps_done: usize,
}

struct Accum {
    primary: f64,
    aux: f64,
    meta: f64,
    reg: f64,
    correct: i64,
    seen: usize,
    batches: usize,
    meta_batches: usize,
}

impl Accum {
    fn add_stage1(&mut self, s: &StageOne, n: usize) {
        self.primary += s.primary_loss;
        self.aux += s.aux_loss;
        self.correct += s.correct;
        self.seen += n;
        self.batches += 1;
    }

    fn add_meta(&mut self, mg: &MetaGradient) {
        self.meta += mg.loss;
        self.reg += mg.regulariser;
        self.meta_batches += 1;
    }
}

impl Trainer {
    pub fn new(
        config: TrainConfig,
        data: PreparedData,
        device: Device,
    ) -> Result<Self, crate::TrainError> {
        let arch = config
            .model
            .resolve()
            .map_err(|e| crate::TrainError::Invalid(format!("model: {e}")))?;
        let kind = Kind::Float;
        if let Device::Cuda(_) = device {
            // Fixed shapes every step: let cuDNN pick its fastest kernels once.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        tch::manual_seed(config.seed as i64);
        let num_aux = if config.method == Method::Single {
            0
        } else {
            data.hierarchy.num_aux()
        };
        let f = MultiTaskNet::new(&arch, data.hierarchy.num_primary(), num_aux, kind, device);
        let g = config
            .method
            .uses_generator()
            .then(|| LabelGenerator::new(&arch, &data.hierarchy, kind, device));
        let opt_f = Sgd::new(config.multitask_optimizer, f.store.params.len());
        let opt_g = g
            .as_ref()
            .map(|g| Sgd::new(config.generator_optimizer, g.store.params.len()));
        let d = &config.dataset;
        let augment = (d.crop_padding > 0 || d.horizontal_flip).then_some(Augment {
            crop_padding: d.crop_padding,
            horizontal_flip: d.horizontal_flip,
        });
        Ok(Self {
            norm: Normalize {
                mean: arch.input.mean,
                std: arch.input.std,
            },
            rng: StdRng::seed_from_u64(config.seed),
            config,
            arch,
            data,
            f,
            g,
            opt_f,
            opt_g,
            device,
            kind,
            augment,
            epochs_done: 0,
            steps_done: 0,
        })
    }

    /// A training batch, augmented as configured.
    fn train_batch(&mut self, indices: &[usize]) -> (Tensor, Tensor) {
        let ds = &self.data.train;
        let pixels = assemble(
            ds,
            indices,
            self.norm,
            self.augment.map(|a| (a, &mut self.rng)),
        );
        to_tensors(ds, indices, &pixels, self.kind, self.device)
    }

    fn shuffled_batches(&mut self) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.data.train.len()).collect();
        if self.config.dataset.shuffle {
            order.shuffle(&mut self.rng);
        }
        order
            .chunks(self.config.batch_size)
            // Batch norm needs more than one sample per channel in training mode.
            .filter(|c| c.len() > 1)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Stage 1 on a batch, with the method's auxiliary target.
    fn stage1(&mut self, x: &Tensor, y: &Tensor, indices: &[usize], lr: f64, acc: &mut Accum) {
        let target = match self.config.method {
            Method::Single => AuxTarget::None,
            Method::Random | Method::Human => {
                let fixed = self
                    .data
                    .fixed_aux
                    .as_ref()
                    .expect("fixed labels for random/human");
                let slots: Vec<i64> = indices.iter().map(|&i| fixed[i] as i64).collect();
                let slots = Tensor::from_slice(&slots).to_device(self.device);
                AuxTarget::Fixed(one_hot(&slots, self.data.hierarchy.num_aux(), self.kind))
            }
            Method::Maxl | Method::MaxlNoEntropy => {
                AuxTarget::Generator(self.g.as_ref().expect("generator"))
            }
        };
        let s = stage1(
            &self.f,
            target,
            x,
            y,
            &mut self.opt_f,
            lr,
            self.config.focal_gamma,
        );
        acc.add_stage1(&s, indices.len());
    }

    fn losses(&self) -> LossConfig {
        LossConfig {
            gamma: self.config.focal_gamma,
            lambda: self.config.effective_entropy_weight(),
        }
    }

    /// An `interleaved` iteration (see [`interleaved_step`]).
    fn interleaved_step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        n: usize,
        lr: (f64, f64),
        acc: &mut Accum,
    ) {
        let losses = self.losses();
        let (Some(g), Some(opt_g)) = (self.g.as_ref(), self.opt_g.as_mut()) else {
            unreachable!("interleaved steps are taken by methods with a generator")
        };
        let (s, mg) = interleaved_step(
            &self.f,
            g,
            (x, y),
            (&mut self.opt_f, opt_g),
            lr.0,
            lr.1,
            losses,
            self.config.meta_gradient,
        );
        acc.add_stage1(&s, n);
        acc.add_meta(&mg);
    }

    /// A `fused` iteration (see [`fused_step`]).
    fn fused_step(&mut self, x: &Tensor, y: &Tensor, n: usize, lr: (f64, f64), acc: &mut Accum) {
        let losses = self.losses();
        let (Some(g), Some(opt_g)) = (self.g.as_ref(), self.opt_g.as_mut()) else {
            unreachable!("fused steps are taken by methods with a generator")
        };
        let (s, mg) = fused_step(
            &self.f,
            g,
            (x, y),
            (&mut self.opt_f, opt_g),
            lr.0,
            lr.1,
            losses,
            self.config.meta_gradient,
        );
        acc.add_stage1(&s, n);
        acc.add_meta(&mg);
    }

    /// Recomputes g's running batch-norm statistics at the current θ2 over the epoch's
    /// batches (the `reference` schedule changes θ2 only after its stage-1 pass, which is where
    /// the statistics were last updated): evaluation and export then see statistics of the
    /// weights they use.
    fn refresh_generator_statistics(&mut self, batches: &[Vec<usize>]) {
        for idx in batches {
            let (x, y) = self.train_batch(idx);
            if let Some(g) = &self.g {
                let _ = tch::no_grad(|| g.forward(&x, &y, BatchNorm::BatchUpdate));
            }
        }
    }

    /// Stage 2 on a batch (methods with a generator).
    fn stage2(&mut self, x: &Tensor, y: &Tensor, alpha: f64, lr: f64, acc: &mut Accum) {
        let (Some(g), Some(opt)) = (self.g.as_ref(), self.opt_g.as_mut()) else {
            return;
        };
        let losses = LossConfig {
            gamma: self.config.focal_gamma,
            lambda: self.config.effective_entropy_weight(),
        };
        let mode = self.config.meta_gradient;
        let mg = stage2(&self.f, g, (x, y), opt, alpha, lr, losses, mode);
        acc.add_meta(&mg);
    }

    /// Trains one epoch and evaluates. `progress` is called after every optimiser step with
    /// (steps done, steps in the epoch). With `max_steps`, training stops once that many stage-1
    /// steps have been taken in the whole run (the epoch is then partial).
    pub fn train_epoch(
        &mut self,
        max_steps: Option<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> EpochMetrics {
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let epoch = self.epochs_done;
        self.rng = epoch_rng(self.config.seed, epoch);
        let lr_f = scheduled_lr(
            self.config.multitask_optimizer.lr,
            self.config.lr_step,
            epoch,
        );
        let lr_g = scheduled_lr(
            self.config.generator_optimizer.lr,
            self.config.lr_step,
            epoch,
        );
        let mut acc = Accum {
            primary: 0.0,
            aux: 0.0,
            meta: 0.0,
            reg: 0.0,
            correct: 0,
            seen: 0,
            batches: 0,
            meta_batches: 0,
        };
        let meta = self.g.is_some();
        let schedule = self.config.schedule;
        let batches = self.shuffled_batches();
        let passes = if meta && schedule == Schedule::Reference {
            2
        } else {
            1
        };
        let budget = max_steps.map_or(usize::MAX, |m| m.saturating_sub(self.steps_done));
        let stage1_batches = batches.len().min(budget);
        let total = stage1_batches * passes;
        let mut done = 0;
        for idx in &batches[..stage1_batches] {
            let (x, y) = self.train_batch(idx);
            match (meta, schedule) {
                (true, Schedule::Interleaved) => {
                    self.interleaved_step(&x, &y, idx.len(), (lr_f, lr_g), &mut acc)
                }
                (true, Schedule::Fused) => {
                    self.fused_step(&x, &y, idx.len(), (lr_f, lr_g), &mut acc)
                }
                _ => self.stage1(&x, &y, idx, lr_f, &mut acc),
            }
            self.steps_done += 1;
            done += 1;
            progress(done, total);
        }
        if meta && schedule == Schedule::Reference {
            // The authors' schedule: a second full pass over freshly shuffled, augmented batches
            // (as many as stage 1 took).
            let second = self.shuffled_batches();
            for idx in second.into_iter().take(stage1_batches) {
                let (x, y) = self.train_batch(&idx);
                self.stage2(&x, &y, lr_f, lr_g, &mut acc);
                done += 1;
                progress(done, total);
            }
            self.refresh_generator_statistics(&batches[..stage1_batches]);
        }
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = process_cpu_seconds() - cpu_start;
        let (val_acc, test_acc, generator) = self.evaluate();
        self.epochs_done += 1;
        let per = |v: f64, n: usize| if n == 0 { f64::NAN } else { v / n as f64 };
        EpochMetrics {
            epoch: epoch + 1,
            lr: lr_f,
            primary_loss: per(acc.primary, acc.batches),
            aux_loss: per(acc.aux, acc.batches),
            meta_loss: per(acc.meta, acc.meta_batches),
            regulariser: per(acc.reg, acc.meta_batches),
            train_acc: acc.correct as f64 / acc.seen.max(1) as f64,
            val_acc,
            test_acc,
            seconds,
            cpu_seconds,
            generator,
        }
    }

    /// Validation and test accuracy and the generator's slot usage (on the validation set, or
    /// on the unaugmented training set without one).
    fn evaluate(&self) -> (f64, f64, Option<GeneratorStats>) {
        let generator = if self.data.validation.is_empty() {
            self.generator_stats(&self.data.train)
        } else {
            self.generator_stats(&self.data.validation)
        };
        (
            self.accuracy(&self.data.validation),
            self.accuracy(&self.data.test),
            generator,
        )
    }

    /// The evaluation part of the last epoch's metrics, recomputed from the current weights
    /// (training losses and times NaN): for a run whose last epoch finished but whose summary
    /// was not written.
    pub fn evaluation(&self) -> EpochMetrics {
        let (val_acc, test_acc, generator) = self.evaluate();
        EpochMetrics {
            epoch: self.epochs_done,
            lr: f64::NAN,
            primary_loss: f64::NAN,
            aux_loss: f64::NAN,
            meta_loss: f64::NAN,
            regulariser: f64::NAN,
            train_acc: f64::NAN,
            val_acc,
            test_acc,
            seconds: f64::NAN,
            cpu_seconds: f64::NAN,
            generator,
        }
    }

    /// Whether a `max_steps` budget has been used up.
    pub fn steps_exhausted(&self, max_steps: Option<usize>) -> bool {
        max_steps.is_some_and(|m| self.steps_done >= m)
    }

    fn eval_batches<'a>(
        &self,
        ds: &'a Dataset,
    ) -> impl Iterator<Item = (Vec<usize>, Tensor, Tensor)> + 'a {
        let (norm, kind, device) = (self.norm, self.kind, self.device);
        (0..ds.len())
            .collect::<Vec<_>>()
            .chunks(EVAL_BATCH)
            .map(<[usize]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter()
            .map(move |idx| {
                let pixels = assemble::<StdRng>(ds, &idx, norm, None);
                let (x, y) = to_tensors(ds, &idx, &pixels, kind, device);
                (idx, x, y)
            })
    }

    /// Primary top-1 accuracy with running batch-norm statistics.
    pub fn accuracy(&self, ds: &Dataset) -> f64 {
        if ds.is_empty() {
            return f64::NAN;
        }
        let mut right = 0;
        tch::no_grad(|| {
            for (_, x, y) in self.eval_batches(ds) {
                right += correct(
                    &self
                        .f
                        .forward_with(&x, &self.f.store.params, BatchNorm::Running, false)
                        .primary,
                    &y,
                );
            }
        });
        right as f64 / ds.len() as f64
    }

    /// Slot usage of the generator on `ds` (None without a generator or data).
    pub fn generator_stats(&self, ds: &Dataset) -> Option<GeneratorStats> {
        let g = self.g.as_ref()?;
        if ds.is_empty() {
            return None;
        }
        let h = &self.data.hierarchy;
        let mut counts = vec![0usize; h.num_aux()];
        let mut sample_entropy = 0.0;
        let mut counted = 0usize;
        tch::no_grad(|| {
            for (idx, x, y) in self.eval_batches(ds) {
                let p = g.forward(&x, &y, BatchNorm::Running).to_kind(Kind::Double);
                let argmax = Vec::<i64>::try_from(&p.argmax(-1, false)).expect("argmax");
                let ent = Vec::<f64>::try_from(&-(&p * (&p + 1e-30).log()).sum_dim_intlist(
                    -1,
                    false,
                    Kind::Double,
                ))
                .expect("entropy");
                for ((&i, &slot), e) in idx.iter().zip(&argmax).zip(&ent) {
                    counts[slot as usize] += 1;
                    let psi = h.psi()[ds.labels[i]];
                    if psi > 1 {
                        sample_entropy += e / (psi as f64).ln();
                        counted += 1;
                    }
                }
            }
        });
        let usage_entropy = (0..h.num_primary())
            .map(|k| normalised_entropy(&counts[h.slots(k)]))
            .collect();
        Some(GeneratorStats {
            usage_counts: counts,
            usage_entropy,
            sample_entropy: if counted == 0 {
                0.0
            } else {
                sample_entropy / counted as f64
            },
        })
    }
}

/// Images [N, C, H, W] and primary labels [N] of `indices`, on the device.
fn to_tensors(
    ds: &Dataset,
    indices: &[usize],
    pixels: &[f32],
    kind: Kind,
    device: Device,
) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(pixels)
        .reshape([
            indices.len() as i64,
            ds.channels as i64,
            ds.height as i64,
            ds.width as i64,
        ])
        .to_kind(kind)
        .to_device(device);
    let labels: Vec<i64> = indices.iter().map(|&i| ds.labels[i] as i64).collect();
    (x, Tensor::from_slice(&labels).to_device(device))
}

/// The RNG of one epoch: a SplitMix64 mix of (seed, epoch), so that epochs are independent
/// streams and any epoch can be replayed.
fn epoch_rng(seed: u64, epoch: usize) -> StdRng {
    let mut z = seed
        ^ (epoch as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// User + system CPU seconds of this process so far (all threads).
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes one rusage struct into the zeroed value it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Entropy of a histogram divided by ln(bins); 0 for one bin or an empty histogram.
pub fn normalised_entropy(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    if counts.len() < 2 || n == 0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.ln()
        })
        .sum();
    // max(0) turns the −0.0 of a single used bin into 0.
    (h / (counts.len() as f64).ln()).max(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalised_entropy_bounds() {
        use super::normalised_entropy;
        assert_eq!(normalised_entropy(&[10, 0, 0]), 0.0);
        assert!((normalised_entropy(&[5, 5, 5]) - 1.0).abs() < 1e-12);
        assert_eq!(normalised_entropy(&[7]), 0.0);
        assert_eq!(normalised_entropy(&[0, 0]), 0.0);
    }
}
