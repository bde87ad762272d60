//! The default command: train a new run (or resume one), optionally export it, and print its
//! summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use maxl_cli::choice;
use maxl_core::config::{DatasetKind, MetaGradientMode, Method, Schedule, StreamMode, TrainConfig};
use maxl_train::dist::{Group, Launch};
use maxl_train::{Outcome, RunOptions};

use crate::args::{DistArgs, TargetArgs};
use crate::progress::EpochBar;

#[derive(Args)]
pub struct TrainArgs {
    /// YAML config file; fields not given keep their defaults. Options below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Training method: maxl, maxl-no-entropy (λ = 0 ablation), maxl-weighted (MAXL with a
    /// learned per-image weight of the auxiliary loss), single (primary task only), random
    /// (fixed random auxiliary labels), human (the dataset's fine labels).
    #[arg(long, value_parser = choice::<Method>())]
    method: Option<Method>,
    /// When MAXL's two stages run: reference (stage 1 over the epoch, then stage 2 over the
    /// epoch, as the authors' code), interleaved (both stages per batch) or fused (one gradient
    /// of L1 per batch serves both stages; a different algorithm, needs plain SGD for θ1).
    #[arg(long, value_parser = choice::<Schedule>())]
    schedule: Option<Schedule>,
    /// How stage 2 computes the exact meta-gradient: double-backward (through the
    /// create_graph gradient) or jvp (one forward-mode product, no second-order graph; same
    /// numbers, less time and memory).
    #[arg(long, value_parser = choice::<MetaGradientMode>())]
    meta_gradient: Option<MetaGradientMode>,
    /// Architecture preset: small, vgg16, resnet18, resnet34, resnet50 (ImageNet layout,
    /// 224×224, ImageNet normalisation, resize shorter side 256 then center-crop) or
    /// resnet18-cifar (3×3 stem, no max-pool, 32×32); ignored when the config gives a full
    /// architecture.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// The preset's input size as HxW (e.g. 96x96); a shorter-side resize keeps its ratio to
    /// the crop.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input_size: Option<[usize; 2]>,
    /// The label generator's own preset (default: the multi-task network's architecture, as in
    /// the paper); e.g. resnet18 for a resnet50 network cuts the meta-step's cost.
    #[arg(long, value_name = "NAME")]
    generator_preset: Option<String>,
    /// Initialise the backbone from a torchvision-layout state dict (safetensors; convert a
    /// .pth with scripts/convert_torchvision.py). The classifier fc.* is ignored. Also
    /// initialises the generator's backbone when it has the same architecture.
    #[arg(long, value_name = "FILE")]
    init_from: Option<PathBuf>,
    /// Initialise the generator's backbone from this state dict instead.
    #[arg(long, value_name = "FILE")]
    generator_init_from: Option<PathBuf>,
    /// The backbones' learning rate as a multiple of the heads' (fine-tuning, e.g. 0.1).
    #[arg(long, value_name = "X")]
    backbone_lr_scale: Option<f64>,
    /// Train only the heads for the first N epochs (both backbones frozen).
    #[arg(long, value_name = "N")]
    freeze_backbone_epochs: Option<usize>,
    /// μ, weight of a per-image entropy term in stage 2 (default 0, the paper's objective):
    /// makes each image's auxiliary label confident while λ's term spreads the batch over the
    /// slots — together, the mutual information between image and slot.
    #[arg(long, value_name = "MU")]
    sample_entropy_weight: Option<f64>,
    /// ν, weight of (mean per-image weight − 1)² in stage 2 (`--method maxl-weighted` only;
    /// default 0): keeps the batch-mean weight of the auxiliary loss near 1, so the generator
    /// cannot switch the auxiliary task off wholesale.
    #[arg(long, value_name = "NU")]
    weight_mean_penalty: Option<f64>,
    /// Number of epochs (with --resume: the new total).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Seed for weights, split, shuffling and augmentation.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Dataset format: fashion-mnist (IDX), idx (any MNIST-layout IDX directory), cifar10,
    /// cifar100 (binary versions), image-folder (DIR/<class>/… or DIR/<coarse>/<fine>/…), csv
    /// (lines `path,label[,fine_label]`).
    #[arg(long, value_parser = choice::<DatasetKind>())]
    dataset: Option<DatasetKind>,
    /// Dataset directory or CSV file (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Image folder / CSV: a separate test folder or list (otherwise 10% is held out, seeded).
    #[arg(long, value_name = "PATH")]
    test_data: Option<PathBuf>,
    /// Train on a seeded, class-balanced subset of N training images.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Evaluate on a seeded, class-balanced subset of N test images.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Visit training images in file order every epoch (deterministic mode).
    #[arg(long)]
    no_shuffle: bool,
    /// No random crop (padded or resized) or flip (deterministic mode).
    #[arg(long)]
    no_augment: bool,
    /// Image folder / CSV: auto (decode the images into memory when they fit the memory
    /// budget, else decode each batch's from its files), always (stream) or never (in memory).
    /// The batches, and so the results, are the same either way.
    #[arg(long, value_parser = choice::<StreamMode>())]
    stream: Option<StreamMode>,
    /// Image folder / CSV: the most MiB of decoded images kept in memory before `--stream auto`
    /// streams them (default 4096).
    #[arg(long, value_name = "MB")]
    memory_budget: Option<u64>,
    /// Stop after N stage-1 optimiser steps in total (the last epoch may be partial). With
    /// 0 and --export: export the initialised networks untrained (e.g. to check a converted
    /// checkpoint against its source framework).
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Run directory to create (default: runs/<method>-<UTC time>). An existing run is never overwritten.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its own config.yaml (only
    /// --epochs, --max-steps, --device, --data-placement, --threads, --export,
    /// --fold-batch-norm, --quiet, --nproc-per-node, --dist-backend and --dist-timeout may be
    /// given with it). Under several ranks every rank reads the checkpoint; another number of
    /// ranks than the run started with is allowed (the state is global).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "method", "schedule", "meta_gradient", "preset", "input_size", "generator_preset", "init_from", "generator_init_from", "backbone_lr_scale", "freeze_backbone_epochs", "sample_entropy_weight", "weight_mean_penalty", "batch_size", "seed", "dataset", "data", "test_data", "train_limit", "test_limit", "no_shuffle", "no_augment", "stream", "memory_budget", "out"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    pub dist: DistArgs,
    /// After training, export the final networks to ONNX with a manifest into DIR (e.g. models/).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// With --export: fold batch norm into the preceding convolutions.
    #[arg(long, requires = "export")]
    fold_batch_norm: bool,
    /// Only errors on stderr; no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The config file (or the defaults) with the options applied, not yet validated.
    fn config(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(p) => TrainConfig::load(p)?,
            None => TrainConfig::default(),
        };
        c.method = self.method.unwrap_or(c.method);
        c.schedule = self.schedule.unwrap_or(c.schedule);
        c.meta_gradient = self.meta_gradient.unwrap_or(c.meta_gradient);
        if let Some(p) = &self.preset {
            c.model.preset = p.clone();
        }
        c.model.input_size = self.input_size.or(c.model.input_size);
        if let Some(p) = &self.init_from {
            c.model.init_from = Some(p.clone());
        }
        if self.generator_preset.is_some() || self.generator_init_from.is_some() {
            let g = c.model.generator.get_or_insert_with(Default::default);
            if let Some(p) = &self.generator_preset {
                g.preset = Some(p.clone());
            }
            if let Some(p) = &self.generator_init_from {
                g.init_from = Some(p.clone());
            }
        }
        if let Some(s) = self.backbone_lr_scale {
            c.multitask_optimizer.backbone_lr_scale = s;
            c.generator_optimizer.backbone_lr_scale = s;
        }
        c.freeze_backbone_epochs = self
            .freeze_backbone_epochs
            .unwrap_or(c.freeze_backbone_epochs);
        c.sample_entropy_weight = self
            .sample_entropy_weight
            .unwrap_or(c.sample_entropy_weight);
        c.weight_mean_penalty = self.weight_mean_penalty.unwrap_or(c.weight_mean_penalty);
        c.epochs = self.epochs.unwrap_or(c.epochs);
        c.batch_size = self.batch_size.unwrap_or(c.batch_size);
        c.seed = self.seed.unwrap_or(c.seed);
        c.dataset.kind = self.dataset.unwrap_or(c.dataset.kind);
        if self.data.is_some() {
            c.dataset.path = self.data.clone();
        }
        if self.test_data.is_some() {
            c.dataset.test_path = self.test_data.clone();
        }
        c.dataset.train_limit = self.train_limit.or(c.dataset.train_limit);
        c.dataset.test_limit = self.test_limit.or(c.dataset.test_limit);
        if self.no_shuffle {
            c.dataset.shuffle = false;
        }
        if self.no_augment {
            c.dataset.crop_padding = 0;
            c.dataset.horizontal_flip = false;
            c.dataset.random_resized_crop = false;
        }
        c.dataset.stream = self.stream.unwrap_or(c.dataset.stream);
        c.dataset.memory_budget_mb = self.memory_budget.unwrap_or(c.dataset.memory_budget_mb);
        // maxl_train::train validates it before anything is written.
        Ok(c)
    }
}

