//! `maxl-infer`: runs exported MAXL models.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "maxl-infer",
    version,
    about = "Run MAXL's exported primary head and label generator with ONNX Runtime or tract"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the ONNX Runtime library and report which one was found and how.
    Runtime {
        /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
        #[arg(long = "ort-lib", value_name = "FILE")]
        ort_lib: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maxl-infer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Runtime { ort_lib } => {
            let rt = maxl_infer::OrtRuntime::load(ort_lib.as_deref())?;
            println!(
                "onnxruntime: {} ({})",
                rt.library.path.display(),
                rt.library.source
            );
            println!("build: {}", rt.build_info);
            Ok(())
        }
    }
}
