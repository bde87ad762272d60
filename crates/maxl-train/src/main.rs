//! `maxl-train`: trains a MAXL model (or a baseline) and writes a run directory; `maxl-train
//! bench` times training iterations.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use maxl_core::config::{DatasetKind, MetaGradientMode, Method, Schedule, TrainConfig};
use maxl_train::resident::DataPlacement;
use maxl_train::runner::{self, Outcome, Start};

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
    Fused,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetaGradientArg {
    DoubleBackward,
    Jvp,
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetArg {
    FashionMnist,
    Idx,
    Cifar10,
    Cifar100,
    ImageFolder,
    Csv,
}

/// Where training batches are made (train and compare).
#[derive(Args)]
struct PlacementArgs {
    /// Where training batches are made: device (the images are uploaded once, zero-padded for
    /// the crops, and every batch is cropped, flipped and normalised there), host (assembled on
    /// a second thread and copied over), or auto (device on a GPU when the images take at most
    /// 1 GiB, host otherwise). The batches are the same numbers either way.
    #[arg(long, value_enum, default_value = "auto")]
    data_placement: DataPlacement,
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
    /// Time training steps on synthetic data: ms per single-task step and per MAXL iteration
    /// for each schedule × meta-gradient mode, each in its own process (peak memory per mode),
    /// medians of interleaved repeats, as ratios to the single-task step.
    Bench(BenchArgs),
    /// Run an experiment: every run of an experiment file × its seeds (finished runs are
    /// skipped, interrupted ones continue), then write results.md, results.csv and plots.
    Compare(CompareArgs),
    /// Regenerate results.md, results.csv, test_accuracy.png and slot_usage.png of an
    /// experiment directory from its finished runs.
    Results(ResultsArgs),
    /// Write images of a dataset's test split as an image folder OUT/<class>/<index>.png (for
    /// example to try maxl-label on real data).
    DumpImages(DumpArgs),
    /// Export a run's checkpoint to ONNX (primary.onnx, label_generator.onnx) with its manifest
    /// maxl.yaml.
    Export(ExportArgs),
}

#[derive(Args)]
struct CompareArgs {
    /// Experiment file (YAML: seeds, baseline, base config, runs); see configs/.
    experiment: PathBuf,
    /// Output directory (default experiments/<file stem>); one run directory per run and seed.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Only these seeds (comma-separated), instead of the file's.
    #[arg(long, value_name = "S,S,…", value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Only these runs (comma-separated names), with the baseline and the runs their match_time
    /// reads (finished runs are skipped).
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Epochs for every run (quick versions of an experiment).
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// A seeded, class-balanced subset of N training images for every run.
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// A seeded, class-balanced subset of N test images for every run.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Where to train: cpu, cuda or auto.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    placement: PlacementArgs,
    /// libtorch CPU threads.
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
    /// Only errors on stderr; no progress bars.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ResultsArgs {
    /// An experiment directory written by `maxl-train compare`.
    dir: PathBuf,
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
    /// epoch, as the authors' code), interleaved (both stages per batch) or fused (one gradient
    /// of L1 per batch serves both stages; a different algorithm, needs plain SGD for θ1).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// How stage 2 computes the exact meta-gradient: double-backward (through the
    /// create_graph gradient) or jvp (one forward-mode product, no second-order graph; same
    /// numbers, less time and memory).
    #[arg(long, value_enum)]
    meta_gradient: Option<MetaGradientArg>,
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
    /// Dataset format: fashion-mnist (IDX), idx (any MNIST-layout IDX directory), cifar10, cifar100 (binary versions), image-folder
    /// (DIR/<class>/… or DIR/<coarse>/<fine>/…), csv (lines `path,label[,fine_label]`).
    #[arg(long, value_enum)]
    dataset: Option<DatasetArg>,
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
    /// Where to train: cpu, cuda (fails when libtorch sees no GPU) or auto (cuda if available).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[command(flatten)]
    placement: PlacementArgs,
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
    /// Times the whole set of modes is run, interleaved (medians are reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Only these modes (comma-separated): single, reference-double-backward, reference-jvp,
    /// interleaved-double-backward, interleaved-jvp, fused-double-backward, fused-jvp.
    #[arg(long, value_name = "MODE,…", value_delimiter = ',')]
    modes: Option<Vec<String>>,
    /// Print one JSON object per mode (median ms, every repeat, peak RSS) instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of timing: compare the jvp and the double-backward meta-gradient of one batch
    /// (f32, fresh weights, the preset and device given) and fail when they differ by more than
    /// 1e-4 of the gradient's largest magnitude.
    #[arg(long)]
    check_jvp: bool,
    /// Time one mode in this process and print one JSON line (used by the parent process).
    #[arg(long, hide = true, value_name = "MODE")]
    worker: Option<String>,
    /// Where to run: cpu, cuda or auto.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// libtorch CPU threads.
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
}

fn main() -> ExitCode {
    let allocator_tuned = maxl_train::keep_freed_memory();
    let cli = Cli::parse();
    let quiet = cli.train.quiet || matches!(&cli.command, Some(Command::Compare(c)) if c.quiet);
    let level = if quiet { "error" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if !allocator_tuned {
        tracing::debug!("the allocator did not take maxl-train's settings (not glibc?)");
    }
    let result = match cli.command {
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Compare(args)) => compare(args),
        Some(Command::Results(args)) => results(args),
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
            ScheduleArg::Fused => Schedule::Fused,
        };
    }
    if let Some(m) = a.meta_gradient {
        c.meta_gradient = match m {
            MetaGradientArg::DoubleBackward => MetaGradientMode::DoubleBackward,
            MetaGradientArg::Jvp => MetaGradientMode::Jvp,
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
            DatasetArg::Idx => DatasetKind::Idx,
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
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = device(a.device)?;
    let start = match &a.resume {
        Some(dir) => Start::Resume {
            dir: dir.clone(),
            epochs: a.epochs,
        },
        None => {
            let config = resolve_config(&a)?;
            let out = a.out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!("{}-{}", config.method.name(), utc_stamp()))
            });
            Start::New {
                config: Box::new(config),
                out,
            }
        }
    };
    let Outcome {
        trainer,
        out,
        state,
        last,
    } = runner::run(
        start,
        (device, a.placement.data_placement),
        a.max_steps,
        a.quiet,
    )?;
    let Some(last) = last else {
        println!(
            "{}: nothing to do, the run already has {} epochs",
            trainer.config.method.name(),
            state.epochs_done
        );
        return Ok(());
    };
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