/// `HxW` (or `HXW`, `H×W`) as [H, W].
fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("`{s}` is not a size like 224x224");
    let (h, w) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let (h, w) = (
        h.trim().parse().map_err(|_| bad())?,
        w.trim().parse().map_err(|_| bad())?,
    );
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok([h, w])
}

/// `runs/<method>-<YYYYmmdd-HHMMSS>` in UTC.
fn default_out(method: Method) -> PathBuf {
    // 2026-11-30T09:22:47Z: its 14 digits are the stamp.
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = digits.split_at(8);
    PathBuf::from("runs").join(format!("{}-{date}-{time}", method.name()))
}

/// Trains (or resumes) as one process, or as one rank of `launch`.
pub fn run(a: TrainArgs, launch: Option<Launch>) -> anyhow::Result<()> {
    if let Some(n) = a.dist.nproc_per_node.filter(|&n| n > 1) {
        if let Some(l) = &launch {
            anyhow::bail!(
                "--nproc-per-node {n}: this process is already rank {} of {} ({}); drop the flag",
                l.rank,
                l.world,
                l.launcher
            );
        }
        return crate::launch::spawn_ranks(n, a.dist.timeout() + Duration::from_secs(10));
    }
    let (device, group) = join(launch.as_ref(), &a.target, &a.dist)?;
    let writer = group.as_ref().is_none_or(|g| g.rank() == 0);
    let bar = EpochBar::new(a.quiet || !writer);
    let opts = RunOptions {
        device,
        placement: a.target.data_placement,
        max_steps: a.max_steps,
        observer: &bar,
        group: group.as_ref(),
    };
    let outcome = match &a.resume {
        Some(dir) => maxl_train::resume(dir, a.epochs, &opts)?,
        None => {
            let config = a.config()?;
            let out = a.out.clone().unwrap_or_else(|| default_out(config.method));
            maxl_train::train(&config, &out, &opts)?
        }
    };
    if !writer {
        return Ok(());
    }
    // Exported whatever was trained: with --max-steps 0 the initialised networks, untrained.
    if let Some(dir) = &a.export {
        let opts = maxl_onnx::ExportOptions {
            fold_batch_norm: a.fold_batch_norm,
        };
        outcome.export(dir, opts)?;
        let mut files = maxl_train::export::PRIMARY_FILE.to_string();
        if outcome.trainer.g.is_some() {
            files += &format!(", {}", maxl_train::export::LABEL_GENERATOR_FILE);
        }
        println!("exported to {} (maxl.yaml, {files})", dir.display());
    }
    let Some(last) = &outcome.last else {
        if outcome.state.epochs_done == 0 {
            println!(
                "{}: no steps taken (--max-steps 0): the networks are as initialised",
                outcome.trainer.config.method.name()
            );
        } else {
            println!(
                "{}: nothing to do, the run already has {} epochs",
                outcome.trainer.config.method.name(),
                outcome.state.epochs_done
            );
        }
        return Ok(());
    };
    summary(&outcome, last);
    Ok(())
}

