//! `maxl-train`: trains a MAXL model (or a baseline) and writes a run directory; its
//! subcommands compare methods, regenerate results, export, dump images and time training
//! steps. Each command's arguments and driver live in the module named for it; the work is the
//! `maxl_train` library's.

mod args;
mod bench;
mod compare;
mod dump;
mod export;
mod launch;
mod progress;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train MAXL's multi-task network and label generator (exact second-order meta-gradient), or a
/// baseline with the same backbone and schedule. With no options: the `small` preset, MAXL,
/// Fashion-MNIST from the Debian package, a few minutes on two CPU cores.
#[derive(Parser)]
#[command(name = "maxl-train", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: train::TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Time training steps on synthetic data: ms per single-task step and per MAXL iteration
    /// for each schedule × meta-gradient mode, each in its own process (peak memory per mode),
    /// medians of interleaved repeats, as ratios to the single-task step.
    Bench(bench::BenchArgs),
    /// Run an experiment: every run of an experiment file × its seeds (finished runs are
    /// skipped, interrupted ones continue), then write results.md, results.csv and plots.
    Compare(compare::CompareArgs),
    /// Regenerate results.md, results.csv, test_accuracy.png and slot_usage.png of an
    /// experiment directory from its finished runs.
    Results(compare::ResultsArgs),
    /// Write images of a dataset's test split as an image folder OUT/<class>/<index>.png (for
    /// example to try maxl-label on real data).
    DumpImages(dump::DumpArgs),
    /// Export a run's checkpoint to ONNX (primary.onnx, label_generator.onnx) with its manifest
    /// maxl.yaml.
    Export(export::ExportArgs),
}

fn main() -> ExitCode {
    let allocator_tuned = maxl_train::keep_freed_memory();
    let cli = Cli::parse();
    let quiet = cli.train.quiet || matches!(&cli.command, Some(Command::Compare(c)) if c.quiet);
    // Read once: whether this process is a rank of a data-parallel run (an unreadable
    // environment is reported by the command that needs it, training).
    let launch = maxl_train::dist::Launch::from_env();
    let rank = launch.as_ref().ok().and_then(Option::as_ref);
    // Ranks other than 0 of a data-parallel run log warnings and errors only.
    let other_rank = rank.is_some_and(|l| l.rank != 0);
    maxl_cli::logging::init(if quiet {
        "error"
    } else if other_rank {
        "warn"
    } else {
        "info"
    });
    if !allocator_tuned {
        tracing::debug!("the allocator did not take maxl-train's settings (not glibc?)");
    }
    let result = match cli.command {
        // Training and the bench's own workers are what runs as ranks; the other commands run as
        // one process and would write the same files from every rank.
        Some(Command::Bench(args)) if args.is_worker() => bench::run(args),
        Some(ref c) if let Some(l) = rank => Err(anyhow::anyhow!(
            "`maxl-train {}` runs as one process, not as a rank of a {}-rank run ({}): start it \
             without torchrun/srun (training runs as ranks: `maxl-train --config …` under the \
             launcher)",
            c.name(),
            l.world,
            l.launcher
        )),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Compare(args)) => compare::run(args),
        Some(Command::Results(args)) => compare::results(args),
        Some(Command::Export(args)) => export::run(args),
        Some(Command::DumpImages(args)) => dump::run(args),
        None => launch
            .map_err(anyhow::Error::from)
            .and_then(|launch| train::run(cli.train, launch)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxl-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Bench(_) => "bench",
            Command::Compare(_) => "compare",
            Command::Results(_) => "results",
            Command::DumpImages(_) => "dump-images",
            Command::Export(_) => "export",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
