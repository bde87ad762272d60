//! The [`Trainer`]: the two networks, their optimisers and the prepared data, and one epoch of
//! training and evaluation, shared by all five methods (same backbone, heads, optimiser and
//! schedule; the methods differ only in where the auxiliary target comes from, and `single` has
//! none). The loop over epochs, with checkpoints and the run directory, is [`crate::epoch_loop`].

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use maxl_core::arch::Architecture;
use maxl_core::config::{Method, Schedule, TrainConfig};
use maxl_data::Dataset;
use maxl_data::batch::{Augment, Normalize, Placement, assemble_sized, placements};
use maxl_data::resized_crop::ResizedCrop;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::data::{PreparedData, Split};
use crate::dist::{DataParallel, Group, Reduce, shard, sum_f64};
use crate::loss::one_hot;
use crate::meta::{
    self, AuxTarget, Generator, IterationDp, LearningRates, LossConfig, MetaGradient, StageOne,
    correct, fused_step_dp, interleaved_step_dp, stage1_dp, stage2_dp,
};
use crate::net::{BatchNorm, LabelGenerator, MultiTaskNet};
use crate::optim::{Sgd, scheduled_lr};
use crate::resident::{DataPlacement, Resident, host_only, resident_bytes};

/// Batch size used for evaluation passes.
const EVAL_BATCH: usize = 1000;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// The epoch, counted from 1.
    pub epoch: usize,
    /// θ1's learning rate in the epoch (and α).
    pub lr: f64,
    /// Stage 1's primary focal loss, mean per batch.
    pub primary_loss: f64,
    /// NaN for `single`.
    pub aux_loss: f64,
    /// L2 and R of stage 2, NaN for methods without a generator.
    pub meta_loss: f64,
    /// R, the anti-collapse term of stage 2 (before λ), mean per batch; NaN for methods without a
    /// generator.
    pub regulariser: f64,
    /// Primary accuracy on the epoch's training batches (training mode, before each step).
    pub train_acc: f64,
    /// Primary accuracy on the validation set (running statistics); NaN without one.
    pub val_acc: f64,
    /// Primary accuracy on the test set (running statistics).
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch's training (evaluation excluded).
    pub seconds: f64,
    /// CPU seconds the process spent in the same part (all its threads): the training cost
    /// without the waiting caused by other load on the machine.
    pub cpu_seconds: f64,
    /// The generator's slot usage; None without a generator or images to measure it on.
    pub generator: Option<GeneratorStats>,
}

/// Mean per-image entropy (÷ ln ψ) above which the generator's labels count as near-uniform.
pub const NEAR_UNIFORM_ENTROPY: f64 = 0.95;

impl GeneratorStats {
    /// The warning for labels that are near-uniform over each class's slots (mean per-image
    /// entropy above [`NEAR_UNIFORM_ENTROPY`]): such labels say little beyond the primary class.
    pub fn near_uniform_warning(&self) -> Option<String> {
        (self.sample_entropy > NEAR_UNIFORM_ENTROPY).then(|| {
            format!(
                "the auxiliary labels are near-uniform (mean per-image entropy {:.3} of the maximum); \
                 the auxiliary task adds little beyond the primary class (sample_entropy_weight > 0 \
                 makes each image's label more confident)",
                self.sample_entropy
            )
        })
    }
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
    /// The distribution of the per-image weights (`maxl-weighted`); None without a weight head.
    pub weights: Option<WeightStats>,
}

/// The distribution of g's per-image weights w ∈ (0, 2) of the auxiliary loss over the images
/// measured (percentiles to [`WEIGHT_BIN`], from a histogram that ranks sum exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightStats {
    /// Mean weight.
    pub mean: f64,
    /// 10th, 50th and 90th percentile.
    pub p10: f64,
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// Mean weight per primary class (NaN for a class without images).
    pub class_means: Vec<f64>,
}

/// Width of the histogram bins the weight percentiles are read from.
pub const WEIGHT_BIN: f64 = 1e-3;
const WEIGHT_BINS: usize = 2000;

/// Sums of the weights seen so far: a histogram over (0, 2), and per class the sum and count.
#[derive(Debug, Clone)]
struct WeightTally {
    histogram: Vec<f64>,
    class_sums: Vec<f64>,
    class_counts: Vec<f64>,
}

impl WeightTally {
    fn new(classes: usize) -> Self {
        Self {
            histogram: vec![0.0; WEIGHT_BINS],
            class_sums: vec![0.0; classes],
            class_counts: vec![0.0; classes],
        }
    }

    fn add(&mut self, w: f64, class: usize) {
        let bin = ((w / WEIGHT_BIN) as usize).min(WEIGHT_BINS - 1);
        self.histogram[bin] += 1.0;
        self.class_sums[class] += w;
        self.class_counts[class] += 1.0;
    }

    /// Every count in one vector (to be summed across ranks) and back.
    fn flat(&self) -> Vec<f64> {
        [&self.histogram[..], &self.class_sums, &self.class_counts].concat()
    }

