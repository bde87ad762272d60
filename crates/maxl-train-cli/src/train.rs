//! The default command: train a new run (or resume one), optionally export it, and print its
//! summary.

use std::path::PathBuf;

use clap::Args;
use maxl_cli::choice;
use maxl_core::config::{DatasetKind, MetaGradientMode, Method, Schedule, TrainConfig};
use maxl_train::{Outcome, RunOptions};

use crate::args::TargetArgs;
use crate::progress::EpochBar;

#[derive(Args)]
pub struct TrainArgs {
    /// YAML config file; fields not given keep their defaults. Options below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Training method: maxl, maxl-no-entropy (λ = 0 ablation), single (primary task only),
    /// random (fixed random auxiliary labels), human (the dataset's fine labels).
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
    /// Architecture preset (small, vgg16); ignored when the config gives a full architecture.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
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
    /// No random crop or flip (deterministic mode).
    #[arg(long)]
    no_augment: bool,
    /// Stop after N stage-1 optimiser steps in total (the last epoch may be partial).
    #[arg(long, value_name = "N")]
    max_steps: Option<usize>,
    /// Run directory to create (default: runs/<method>-<UTC time>). An existing run is never overwritten.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its own config.yaml (only
    /// --epochs, --max-steps, --device, --data-placement, --threads, --export,
    /// --fold-batch-norm and --quiet may be given with it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "method", "schedule", "meta_gradient", "preset", "batch_size", "seed", "dataset", "data", "test_data", "train_limit", "test_limit", "no_shuffle", "no_augment", "out"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    target: TargetArgs,
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
        }
        // maxl_train::train validates it before anything is written.
        Ok(c)
    }
}

/// `runs/<method>-<YYYYmmdd-HHMMSS>` in UTC.
fn default_out(method: Method) -> PathBuf {
    // 2026-11-30T09:22:47Z: its 14 digits are the stamp.
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let digits: String = now.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = digits.split_at(8);
    PathBuf::from("runs").join(format!("{}-{date}-{time}", method.name()))
}

pub fn run(a: TrainArgs) -> anyhow::Result<()> {
    let bar = EpochBar::new(a.quiet);
    let opts = RunOptions {
        device: a.target.device()?,
        placement: a.target.data_placement,
        max_steps: a.max_steps,
        observer: &bar,
    };
    let outcome = match &a.resume {
        Some(dir) => maxl_train::resume(dir, a.epochs, &opts)?,
        None => {
            let config = a.config()?;
            let out = a.out.clone().unwrap_or_else(|| default_out(config.method));
            maxl_train::train(&config, &out, &opts)?
        }
    };
    let Some(last) = &outcome.last else {
        println!(
            "{}: nothing to do, the run already has {} epochs",
            outcome.trainer.config.method.name(),
            outcome.state.epochs_done
        );
        return Ok(());
    };
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
    summary(&outcome, last);
    Ok(())
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
    }
}