/// The training device and, for one rank of a data-parallel run, its process group: rank r
/// trains on CUDA device LOCAL_RANK when asked for CUDA.
pub fn join(
    launch: Option<&Launch>,
    target: &TargetArgs,
    dist: &DistArgs,
) -> anyhow::Result<(tch::Device, Option<Arc<Group>>)> {
    let mut device = target.device()?;
    let Some(l) = launch else {
        return Ok((device, None));
    };
    if let tch::Device::Cuda(_) = device {
        let count = tch::Cuda::device_count() as usize;
        if l.local_rank >= count {
            anyhow::bail!(
                "rank {}: LOCAL_RANK {} but this machine has {count} CUDA devices",
                l.rank,
                l.local_rank
            );
        }
        device = tch::Device::Cuda(l.local_rank);
    }
    tracing::info!(
        "rank {} of {} ({}), store {}:{}",
        l.rank,
        l.world,
        l.launcher,
        l.master_addr,
        l.master_port
    );
    let group = Group::join(l, dist.dist_backend, device, dist.timeout())?;
    Ok((device, Some(Arc::new(group))))
}

fn summary(o: &Outcome, last: &maxl_train::EpochMetrics) {
    let t = &o.trainer;
    println!(
        "{}: primary test accuracy {:.2}% after {} epochs ({} steps); best validation {:.2}% at epoch {}; run in {}",
        t.config.method.name(),
        100.0 * last.test_acc,
        last.epoch,
        t.steps_done,
        100.0 * o.state.best_val_acc,
        o.state.best_epoch,
        o.out.display()
    );
    if let Some(g) = &last.generator {
        let names = t.data.train.safe_class_names();
        let per: Vec<String> = names
            .iter()
            .zip(&g.usage_entropy)
            .map(|(n, e)| format!("{n} {e:.2}"))
            .collect();
        println!(
            "generator slot-usage entropy per class (0 = collapsed, 1 = even): {}",
            per.join(", ")
        );
        println!(
            "generator per-image entropy (1 = uniform noise): {:.3}",
            g.sample_entropy
        );
        if let Some(w) = &g.weights {
            let per: Vec<String> = names
                .iter()
                .zip(&w.class_means)
                .map(|(n, m)| format!("{n} {m:.2}"))
                .collect();
            println!(
                "generator per-image weight of the auxiliary loss (1 = as MAXL): mean {:.3}, p10 {:.3}, median {:.3}, p90 {:.3}; per class: {}",
                w.mean,
                w.p10,
                w.p50,
                w.p90,
                per.join(", ")
            );
        }
    }
}