    fn from_flat(v: &[f64], classes: usize) -> Self {
        Self {
            histogram: v[..WEIGHT_BINS].to_vec(),
            class_sums: v[WEIGHT_BINS..WEIGHT_BINS + classes].to_vec(),
            class_counts: v[WEIGHT_BINS + classes..].to_vec(),
        }
    }

    fn stats(&self) -> Option<WeightStats> {
        let n: f64 = self.class_counts.iter().sum();
        if n == 0.0 {
            return None;
        }
        let percentile = |q: f64| {
            let mut seen = 0.0;
            for (i, c) in self.histogram.iter().enumerate() {
                seen += c;
                if seen >= q * n {
                    return (i as f64 + 0.5) * WEIGHT_BIN;
                }
            }
            2.0
        };
        Some(WeightStats {
            mean: self.class_sums.iter().sum::<f64>() / n,
            p10: percentile(0.1),
            p50: percentile(0.5),
            p90: percentile(0.9),
            class_means: self
                .class_sums
                .iter()
                .zip(&self.class_counts)
                .map(|(s, &c)| if c == 0.0 { f64::NAN } else { s / c })
                .collect(),
        })
    }
}

/// One training run's state: the config, the prepared data, f(θ1) and its optimiser, g(θ2) with
/// its optimiser for methods that have one, and how far training has got.
pub struct Trainer {
    /// The run's training config.
    pub config: TrainConfig,
    /// The resolved architecture of both networks.
    pub arch: Architecture,
    /// The training, validation and test sets.
    pub data: PreparedData,
    /// The multi-task network f(θ1).
    pub f: MultiTaskNet,
    /// The label generator with its optimiser, for methods that have one.
    pub g: Option<Generator>,
    pub(crate) opt_f: Sgd,
    device: Device,
    kind: Kind,
    norm: Normalize,
    augment: Option<Augment>,
    /// The datasets on the device, when batches are made there.
    resident: Option<Resident>,
    /// Epochs trained so far (restored from a checkpoint when resuming).
    pub epochs_done: usize,
    /// Stage-1 optimiser steps taken so far (over all epochs).
    pub steps_done: usize,
    /// The process group of a data-parallel run (see [`Trainer::join`]).
    group: Option<Arc<Group>>,
    /// Data-parallel only: leave G unreduced when forming θ1⁺ — a different, wrong algorithm,
    /// kept so that a test can show the comparison with the single-process run detects it.
    pub skip_g_reduce: bool,
}

impl Trainer {
    /// Initialises the backbones from `model.init_from` (f) and the generator's state dict
    /// (g; see [`maxl_core::config::ModelConfig::generator_init_from`]), logging what was
    /// loaded, ignored and kept by name. A new run's first step, never a resumed run's.
    pub fn init_backbones(&mut self) -> Result<(), crate::TrainError> {
        let log = |net: &str, path: &std::path::Path, r: &crate::init_from::InitReport| {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            tracing::info!(
                "{}: {net}'s backbone: loaded {} tensors ({}); ignored {} ({}); kept their \
                 initialisation: {} ({})",
                path.display(),
                r.loaded.len(),
                list(&r.loaded),
                r.ignored.len(),
                list(&r.ignored),
                r.kept.len(),
                list(&r.kept)
            );
        };
        if let Some(path) = self.config.model.init_from.clone() {
            let r = crate::init_from::load_backbone(&mut self.f.store, &path)?;
            log("f", &path, &r);
        }
        let g_path = self
            .config
            .model
            .generator_init_from()
            .map(|p| p.to_path_buf());
        if let (Some(g), Some(path)) = (&mut self.g, g_path) {
            let r = crate::init_from::load_backbone(&mut g.net.store, &path)?;
            log("g", &path, &r);
        }
        Ok(())
    }

    /// The backbones' learning-rate scales in (0-based) `epoch`: 0 (frozen) during the
    /// warm-up epochs, each optimiser's `backbone_lr_scale` after.
    fn set_lr_scales(&mut self, epoch: usize) {
        let frozen = epoch < self.config.freeze_backbone_epochs;
        let scale = |s: f64| if frozen { 0.0 } else { s };
        self.f
            .store
            .set_backbone_lr_scale(scale(self.config.multitask_optimizer.backbone_lr_scale));
        let g_scale = scale(self.config.generator_optimizer.backbone_lr_scale);
        if let Some(g) = &mut self.g {
            g.net.store.set_backbone_lr_scale(g_scale);
        }
    }

