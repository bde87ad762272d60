//! `maxl-train`: trains a MAXL model (or a baseline) and writes a run directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use maxl_core::config::{Method, Schedule, TrainConfig};
use maxl_train::Trainer;
use maxl_train::run::RunDir;
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

/// Train MAXL's multi-task network and label generator (exact second-order meta-gradient), or a
/// baseline with the same backbone and schedule. With no options: the `small` preset, MAXL,
/// Fashion-MNIST from the Debian package, a few minutes on two CPU cores.
#[derive(Parser)]
#[command(name = "maxl-train", version)]
struct Cli {
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
    /// Number of epochs.
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Seed for weights, split, shuffling and augmentation.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Dataset directory (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Train on only the first N training images (quick runs).
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images (quick runs).
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Run directory to create (default: runs/<method>-<UTC time>). An existing run is never overwritten.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// libtorch CPU threads (default: libtorch's choice, usually one per core).
    #[arg(long, value_name = "N")]
    threads: Option<i32>,
    /// Only errors on stderr; no progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxl-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn resolve_config(cli: &Cli) -> anyhow::Result<TrainConfig> {
    let mut c = match &cli.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(m) = cli.method {
        c.method = match m {
            MethodArg::Maxl => Method::Maxl,
            MethodArg::MaxlNoEntropy => Method::MaxlNoEntropy,
            MethodArg::Single => Method::Single,
            MethodArg::Random => Method::Random,
            MethodArg::Human => Method::Human,
        };
    }
    if let Some(s) = cli.schedule {
        c.schedule = match s {
            ScheduleArg::Reference => Schedule::Reference,
            ScheduleArg::Interleaved => Schedule::Interleaved,
        };
    }
    if let Some(p) = &cli.preset {
        c.model.preset = p.clone();
    }
    c.epochs = cli.epochs.unwrap_or(c.epochs);
    c.batch_size = cli.batch_size.unwrap_or(c.batch_size);
    c.seed = cli.seed.unwrap_or(c.seed);
    if cli.data.is_some() {
        c.dataset.path = cli.data.clone();
    }
    c.dataset.train_limit = cli.train_limit.or(c.dataset.train_limit);
    c.dataset.test_limit = cli.test_limit.or(c.dataset.test_limit);
    c.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(c)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = resolve_config(&cli)?;
    if let Some(n) = cli.threads {
        tch::set_num_threads(n);
    }
    let arch = config
        .model
        .resolve()
        .map_err(|e| anyhow::anyhow!("model: {e}"))?;
    let data = maxl_train::data::prepare(&config, &arch)?;
    info!(
        "{} on {} train / {} validation / {} test images, {} primary classes, ψ = {:?}",
        config.method.name(),
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        data.hierarchy.num_primary(),
        data.hierarchy.psi()
    );
    let out = cli.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!("{}-{}", config.method.name(), utc_stamp()))
    });
    let mut trainer = Trainer::new(config, data, tch::Device::Cpu)?;
    let mut run_dir = RunDir::create(&out, &trainer)?;
    info!("run directory: {}", out.display());
    let start = Instant::now();
    let epochs = trainer.config.epochs;
    let mut last = None;
    for e in 0..epochs {
        let bar = if cli.quiet {
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
        bar.set_message(format!("{}/{epochs}", e + 1));
        let m = trainer.train_epoch(&mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        });
        bar.finish_and_clear();
        run_dir.append(&m)?;
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
        last = Some(m);
    }
    let last = last.context("no epoch ran")?;
    run_dir.save_weights(&trainer)?;
    run_dir.write_summary(&trainer, &last, start.elapsed().as_secs_f64())?;
    println!(
        "{}: primary test accuracy {:.2}% after {} epochs ({:.0}s); run in {}",
        trainer.config.method.name(),
        100.0 * last.test_acc,
        last.epoch,
        start.elapsed().as_secs_f64(),
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
