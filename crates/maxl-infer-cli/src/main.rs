//! `maxl-infer`: runs exported MAXL models (predict, serve, bench, runtime).
//!
//! Each command's arguments and driver live in the library module named for it: [`predict`],
//! [`server`] (`serve`), [`bench`] and [`runtime`]; this file parses the command line, sets up
//! logging and maps the outcome to the exit status.
//!
//! Exit status: 0 on success; 1 on an error (a model that does not load, a missing library), and
//! when `predict` skipped some images (the others are written; each skip is reported on stderr),
//! as `maxl-label` does; 2 for a command line clap refuses.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use maxl_infer_cli::{bench, predict, runtime, server};

#[derive(Parser)]
#[command(
    name = "maxl-infer",
    version,
    about = "Run MAXL's exported primary head and label generator with ONNX Runtime or tract",
    after_help = "Exit status: 0 success; 1 an error, or some images were skipped (predict); 2 a bad command line.\nLogs: RUST_LOG=info (or debug) on stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify image files in batches: per image the predicted class, its probability and the
    /// label generator's auxiliary slot for it, as CSV (default) or JSON lines.
    Predict(predict::PredictArgs),
    /// Serve the model over HTTP with dynamic batching: POST /v1/predict, POST /v1/label?class=NAME,
    /// GET /v1/model, GET /healthz, GET /metrics. SIGTERM or Ctrl-C stops it gracefully.
    Serve(server::ServeArgs),
    /// Measure each backend's throughput and latency at several batch sizes, the session pool's
    /// scaling and the server under load with dynamic batching on and off.
    Bench(bench::BenchArgs),
    /// Load the ONNX Runtime library and report which one was found and how.
    Runtime(runtime::RuntimeArgs),
}

fn main() -> ExitCode {
    maxl_cli::logging::init("warn");
    let cli = Cli::parse();
    // Ok(false): finished, but `predict` skipped some images.
    let result = match &cli.command {
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => server::run(a).map(|()| true),
        Command::Bench(a) => bench::run(a).map(|()| true),
        Command::Runtime(a) => runtime::run(a).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("maxl-infer: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_command_line_is_consistent_and_parses_each_command() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["maxl-infer", "predict", "--top-k", "3", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Predict(a) if a.top_k == 3 && a.batch_size == 64));
        let cli = Cli::try_parse_from(["maxl-infer", "bench", "--backends", "tract"]).unwrap();
        assert!(matches!(cli.command, Command::Bench(a) if a.batches == [1, 8, 64]));
        assert!(Cli::try_parse_from(["maxl-infer", "serve", "--max-batch", "0"]).is_err());
    }
}