    /// A fresh trainer: resolves the architecture, seeds tch's RNG with `config.seed`, and builds f
    /// (with an auxiliary head unless `single`), g for methods with a generator, and their SGD
    /// optimisers. Batches are made on the host until [`place_data`](Trainer::place_data).
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
        let g_arch = config
            .model
            .resolve_generator()
            .map_err(|e| crate::TrainError::Invalid(format!("model: {e}")))?;
        let f = MultiTaskNet::new(&arch, data.hierarchy.num_primary(), num_aux, kind, device);
        let g = config.method.uses_generator().then(|| {
            let net = if config.method.weighted() {
                LabelGenerator::new_weighted(&g_arch, &data.hierarchy, kind, device)
            } else {
                LabelGenerator::new(&g_arch, &data.hierarchy, kind, device)
            };
            Generator::new(net, config.generator_optimizer)
        });
        let opt_f = Sgd::new(config.multitask_optimizer, f.store.params.len());
        let d = &config.dataset;
        let augment =
            (d.crop_padding > 0 || d.horizontal_flip || d.random_resized_crop).then_some(Augment {
                crop_padding: d.crop_padding,
                horizontal_flip: d.horizontal_flip,
                resized_crop: d.random_resized_crop.then(ResizedCrop::default),
            });
        Ok(Self {
            norm: Normalize::per_channel(
                &arch.input.mean.expand(arch.input.channels),
                &arch.input.std.expand(arch.input.channels),
            ),
            config,
            arch,
            data,
            f,
            g,
            opt_f,
            device,
            kind,
            augment,
            resident: None,
            epochs_done: 0,
            steps_done: 0,
            group: None,
            skip_g_reduce: false,
        })
    }

    /// Makes this trainer one rank of a data-parallel run on `group`: refuses a `batch_size`
    /// that does not divide among the ranks, compares a digest of the config and the data sizes
    /// across ranks (a difference is refused, naming the ranks), and makes every rank's
    /// parameters and batch-norm statistics rank 0's. Call on every rank, after a resumed run's
    /// checkpoint is loaded. From then on each epoch trains on this rank's shard of every
    /// global batch (the one-process batch of the same config), and evaluates its share of
    /// each split.
    pub fn join(&mut self, group: Arc<Group>) -> Result<(), TrainError> {
        let world = group.world();
        let c = &self.config;
        let divides = c.batch_size.is_multiple_of(world);
        let result = if divides {
            Ok(())
        } else {
            Err(TrainError::Invalid(format!(
                "batch_size {} (the global batch) does not divide among {world} ranks",
                c.batch_size
            )))
        };
        group.agree("the batch-size check", result)?;
        let summary = format!(
            "{}\ntrain {} validation {} test {} epochs done {} steps done {}",
            c.to_yaml(),
            self.data.train.len(),
            self.data.validation.len(),
            self.data.test.len(),
            self.epochs_done,
            self.steps_done
        );
        group.same_everywhere(
            "the config (or data, or checkpoint)",
            crate::dist::digest(summary.as_bytes()),
        )?;
        group.broadcast(&self.state_tensors(), 0)?;
        self.group = Some(group);
        Ok(())
    }

    /// The process group, in a data-parallel run.
    pub fn group(&self) -> Option<&Group> {
        self.group.as_deref()
    }

    /// Whether this process writes the run's files: the only process, or rank 0.
    pub fn is_writer(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank() == 0)
    }

    /// Every parameter and running statistic of f and g.
    pub(crate) fn state_tensors(&self) -> Vec<Tensor> {
        let mut all: Vec<Tensor> = Vec::new();
        let mut add = |s: &crate::net::ParamStore| {
            all.extend(s.params.iter().map(Tensor::shallow_clone));
            all.extend(s.buffers.iter().map(Tensor::shallow_clone));
        };
        add(&self.f.store);
        if let Some(g) = &self.g {
            add(&g.net.store);
        }
        all
    }

    /// Averages the ranks' batch-norm running statistics (each rank updated them from its own
    /// shards): before evaluation, checkpoints and export.
    fn average_running_stats(&self) -> Result<(), TrainError> {
        let Some(group) = &self.group else {
            return Ok(());
        };
        let mut buffers: Vec<Tensor> = self
            .f
            .store
            .buffers
            .iter()
            .map(Tensor::shallow_clone)
            .collect();
        if let Some(g) = &self.g {
            buffers.extend(g.net.store.buffers.iter().map(Tensor::shallow_clone));
        }
        group.all_reduce(&buffers, Reduce::Sum)?;
        let world = group.world() as f64;
        tch::no_grad(|| {
            for b in &buffers {
                let mut b = b.shallow_clone();
                let _ = b.f_div_scalar_(world).expect("running statistics");
            }
        });
        Ok(())
    }

    /// The label generator's network, for methods that have one.
    pub fn generator(&self) -> Option<&LabelGenerator> {
        self.g.as_ref().map(|g| &g.net)
    }

    /// Decides where batches are made (see [`DataPlacement`]), uploading the datasets when
    /// they are to be kept on the device; the bytes kept there, None for host batches. The
    /// batches are the same numbers either way. The upload is a copy of `data` as it is now:
    /// call this again after changing it. With `Auto`, an upload that fails (a GPU without room
    /// for it) falls back to host batches with a warning; with `Device` it is an error.
    pub fn place_data(&mut self, placement: DataPlacement) -> Result<Option<usize>, TrainError> {
        let pad = self.augment.map_or(0, |a| a.crop_padding);
        self.resident = None;
        if let Some(why) = host_only(&self.data, self.augment) {
            if placement == DataPlacement::Device {
                return Err(TrainError::Invalid(format!(
                    "--data-placement device: {why}; use --data-placement host (or auto)"
                )));
            }
            return Ok(None);
        }
        if !placement.keeps(&self.data, pad, self.device) {
            return Ok(None);
        }
        let bytes = resident_bytes(&self.data, pad);
        let mib = bytes as f64 / (1 << 20) as f64;
        match Resident::upload(&self.data, pad, self.norm, self.kind, self.device) {
            Ok(r) => self.resident = Some(r),
            Err(e) if placement == DataPlacement::Auto => {
                tracing::warn!(
                    "batches made on the host: {mib:.1} MiB of images do not fit on the device ({e})"
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(TrainError::Invalid(format!(
                    "--data-placement device: cannot keep {mib:.1} MiB of images on the device: {e}"
                )));
            }
        }
        Ok(Some(bytes))
    }

    /// Trains one epoch and evaluates. `progress` is called after every optimiser step with
    /// (steps done, steps in the epoch). With `max_steps`, training stops once that many stage-1
    /// steps have been taken in the whole run (the epoch is then partial).
    ///
    /// Batches are made (augmented, converted, on the device) on a second thread, a few
    /// batches ahead of the training thread, in the order of one random stream per epoch: they
    /// do not depend on the thread timing, nor on whether the data is kept on the device.
    /// Losses and accuracy are summed on the device and read once, at the end of the epoch.
    pub fn train_epoch(
        &mut self,
        max_steps: Option<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EpochMetrics, TrainError> {
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let epoch = self.epochs_done;
        self.set_lr_scales(epoch);
        let c = &self.config;
        let lr = LearningRates {
            f: scheduled_lr(c.multitask_optimizer.lr, c.lr_step, epoch),
            g: scheduled_lr(c.generator_optimizer.lr, c.lr_step, epoch),
        };
        let meta = self.g.is_some();
        let schedule = c.schedule;
        let mut rng = epoch_rng(c.seed, epoch);
        let (shuffle, batch_size) = (c.dataset.shuffle, c.batch_size);
        let (rank, world) = self
            .group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world()));
        let first = shuffled_batches(self.data.train.len(), shuffle, batch_size, world, &mut rng);
        let budget = max_steps.map_or(usize::MAX, |m| m.saturating_sub(self.steps_done));
        let steps = first.len().min(budget);
        let reference = meta && schedule == Schedule::Reference;
        let total = if reference { 2 * steps } else { steps };
        let source = BatchSource {
            ds: &self.data.train,
            fixed_aux: self.data.fixed_aux.as_deref(),
            // Tensors are not Sync: the batch thread gets its own handles to the same storage.
            resident: self.resident.as_ref().map(Resident::shallow_clone),
            maker: self.batch_maker(),
            augment: self.augment,
            rank,
            world,
        };
        let mut acc = Accum::new(self.device);
        let mut nets = Nets {
            config: &self.config,
            data: &self.data,
            f: &self.f,
            g: self.g.as_mut(),
            opt_f: &mut self.opt_f,
            kind: self.kind,
            group: self.group.as_deref(),
            skip_g_reduce: self.skip_g_reduce,
        };
        let steps_done = std::thread::scope(|scope| -> Result<usize, TrainError> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, TrainError>>(PREFETCH);
            scope.spawn(move || {
                let first = &first[..steps];
                source.send_epoch(first, reference, (shuffle, batch_size), &mut rng, tx);
            });
            nets.train_batches(rx, lr, &mut acc, total, progress)
        })?;
        self.steps_done += steps_done;
        self.finish_epoch(epoch, lr.f, (start, cpu_start), &acc)
    }

    /// How host batches are made for the network's input.
    fn batch_maker(&self) -> BatchMaker {
        BatchMaker {
            norm: self.norm,
            out: (self.arch.input.height, self.arch.input.width),
            kind: self.kind,
            device: self.device,
        }
    }

    /// Ends an epoch after its training: times it, evaluates, counts it and reads back its sums.
    fn finish_epoch(
        &mut self,
        epoch: usize,
        lr: f64,
        (start, cpu_start): (Instant, f64),
        acc: &Accum,
    ) -> Result<EpochMetrics, TrainError> {
        let seconds = start.elapsed().as_secs_f64();
        let cpu_seconds = process_cpu_seconds() - cpu_start;
        self.average_running_stats()?;
        let (val_acc, test_acc, generator) = self.evaluate()?;
        self.epochs_done += 1;
        let sums = acc.read(self.group.as_deref())?;
        Ok(EpochMetrics {
            epoch: epoch + 1,
            lr,
            primary_loss: sums.primary,
            aux_loss: sums.aux,
            meta_loss: sums.meta,
            regulariser: sums.regulariser,
            train_acc: sums.train_acc,
            val_acc,
            test_acc,
            seconds,
            cpu_seconds,
            generator,
        })
    }

    /// Validation and test accuracy and the generator's slot usage (on the validation set, or
    /// on the unaugmented training set without one). Fails only where a streamed image cannot
    /// be read.
    fn evaluate(&self) -> Result<(f64, f64, Option<GeneratorStats>), TrainError> {
        // One pass per split: a streamed split's files are decoded once per evaluation.
        let on_validation = !self.data.validation.is_empty();
        let (val_acc, mut generator) = self.eval_pass(Split::Validation, true, on_validation)?;
        if !on_validation {
            generator = self.eval_pass(Split::Train, false, true)?.1;
        }
        let (test_acc, _) = self.eval_pass(Split::Test, true, false)?;
        Ok((val_acc, test_acc, generator))
    }

    fn dataset(&self, split: Split) -> &Dataset {
        match split {
            Split::Train => &self.data.train,
            Split::Validation => &self.data.validation,
            Split::Test => &self.data.test,
        }
    }

    /// The evaluation part of the last epoch's metrics, recomputed from the current weights
    /// (training losses and times NaN): for a run whose last epoch finished but whose summary
    /// was not written. Fails only where a streamed image cannot be read.
    pub fn evaluation(&self) -> Result<EpochMetrics, TrainError> {
        let (val_acc, test_acc, generator) = self.evaluate()?;
        Ok(EpochMetrics {
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
        })
    }

    /// Whether a `max_steps` budget has been used up.
    pub fn steps_exhausted(&self, max_steps: Option<usize>) -> bool {
        max_steps.is_some_and(|m| self.steps_done >= m)
    }

    /// Calls `each` on `split` in evaluation batches, unaugmented (images kept larger than the
    /// input centre-cropped to it), in order: (first index, images, labels). Host batches are
    /// made on a second thread one batch ahead, where a streamed set's files are decoded.
    fn eval_batches(
        &self,
        split: Split,
        mut each: impl FnMut(usize, Tensor, Tensor),
    ) -> Result<(), TrainError> {
        let ds = self.dataset(split);
        // A data-parallel run: this rank's evaluation batches, every world-th.
        let (rank, world) = self
            .group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world()));
        let starts = (0..ds.len())
            .step_by(EVAL_BATCH)
            .enumerate()
            .filter(move |(i, _)| i % world == rank)
            .map(|(_, s)| s);
        let count = move |start: usize| EVAL_BATCH.min(ds.len() - start);
        if let Some(r) = &self.resident {
            for start in starts {
                let (x, y) = r.range(r.set(split), start, count(start));
                each(start, x, y);
            }
            return Ok(());
        }
        let maker = self.batch_maker();
        let center = Placement::center((ds.height, ds.width), maker.out);
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            scope.spawn(move || {
                for start in starts {
                    let idx: Vec<usize> = (start..start + count(start)).collect();
                    let b = maker.make(ds, &idx, &vec![center; idx.len()]);
                    let failed = b.is_err();
                    if tx.send(b.map(|(x, y)| (start, x, y))).is_err() || failed {
                        return;
                    }
                }
            });
            for b in rx {
                let (start, x, y) = b?;
                each(start, x, y);
            }
            Ok(())
        })
    }

    /// One evaluation pass over `split` with running batch-norm statistics: primary top-1
    /// accuracy (NaN when not asked for or without images) and, with `slots`, the generator's
    /// slot usage (None without a generator or images).
    fn eval_pass(
        &self,
        split: Split,
        accuracy: bool,
        slots: bool,
    ) -> Result<(f64, Option<GeneratorStats>), TrainError> {
        let ds = self.dataset(split);
        let g = self.generator().filter(|_| slots);
        if ds.is_empty() || (!accuracy && g.is_none()) {
            return Ok((f64::NAN, None));
        }
        let h = &self.data.hierarchy;
        let mut right = 0;
        let mut counts = vec![0usize; h.num_aux()];
        let mut sample_entropy = 0.0;
        let mut counted = 0usize;
        let mut tally = g
            .filter(|g| g.weighted)
            .map(|_| WeightTally::new(h.num_primary()));
        tch::no_grad(|| {
            self.eval_batches(split, |start, x, y| {
                if accuracy {
                    right += correct(
                        &self
                            .f
                            .forward_with(&x, &self.f.store.params, BatchNorm::Running, false)
                            .primary,
                        &y,
                    );
                }
                let Some(g) = g else {
                    return;
                };
                let out = g.outputs(&x, &y, BatchNorm::Running);
                if let (Some(tally), Some(w)) = (tally.as_mut(), &out.weights) {
                    let w = Vec::<f64>::try_from(&w.to_kind(Kind::Double)).expect("weights");
                    for (i, w) in (start..).zip(w) {
                        tally.add(w, ds.labels[i]);
                    }
                }
                let p = out.labels.to_kind(Kind::Double);
                let argmax = Vec::<i64>::try_from(&p.argmax(-1, false)).expect("argmax");
                let ent = Vec::<f64>::try_from(&-(&p * (&p + 1e-30).log()).sum_dim_intlist(
                    -1,
                    false,
                    Kind::Double,
                ))
                .expect("entropy");
                for (i, (&slot, e)) in (start..).zip(argmax.iter().zip(&ent)) {
                    counts[slot as usize] += 1;
                    let psi = h.psi()[ds.labels[i]];
                    if psi > 1 {
                        sample_entropy += e / (psi as f64).ln();
                        counted += 1;
                    }
                }
            })
        })?;
        if let Some(group) = self.group.as_deref() {
            // Counts of every rank's share; the sums are exact in f64 below 2^53.
            let mut all: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
            all.extend([right as f64, sample_entropy, counted as f64]);
            if let Some(t) = tally.as_mut() {
                let mut flat = t.flat();
                sum_f64(Some(group), &mut flat)?;
                *t = WeightTally::from_flat(&flat, h.num_primary());
            }
            sum_f64(Some(group), &mut all)?;
            counted = all.pop().expect("counted") as usize;
            sample_entropy = all.pop().expect("entropy");
            right = all.pop().expect("right") as i64;
            counts = all.into_iter().map(|c| c as usize).collect();
        }
        let acc = if accuracy {
            right as f64 / ds.len() as f64
        } else {
            f64::NAN
        };
        let stats = g.map(|_| GeneratorStats {
            usage_entropy: (0..h.num_primary())
                .map(|k| normalised_entropy(&counts[h.slots(k)]))
                .collect(),
            usage_counts: counts,
            sample_entropy: if counted == 0 {
                0.0
            } else {
                sample_entropy / counted as f64
            },
            weights: tally.as_ref().and_then(WeightTally::stats),
        });
        Ok((acc, stats))
    }
}

