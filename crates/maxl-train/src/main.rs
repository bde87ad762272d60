//! `maxl-train`: trains a MAXL model (or a baseline) and writes a run directory; `maxl-train
//! bench` times training iterations.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use maxl_core::config::{DatasetKind, Method, Schedule, TrainConfig};
use maxl_train::checkpoint::{self, TrainState};
use maxl_train::run::RunDir;
use maxl_train::{EpochMetrics, Trainer};
use tracing::info;

#[derive(Clone, Copy, ValueEnum)]
enum MethodArg {
    Maxl,
    MaxlNoEntropy,
    Single,
    Random,
    Human,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Reference,
    Interleaved,
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetArg {
    FashionMnist,
    Cifar10,
    Cifar100,
    ImageFolder,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

/// Train MAXL's multi-task network and label generator (exact second-order meta-gradient), or a
/// baseline with the same backbone and schedule. With no options: the `small` preset, MAXL,
/// Fashion-MNIST from the Debian package, a few minutes on two CPU cores.
#[derive(Parser)]
#[command(name = "maxl-train", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Time training iterations on synthetic data: ms per single-task step and per MAXL
    /// iteration (both schedules), and their ratio.
    Bench(BenchArgs),
    /// Write images of a dataset's test split as an image folder OUT/<class>/<index>.png (for
    /// example to try maxl-label on real data).
    DumpImages(DumpArgs),
    /// Export a run's checkpoint to ONNX (primary.onnx, label_generator.onnx) with its manifest
    /// maxl.yaml.
    Export(ExportArgs),
}

#[derive(Args)]
struct DumpArgs {
    /// Dataset format (fashion-mnist, cifar10, cifar100).
    #[arg(long, value_enum, default_value = "fashion-mnist")]
    dataset: DatasetArg,
    /// Dataset directory (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Images per class.
    #[arg(long, default_value_t = 20)]
    per_class: usize,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// Checkpoint directory of a run: <run>/checkpoints/last or <run>/checkpoints/best.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Output directory (created if needed; files are replaced atomically).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Fold batch norm into the preceding convolutions.
    #[arg(long)]
    fold_batch_norm: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// YAML config file; fields not given keep their defaults. Options below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Training method: maxl, maxl-no-entropy (λ = 0 ablation), single (primary task only),
    /// random (fixed random auxiliary labels), human (the dataset's fine labels).
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// When MAXL's two stages run: reference (stage 1 over the epoch, then stage 2 over the
    /// epoch, as the authors' code) or interleaved (both stages per batch).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
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
    /// Dataset format: fashion-mnist (IDX), cifar10, cifar100 (binary versions), image-folder
    /// (DIR/<class>/… or DIR/<coarse>/<fine>/…), csv (lines `path,label[,fine_label]`).
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
    /// Dataset directory or CSV file (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Image folder / CSV: a separate test folder or list (otherwise 10% is held out, seeded).
    #[arg(long, value_name = "PATH")]
    test_data: Option<PathBuf>,
    /// Train on only the first N training images (quick runs).
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images (quick runs).
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
    /// --epochs, --max-steps, --device, --threads and --quiet may be given with it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "method", "schedule", "preset", "batch_size", "seed", "dataset", "data", "test_data", "train_limit", "test_limit", "no_shuffle", "no_augment", "out"])]
    resume: Option<PathBuf>,
    /// Where to train: cpu, cuda (fails when libtorch sees no GPU) or auto (cuda if available).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// libtorch CPU threads (default: libtorch's choice, usually one per core).
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
    /// After training, export the final networks to ONNX with a manifest into DIR (e.g. models/).
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// With --export: fold batch norm into the preceding convolutions.
    #[arg(long, requires = "export")]
    fold_batch_norm: bool,
    /// Only errors on stderr; no progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Architecture preset to time.
    #[arg(long, default_value = "small")]
    preset: String,
    /// Mini-batch size.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Number of primary classes of the synthetic task.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// ψ for every class.
    #[arg(long, default_value_t = 5)]
    psi_per_class: usize,
    /// Timed iterations per measurement (after warm-up).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Untimed warm-up iterations per measurement.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Where to run: cpu, cuda or auto.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// libtorch CPU threads.
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.train.quiet { "error" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Export(args)) => export_checkpoint(args),
        Some(Command::DumpImages(args)) => dump_images(args),
        None => train(cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxl-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn device(arg: DeviceArg) -> anyhow::Result<tch::Device> {
    Ok(match arg {
        DeviceArg::Cpu => tch::Device::Cpu,
        DeviceArg::Auto => tch::Device::cuda_if_available(),
        DeviceArg::Cuda => {
            if !tch::Cuda::is_available() {
                bail!(
                    "--device cuda: libtorch sees no CUDA device (no GPU, no driver, or a CPU-only libtorch)"
                );
            }
            tch::Device::Cuda(0)
        }
    })
}

fn resolve_config(a: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut c = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = a.method {
        c.method = match m {
            MethodArg::Maxl => Method::Maxl,
            MethodArg::MaxlNoEntropy => Method::MaxlNoEntropy,
            MethodArg::Single => Method::Single,
            MethodArg::Random => Method::Random,
            MethodArg::Human => Method::Human,
        };
    }
    if let Some(s) = a.schedule {
        c.schedule = match s {
            ScheduleArg::Reference => Schedule::Reference,
            ScheduleArg::Interleaved => Schedule::Interleaved,
        };
    }
    if let Some(p) = &a.preset {
        c.model.preset = p.clone();
    }
    c.epochs = a.epochs.unwrap_or(c.epochs);
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.seed = a.seed.unwrap_or(c.seed);
    if let Some(d) = a.dataset {
        c.dataset.kind = match d {
            DatasetArg::FashionMnist => DatasetKind::FashionMnist,
            DatasetArg::Cifar10 => DatasetKind::Cifar10,
            DatasetArg::Cifar100 => DatasetKind::Cifar100,
            DatasetArg::ImageFolder => DatasetKind::ImageFolder,
            DatasetArg::Csv => DatasetKind::Csv,
        };
    }
    if a.data.is_some() {
        c.dataset.path = a.data.clone();
    }
    if a.test_data.is_some() {
        c.dataset.test_path = a.test_data.clone();
    }
    c.dataset.train_limit = a.train_limit.or(c.dataset.train_limit);
    c.dataset.test_limit = a.test_limit.or(c.dataset.test_limit);
    if a.no_shuffle {
        c.dataset.shuffle = false;
    }
    if a.no_augment {
        c.dataset.crop_padding = 0;
        c.dataset.horizontal_flip = false;
    }
    c.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(c)
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let config = match &a.resume {
        Some(dir) => {
            let mut c = TrainConfig::load(&dir.join("config.yaml"))?;
            c.epochs = a.epochs.unwrap_or(c.epochs);
            c
        }
        None => resolve_config(&a)?,
    };
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = device(a.device)?;
    let arch = config
        .model
        .resolve()
        .map_err(|e| anyhow::anyhow!("model: {e}"))?;
    let data = maxl_train::data::prepare(&config, &arch)?;
    info!(
        "{} on {} train / {} validation / {} test images, {} primary classes, ψ = {:?}, device {device:?}",
        config.method.name(),
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        data.hierarchy.num_primary(),
        data.hierarchy.psi()
    );
    let mut trainer = Trainer::new(config, data, device)?;
    let (out, mut run_dir, mut state) = match &a.resume {
        Some(dir) => {
            let state = checkpoint::load(&dir.join("checkpoints").join("last"), &mut trainer)?;
            info!(
                "resuming {} after epoch {} ({} steps)",
                dir.display(),
                state.epochs_done,
                state.steps_done
            );
            (dir.clone(), RunDir::reopen(dir, state.epochs_done)?, state)
        }
        None => {
            let out = a.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "{}-{}",
                    trainer.config.method.name(),
                    utc_stamp()
                ))
            });
            let run_dir = RunDir::create(&out, &trainer)?;
            let state = TrainState {
                format: 1,
                epochs_done: 0,
                steps_done: 0,
                best_val_acc: f64::NEG_INFINITY,
                best_epoch: 0,
            };
            (out, run_dir, state)
        }
    };
    info!("run directory: {}", out.display());
    let last = train_epochs(&mut trainer, &mut run_dir, &mut state, a.max_steps, a.quiet)?;
    let Some(last) = last else {
        println!(
            "{}: nothing to do, the run already has {} epochs",
            trainer.config.method.name(),
            state.epochs_done
        );
        return Ok(());
    };
    run_dir.save_weights(&trainer)?;
    run_dir.write_summary(&trainer, &last, &state)?;
    if let Some(dir) = &a.export {
        let info = maxl_train::export::ExportInfo {
            config: &trainer.config,
            arch: &trainer.arch,
            hierarchy: &trainer.data.hierarchy,
            class_names: &trainer.data.train.class_names,
            epochs: last.epoch,
            primary_test_accuracy: Some(last.test_acc),
        };
        let opts = maxl_onnx::ExportOptions {
            fold_batch_norm: a.fold_batch_norm,
        };
        maxl_train::export::export(dir, &trainer.f, trainer.g.as_ref(), &info, opts)?;
        println!(
            "exported to {} (maxl.yaml, {}{})",
            dir.display(),
            maxl_train::export::PRIMARY_FILE,
            if trainer.g.is_some() {
                format!(", {}", maxl_train::export::LABEL_GENERATOR_FILE)
            } else {
                String::new()
            }
        );
    }
    println!(
        "{}: primary test accuracy {:.2}% after {} epochs ({} steps); best validation {:.2}% at epoch {}; run in {}",
        trainer.config.method.name(),
        100.0 * last.test_acc,
        last.epoch,
        trainer.steps_done,
        100.0 * state.best_val_acc,
        state.best_epoch,
        out.display()
    );
    if let Some(g) = &last.generator {
        let names = trainer.data.train.safe_class_names();
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
    Ok(())
}

