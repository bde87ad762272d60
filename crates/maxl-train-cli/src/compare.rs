//! `maxl-train compare` (an experiment: runs × seeds, then its results) and `maxl-train
//! results` (the tables and plots again, from the finished runs).

use std::path::PathBuf;

use clap::Args;
use maxl_train::compare::Overrides;

use crate::args::TargetArgs;
use crate::progress::EpochBar;

#[derive(Args)]
pub struct CompareArgs {
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
    #[command(flatten)]
    target: TargetArgs,
    /// Only errors on stderr; no progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
pub struct ResultsArgs {
    /// An experiment directory written by `maxl-train compare`.
    dir: PathBuf,
}

pub fn run(a: CompareArgs) -> anyhow::Result<()> {
    let device = a.target.device()?;
    let overrides = Overrides {
        seeds: a.seeds,
        only: a.only,
        epochs: a.epochs,
        train_limit: a.train_limit,
        test_limit: a.test_limit,
    };
    let out = a
        .out
        .unwrap_or_else(|| maxl_train::default_experiment_dir(&a.experiment));
    let bar = EpochBar::new(a.quiet);
    let table = maxl_train::compare(
        &a.experiment,
        &out,
        &overrides,
        device,
        a.target.data_placement,
        &bar,
    )?;
    println!("{table}");
    println!(
        "results in {}: results.md, results.csv, test_accuracy.png, slot_usage.png",
        out.display()
    );
    Ok(())
}

pub fn results(a: ResultsArgs) -> anyhow::Result<()> {
    println!("{}", maxl_train::results(&a.dir)?);
    Ok(())
}