/// The parts of a [`Trainer`] that a training step uses, borrowed apart from the training
/// data that the batch thread reads.
struct Nets<'a> {
    config: &'a TrainConfig,
    data: &'a PreparedData,
    f: &'a MultiTaskNet,
    g: Option<&'a mut Generator>,
    opt_f: &'a mut Sgd,
    kind: Kind,
    group: Option<&'a Group>,
    skip_g_reduce: bool,
}

impl<'a> Nets<'a> {
    /// This rank's part of a batch, in a data-parallel run.
    fn parallel(&self, b: &Batch) -> Option<DataParallel<'a>> {
        let skip_g_reduce = self.skip_g_reduce;
        self.group.map(|group| DataParallel {
            group,
            share: b.n as f64 / b.global_n as f64,
            skip_g_reduce,
        })
    }

    fn losses(&self) -> LossConfig {
        LossConfig {
            gamma: self.config.focal_gamma,
            lambda: self.config.effective_entropy_weight(),
            sample_entropy: self.config.effective_sample_entropy_weight(),
            weight_mean_penalty: self.config.effective_weight_mean_penalty(),
        }
    }

    /// One training step on a batch: stage 1 with the method's auxiliary target, or a whole
    /// `interleaved` / `fused` iteration for methods with a generator.
    fn train_step(
        &mut self,
        b: &Batch,
        lr: LearningRates,
        acc: &mut Accum,
    ) -> Result<(), TrainError> {
        let losses = self.losses();
        let batch = meta::Batch::new(&b.x, &b.y);
        let dp = self.parallel(b);
        let share = dp.as_ref().map_or(1.0, |d| d.share);
        let iteration: Option<IterationDp> = match self.config.schedule {
            Schedule::Interleaved => Some(interleaved_step_dp),
            Schedule::Fused => Some(fused_step_dp),
            Schedule::Reference => None,
        };
        if let (Some(step), Some(g)) = (iteration, self.g.as_deref_mut()) {
            let mode = self.config.meta_gradient;
            let (s, mg) = step(self.f, self.opt_f, g, batch, lr, losses, mode, dp.as_ref())?;
            acc.add_stage1(s, b.n, share);
            acc.add_meta(mg, share);
            return Ok(());
        }
        let target = match (self.config.method, self.g.as_deref()) {
            (Method::Single, _) => AuxTarget::None,
            (Method::Random | Method::Human, _) => {
                let slots = b.slots.as_ref().expect("fixed labels for random/human");
                AuxTarget::Fixed(one_hot(slots, self.data.hierarchy.num_aux(), self.kind))
            }
            (Method::Maxl | Method::MaxlNoEntropy | Method::MaxlWeighted, g) => {
                AuxTarget::Generator(&g.expect("MAXL's methods have a generator").net)
            }
        };
        let s = stage1_dp(self.f, self.opt_f, target, batch, lr.f, losses, dp.as_ref())?;
        acc.add_stage1(s, b.n, share);
        Ok(())
    }

    /// Trains on the epoch's batches as the batch thread sends them, reporting progress after
    /// each optimiser step; the number of stage-1 steps taken.
    fn train_batches(
        &mut self,
        rx: Receiver<Result<Batch, TrainError>>,
        lr: LearningRates,
        acc: &mut Accum,
        total: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<usize, TrainError> {
        let (mut done, mut steps_done) = (0, 0);
        for b in rx {
            let b = b?;
            match b.phase {
                Phase::Train => {
                    self.train_step(&b, lr, acc)?;
                    steps_done += 1;
                }
                Phase::Meta => self.stage2(&b, lr, acc)?,
                Phase::Refresh => {
                    // The reference schedule changes θ2 only after stage 1, which is where
                    // g's running statistics were last updated: evaluation and export then
                    // see statistics of the weights they use.
                    if let Some(g) = self.g.as_deref() {
                        let _ = tch::no_grad(|| g.net.forward(&b.x, &b.y, BatchNorm::BatchUpdate));
                    }
                    continue;
                }
            }
            done += 1;
            progress(done, total);
        }
        Ok(steps_done)
    }

    /// Stage 2 of the `reference` schedule on a batch, α = θ1's learning rate.
    fn stage2(&mut self, b: &Batch, lr: LearningRates, acc: &mut Accum) -> Result<(), TrainError> {
        let losses = self.losses();
        let dp = self.parallel(b);
        let share = dp.as_ref().map_or(1.0, |d| d.share);
        let Some(g) = self.g.as_deref_mut() else {
            return Ok(());
        };
        let (batch, mode) = (meta::Batch::new(&b.x, &b.y), self.config.meta_gradient);
        let mg = stage2_dp(self.f, g, batch, lr, losses, mode, dp.as_ref())?;
        acc.add_meta(mg, share);
        Ok(())
    }
}