/// Trains the remaining epochs, writing metrics and checkpoints after each. Returns the last
/// epoch's metrics (None when there was nothing left to train).
fn train_epochs(
    trainer: &mut Trainer,
    run_dir: &mut RunDir,
    state: &mut TrainState,
    max_steps: Option<usize>,
    quiet: bool,
) -> anyhow::Result<Option<EpochMetrics>> {
    let epochs = trainer.config.epochs;
    let checkpoints = run_dir.path.join("checkpoints");
    std::fs::create_dir_all(&checkpoints)
        .with_context(|| format!("{}: cannot create", checkpoints.display()))?;
    let mut last = None;
    while trainer.epochs_done < epochs && !trainer.steps_exhausted(max_steps) {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {msg} [{bar:30}] {pos}/{len} steps {elapsed_precise} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(format!("{}/{epochs}", trainer.epochs_done + 1));
        let m = trainer.train_epoch(max_steps, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        run_dir.append(&m)?;
        state.epochs_done = trainer.epochs_done;
        state.steps_done = trainer.steps_done;
        // Without a validation set (validation_fraction 0) every epoch is the best so far.
        let best = m.val_acc.is_nan() || m.val_acc > state.best_val_acc;
        if best {
            state.best_val_acc = m.val_acc;
            state.best_epoch = m.epoch;
        }
        checkpoint::save(&checkpoints.join("last"), trainer, state)?;
        if best {
            checkpoint::save(&checkpoints.join("best"), trainer, state)?;
        }
        draw_plots(trainer, &run_dir.path, &m);
        log_epoch(&m, epochs);
        last = Some(m);
    }
    Ok(last)
}

/// Plots are a convenience: a failure to draw them is reported, never fatal to the run.
fn draw_plots(trainer: &Trainer, run_dir: &std::path::Path, m: &EpochMetrics) {
    let mut result = maxl_train::plots::curves(run_dir);
    if let (Ok(()), Some(g)) = (&result, &m.generator) {
        let names = trainer.data.train.safe_class_names();
        result = maxl_train::plots::slot_usage(
            run_dir,
            &names,
            trainer.data.hierarchy.psi(),
            &g.usage_counts,
        );
    }
    if let Err(e) = result {
        tracing::warn!("plots not drawn: {e}");
    }
}

fn log_epoch(m: &EpochMetrics, epochs: usize) {
    let gen_note = m
        .generator
        .as_ref()
        .map(|g| {
            let mean = g.usage_entropy.iter().sum::<f64>() / g.usage_entropy.len() as f64;
            format!(
                ", slot usage entropy {mean:.3}, sample entropy {:.3}",
                g.sample_entropy
            )
        })
        .unwrap_or_default();
    info!(
        "epoch {}/{epochs}: loss {:.4}, train {:.2}%, val {:.2}%, test {:.2}%, {:.1}s{gen_note}",
        m.epoch,
        m.primary_loss,
        100.0 * m.train_acc,
        100.0 * m.val_acc,
        100.0 * m.test_acc,
        m.seconds
    );
}

fn dump_images(a: DumpArgs) -> anyhow::Result<()> {
    let need = || {
        a.data
            .as_deref()
            .context("--data is required for this dataset")
    };
    let test = match a.dataset {
        DatasetArg::FashionMnist => maxl_data::idx::fashion_mnist(a.data.as_deref())?.test,
        DatasetArg::Cifar10 => maxl_data::cifar::cifar10(need()?)?.test,
        DatasetArg::Cifar100 => maxl_data::cifar::cifar100(need()?)?.test,
        DatasetArg::ImageFolder | DatasetArg::Csv => {
            bail!("--dataset: image folders and CSV lists are images already")
        }
    };
    let n = maxl_data::images::write_image_folder(&test, &a.out, a.per_class)?;
    println!("wrote {n} images to {}", a.out.display());
    Ok(())
}

fn export_checkpoint(a: ExportArgs) -> anyhow::Result<()> {
    let opts = maxl_onnx::ExportOptions {
        fold_batch_norm: a.fold_batch_norm,
    };
    let m = maxl_train::export::export_checkpoint(&a.checkpoint, &a.out, opts)?;
    println!(
        "exported {} ({} classes, ψ = {:?}) to {}",
        a.checkpoint.display(),
        m.classes.len(),
        m.psi,
        a.out.display()
    );
    Ok(())
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = device(a.device)?;
    let arch =
        maxl_core::Architecture::preset(&a.preset).map_err(|e| anyhow::anyhow!("--preset: {e}"))?;
    if a.batch_size < 2 || a.iters == 0 || a.classes == 0 || a.psi_per_class == 0 {
        bail!("--batch-size must be ≥ 2 and --iters, --classes, --psi-per-class ≥ 1");
    }
    let report = maxl_train::bench::run(&maxl_train::bench::BenchConfig {
        arch: arch.clone(),
        batch_size: a.batch_size,
        classes: a.classes,
        psi_per_class: a.psi_per_class,
        iters: a.iters,
        warmup: a.warmup,
        device,
    });
    println!(
        "preset {} ({}×{}×{}), batch {}, {} classes × ψ {}, device {device:?}, {} timed iterations each",
        a.preset,
        arch.input.channels,
        arch.input.height,
        arch.input.width,
        a.batch_size,
        a.classes,
        a.psi_per_class,
        a.iters
    );
    print!("{report}");
    Ok(())
}

/// `YYYYmmdd-HHMMSS` in UTC, for default run directory names.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
