//! `maxl-label`: auxiliary sub-class labels for a dataset, as CSV; `merge` for shards; `bench`.
//! The command line over the `maxl-label` library: arguments, logging, the progress bar, the
//! output and the exit status.

mod bench;
mod label;
mod merge;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "Exit status: 0 when every image was labelled; 1 when an error stopped the \
run, or when some entries could not be labelled (each is listed in --errors, or on stderr without \
it; files ignored because they are not images by name do not count); 2 for a wrong command line.";

/// Label every image of a dataset with the auxiliary sub-class MAXL's label generator assigns
/// it (one of its primary class's ψ slots) and write a CSV with the columns
/// `path,class,class_source,class_probability,aux_slot,aux_label,aux_probability` (the names
/// `maxl-infer predict` uses), plus `aux_distribution` with --probs and `flag` with
/// --min-confidence. `path` is relative to --input (or as written in a list); rows are sorted
/// by it, whatever the threads and batch size.
///
/// Rows stream to OUT.partial, flushed after every batch, with a job file OUT.partial.json; the
/// finished CSV appears under OUT by rename (with OUT.meta.json beside it), so OUT is never
/// half-written. An interrupted run (even SIGKILL) continues with --resume, to a file
/// byte-identical to an uninterrupted run's.
#[derive(Parser)]
#[command(
    name = "maxl-label",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    label: label::LabelArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Combine the finished outputs of `--shard 1/N` … `--shard N/N` into one CSV in path order
    /// (byte-identical to an unsharded run), after checking that all N shards are there and come
    /// from one model with the same options.
    #[command(after_help = EXIT_CODES)]
    Merge(merge::MergeArgs),
    /// Images/s end to end on generated datasets (256×256 JPEGs, 28×28 PNGs), each backend in
    /// its own process, against a Python pipeline (--python) in the same run; peak RSS at N and
    /// at --rss-scale·N images. Build with --release.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = cli.command.is_none() && cli.label.quiet;
    maxl_cli::logging::init(if quiet { "error" } else { "info" });
    // Ok(false): finished, but some entries were not labelled.
    let result = match &cli.command {
        Some(Cmd::Merge(m)) => merge::run(m),
        Some(Cmd::Bench(b)) => bench::run(b),
        None => label::run(&cli.label),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("maxl-label: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use maxl_label::Primary;

    use super::{Cli, Cmd};

    #[test]
    fn the_command_line_is_consistent_and_parses_into_library_values() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "maxl-label",
            "--input",
            "in",
            "--out",
            "out.csv",
            "--primary",
            "predicted",
            "--shard",
            "2/3",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let request = crate::label::request(&cli.label).unwrap();
        assert_eq!(request.primary, Primary::Predicted);
        assert_eq!(request.shard.map(|s| s.to_string()), Some("2/3".into()));
        assert_eq!((request.batch_size, request.probs), (64, false));
        let e = Cli::try_parse_from([
            "maxl-label",
            "--input",
            "in",
            "--out",
            "o",
            "--primary",
            "x",
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("[possible values: given, predicted]"), "{e}");
        let merge = Cli::try_parse_from(["maxl-label", "merge", "--out", "all.csv", "a.csv"]);
        assert!(matches!(merge.unwrap().command, Some(Cmd::Merge(_))));
    }
}