/// Batches the batch thread keeps ready ahead of the training thread.
const PREFETCH: usize = 2;

/// Which part of an epoch a batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Stage 1, or a whole interleaved / fused iteration.
    Train,
    /// Stage 2 of the reference schedule.
    Meta,
    /// The reference schedule's refresh of g's running statistics.
    Refresh,
}

struct Batch {
    phase: Phase,
    /// Images in the batch (this rank's part of it, in a data-parallel run).
    n: usize,
    /// Images in the global batch (all ranks' parts).
    global_n: usize,
    x: Tensor,
    y: Tensor,
    /// The images' fixed auxiliary slots (`random` and `human`), i64 [B].
    slots: Option<Tensor>,
}

/// How training batches are made from the training set.
struct BatchSource<'a> {
    ds: &'a Dataset,
    fixed_aux: Option<&'a [usize]>,
    /// The data on the device, when batches are made there.
    resident: Option<Resident>,
    maker: BatchMaker,
    augment: Option<Augment>,
    /// This process's rank and the number of ranks: a rank takes its shard of each batch.
    rank: usize,
    world: usize,
}

impl BatchSource<'_> {
    /// The batch of `indices`, augmented as configured (drawing from `rng`), on the device.
    /// A streamed training set's images are decoded here, on the batch thread.
    fn batch(
        &self,
        phase: Phase,
        indices: &[usize],
        rng: &mut StdRng,
    ) -> Result<Batch, TrainError> {
        let size = (self.ds.height, self.ds.width);
        // Drawn for the whole global batch, so that every rank's random stream stays the
        // one-process run's; then this rank's shard.
        let placements = placements(self.augment, indices.len(), size, rng);
        let global_n = indices.len();
        let part = shard(global_n, self.rank, self.world);
        let (indices, placements) = (&indices[part.clone()], &placements[part]);
        let (x, y, slots) = match &self.resident {
            Some(r) => {
                let b = r.batch(&r.train, indices, placements)?;
                (b.x, b.y, b.slots)
            }
            None => {
                let (x, y) = self.maker.make(self.ds, indices, placements)?;
                let slots = self.fixed_aux.map(|fixed| {
                    let s: Vec<i64> = indices.iter().map(|&i| fixed[i] as i64).collect();
                    Tensor::from_slice(&s).to_device(self.maker.device)
                });
                (x, y, slots)
            }
        };
        Ok(Batch {
            phase,
            n: indices.len(),
            global_n,
            x,
            y,
            slots,
        })
    }

    /// Makes the epoch's batches in order and sends them to the training thread: stage 1's
    /// `first`, then for the reference schedule stage 2's and the refresh of g's statistics.
    /// Stops at the first failed batch or when the training thread has stopped receiving.
    fn send_epoch(
        &self,
        first: &[Vec<usize>],
        reference: bool,
        (shuffle, batch_size): (bool, usize),
        rng: &mut StdRng,
        tx: SyncSender<Result<Batch, TrainError>>,
    ) {
        let send = |phase, idx: &[usize], rng: &mut StdRng| {
            let b = self.batch(phase, idx, rng);
            let failed = b.is_err();
            tx.send(b).is_ok() && !failed
        };
        for idx in first {
            if !send(Phase::Train, idx, rng) {
                return;
            }
        }
        if reference {
            // The authors' schedule: a second full pass over freshly shuffled,
            // augmented batches (as many as stage 1 took), then g's statistics at the
            // final θ2 over stage 1's batches.
            let second = shuffled_batches(self.ds.len(), shuffle, batch_size, self.world, rng);
            for idx in second.iter().take(first.len()) {
                if !send(Phase::Meta, idx, rng) {
                    return;
                }
            }
            for idx in first {
                if !send(Phase::Refresh, idx, rng) {
                    return;
                }
            }
        }
    }
}