fn compare(a: CompareArgs) -> anyhow::Result<()> {
    use maxl_train::compare::{self, Experiment, Overrides};
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = device(a.device)?;
    let overrides = Overrides {
        seeds: a.seeds,
        only: a.only,
        epochs: a.epochs,
        train_limit: a.train_limit,
        test_limit: a.test_limit,
    };
    let whole = Experiment::load(&a.experiment)?;
    let record = whole.clone().recorded(&overrides, &a.experiment)?;
    let e = whole.with_overrides(&overrides, &a.experiment)?;
    let out = a
        .out
        .unwrap_or_else(|| maxl_train::results::default_out(&a.experiment));
    compare::run_all(
        &e,
        &record,
        &a.experiment,
        &out,
        (device, a.placement.data_placement),
        a.quiet,
    )?;
    let table = maxl_train::results::write(&out)?;
    println!("{table}");
    println!(
        "results in {}: results.md, results.csv, test_accuracy.png, slot_usage.png",
        out.display()
    );
    Ok(())
}

fn results(a: ResultsArgs) -> anyhow::Result<()> {
    let table = maxl_train::results::write(&a.dir)?;
    println!("{table}");
    Ok(())
}

fn dump_images(a: DumpArgs) -> anyhow::Result<()> {
    let need = || {
        a.data
            .as_deref()
            .context("--data is required for this dataset")
    };
    let test = match a.dataset {
        DatasetArg::FashionMnist => maxl_data::idx::fashion_mnist(a.data.as_deref())?.test,
        DatasetArg::Idx => maxl_data::idx::idx_dir(need()?, None)?.test,
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
    use maxl_train::bench::{BenchConfig, BenchMode, BenchReport, ModeResult, median};
    let arch =
        maxl_core::Architecture::preset(&a.preset).map_err(|e| anyhow::anyhow!("--preset: {e}"))?;
    if a.batch_size < 2 || a.iters == 0 || a.classes == 0 || a.psi_per_class == 0 || a.repeats == 0
    {
        bail!("--batch-size must be ≥ 2 and --iters, --repeats, --classes, --psi-per-class ≥ 1");
    }
    let modes: Vec<BenchMode> = match &a.modes {
        None => BenchMode::all(),
        Some(names) => names
            .iter()
            .map(|n| {
                BenchMode::parse(n).with_context(|| {
                    format!(
                        "--modes: unknown mode `{n}` (one of: {})",
                        BenchMode::all()
                            .iter()
                            .map(|m| m.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let config = |arch| -> anyhow::Result<BenchConfig> {
        Ok(BenchConfig {
            arch,
            batch_size: a.batch_size,
            classes: a.classes,
            psi_per_class: a.psi_per_class,
            iters: a.iters,
            warmup: a.warmup,
            device: device(a.device)?,
        })
    };
    if a.check_jvp {
        if let Some(n) = a.threads {
            tch::set_num_threads(n);
        }
        let c = config(arch)?;
        let d = maxl_train::bench::jvp_difference(&c)?;
        const BOUND: f64 = 1e-4;
        println!(
            "jvp vs double-backward, preset {}, batch {}, f32, {:?}: max |difference| / max |meta-gradient| = {d:.2e} (bound {BOUND:.0e})",
            a.preset, a.batch_size, c.device
        );
        if d.is_nan() || d > BOUND {
            bail!("the jvp meta-gradient differs from the double-backward one by {d:.2e}");
        }
        return Ok(());
    }
    if let Some(name) = &a.worker {
        let mode =
            BenchMode::parse(name).with_context(|| format!("--worker: unknown mode `{name}`"))?;
        if let Some(n) = a.threads {
            tch::set_num_threads(n);
        }
        let c = config(arch)?;
        let ms = maxl_train::bench::time_mode(&c, mode)?;
        let rss = maxl_train::bench::peak_rss_kib().unwrap_or(0);
        let gpu = match c.device {
            tch::Device::Cuda(i) => maxl_train::bench::cuda_peak_bytes(i)?.to_string(),
            _ => "null".into(),
        };
        println!(
            "{{\"mode\": \"{name}\", \"ms\": {ms:.4}, \"peak_rss_kib\": {rss}, \"peak_gpu_bytes\": {gpu}}}"
        );
        return Ok(());
    }
    // Every mode in its own process, the set repeated and interleaved.
    let exe = std::env::current_exe().context("cannot find this executable to run the modes")?;
    let mut results: Vec<ModeResult> = modes
        .iter()
        .map(|&mode| ModeResult {
            mode,
            ms: Vec::new(),
            peak_rss_kib: None,
            peak_gpu_bytes: None,
        })
        .collect();
    let bar = indicatif::ProgressBar::new((a.repeats * modes.len()) as u64);
    for _ in 0..a.repeats {
        for r in results.iter_mut() {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["bench", "--worker", &r.mode.name(), "--preset", &a.preset]);
            for (flag, v) in [
                ("--batch-size", a.batch_size),
                ("--classes", a.classes),
                ("--psi-per-class", a.psi_per_class),
                ("--iters", a.iters),
                ("--warmup", a.warmup),
            ] {
                cmd.args([flag, &v.to_string()]);
            }
            if let Some(d) = a.device.to_possible_value() {
                cmd.args(["--device", d.get_name()]);
            }
            if let Some(n) = a.threads {
                cmd.args(["--threads", &n.to_string()]);
            }
            let out = cmd.output().context("cannot start a bench process")?;
            if !out.status.success() {
                bail!(
                    "{}: {}",
                    r.mode.name(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("failed")
                );
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(line.trim()).with_context(|| {
                    format!("{}: unreadable result `{}`", r.mode.name(), line.trim())
                })?;
            r.ms.push(v["ms"].as_f64().context("no ms")?);
            let rss = v["peak_rss_kib"].as_u64().filter(|&k| k > 0);
            r.peak_rss_kib = r.peak_rss_kib.max(rss);
            r.peak_gpu_bytes = r.peak_gpu_bytes.max(v["peak_gpu_bytes"].as_u64());
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if a.json {
        for r in &results {
            let all: Vec<String> = r.ms.iter().map(|m| format!("{m:.4}")).collect();
            println!(
                "{{\"impl\": \"rust\", \"mode\": \"{}\", \"ms\": {:.4}, \"repeats\": [{}], \"peak_rss_mib\": {:.1}, \"peak_gpu_mib\": {}}}",
                r.mode.name(),
                median(&r.ms),
                all.join(", "),
                r.peak_rss_kib.unwrap_or(0) as f64 / 1024.0,
                r.peak_gpu_bytes
                    .map_or("null".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
            );
        }
        return Ok(());
    }
    println!(
        "preset {} ({}×{}×{}), batch {}, {} classes × ψ {}, device {:?}, {} timed steps per process, medians of {} interleaved repeats",
        a.preset,
        arch.input.channels,
        arch.input.height,
        arch.input.width,
        a.batch_size,
        a.classes,
        a.psi_per_class,
        device(a.device)?,
        a.iters,
        a.repeats
    );
    print!("{}", BenchReport(results));
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