/// The epoch's batches of `n` training images: shuffled when configured, without a last batch
/// of one image (batch norm needs more than one sample per channel in training mode) — with
/// `world` ranks, without a last batch that leaves a rank fewer than two.
fn shuffled_batches(
    n: usize,
    shuffle: bool,
    batch_size: usize,
    world: usize,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(rng);
    }
    order
        .chunks(batch_size)
        .filter(|c| c.len() >= 2 * world)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Sums of the epoch's training losses and correct predictions, kept on the device.
struct Accum {
    primary: Tensor,
    aux: Option<Tensor>,
    meta: Tensor,
    reg: Tensor,
    correct: Tensor,
    seen: usize,
    batches: usize,
    meta_batches: usize,
}

/// [`Accum`] read back: means per batch, NaN where nothing was summed.
struct EpochSums {
    primary: f64,
    aux: f64,
    meta: f64,
    regulariser: f64,
    train_acc: f64,
}

impl Accum {
    fn new(device: Device) -> Self {
        let zero = |kind| Tensor::zeros([], (kind, device));
        Accum {
            primary: zero(Kind::Double),
            aux: None,
            meta: zero(Kind::Double),
            reg: zero(Kind::Double),
            correct: zero(Kind::Int64),
            seen: 0,
            batches: 0,
            meta_batches: 0,
        }
    }

    /// Adds a step's stage-1 measurements on `n` images; `share`: this rank's share of the
    /// global batch (1 in a single process), the weight of its losses in the ranks' sum.
    fn add_stage1(&mut self, s: StageOne, n: usize, share: f64) {
        tch::no_grad(|| {
            self.primary += s.primary_loss * share;
            if let Some(a) = s.aux_loss {
                let sum = self
                    .aux
                    .get_or_insert_with(|| a.zeros_like().to_kind(Kind::Double));
                *sum += a * share;
            }
            self.correct += s.correct;
        });
        self.seen += n;
        self.batches += 1;
    }

    fn add_meta(&mut self, mg: MetaGradient, share: f64) {
        tch::no_grad(|| {
            self.meta += mg.loss * share;
            self.reg += mg.regulariser * share;
        });
        self.meta_batches += 1;
    }

    /// The sums read back (and, in a data-parallel run, summed across ranks: each rank's
    /// losses were weighted by its share of each batch) as means per batch.
    fn read(&self, group: Option<&Group>) -> Result<EpochSums, TrainError> {
        let aux = self.aux.as_ref().map_or(f64::NAN, |t| t.double_value(&[]));
        let mut sums = [
            self.primary.double_value(&[]),
            aux,
            self.meta.double_value(&[]),
            self.reg.double_value(&[]),
            self.correct.int64_value(&[]) as f64,
            self.seen as f64,
        ];
        sum_f64(group, &mut sums)?;
        let [primary, aux, meta, reg, correct, seen] = sums;
        let mean = |sum: f64, n: usize| if n > 0 { sum / n as f64 } else { f64::NAN };
        Ok(EpochSums {
            primary: mean(primary, self.batches),
            aux: mean(aux, self.batches),
            meta: mean(meta, self.meta_batches),
            regulariser: mean(reg, self.meta_batches),
            train_acc: correct / seen.max(1.0),
        })
    }
}

/// How batches are made on the host: normalised, at the network's input size, in the training
/// kind, on the training device.
#[derive(Clone, Copy)]
struct BatchMaker {
    norm: Normalize,
    /// The network's input (rows, columns).
    out: (usize, usize),
    kind: Kind,
    device: Device,
}

impl BatchMaker {
    /// Images [N, C, H, W] and primary labels \[N\] of `indices` of `ds`, each placed as
    /// `placements` says, on the device. A streamed dataset's images are decoded first (in
    /// parallel); an unreadable file fails the batch, naming it.
    fn make(
        &self,
        ds: &Dataset,
        indices: &[usize],
        placements: &[Placement],
    ) -> Result<(Tensor, Tensor), TrainError> {
        let loaded;
        let local: Vec<usize>;
        let (src, indices) = if ds.is_streamed() {
            loaded = ds.load(indices)?;
            local = (0..indices.len()).collect();
            (&loaded, local.as_slice())
        } else {
            (ds, indices)
        };
        let pixels = assemble_sized(src, indices, self.norm, placements, self.out);
        let x = Tensor::from_slice(&pixels)
            .reshape([
                indices.len() as i64,
                src.channels as i64,
                self.out.0 as i64,
                self.out.1 as i64,
            ])
            .to_kind(self.kind)
            .to_device(self.device);
        let labels: Vec<i64> = indices.iter().map(|&i| src.labels[i] as i64).collect();
        Ok((x, Tensor::from_slice(&labels).to_device(self.device)))
    }
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
