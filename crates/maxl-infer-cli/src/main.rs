//! `maxl-infer`: runs exported MAXL models (predict, serve, bench, runtime).
//!
//! Exit status: 0 on success; 1 on an error (a model that does not load, a missing library), and
//! when `predict` skipped some images (the others are written; each skip is reported on stderr),
//! as `maxl-label` does; 2 for a command line clap refuses.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use maxl_infer::Backend;
use maxl_infer_cli::args::{BackendArg, ModelArgs, init_logging};
use maxl_infer_cli::bench::{self, BenchOptions};
use maxl_infer_cli::predict::{self, Format, PredictOptions};
use maxl_infer_cli::server::{self, ServeOptions};

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
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// Output format. CSV columns: path,class,class_probability,aux_slot,aux_label,aux_probability;
        /// jsonl adds top_k.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Classes listed in jsonl's top_k.
        #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
        top_k: u16,
        /// Images per model call.
        #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        batch_size: u16,
        /// Image files (PNG or JPEG); `-` reads paths from standard input, one per line.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
    },
    /// Serve the model over HTTP with dynamic batching: POST /v1/predict, POST /v1/label?class=NAME,
    /// GET /v1/model, GET /healthz, GET /metrics. SIGTERM or Ctrl-C stops it gracefully.
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        /// Address to listen on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
        addr: SocketAddr,
        /// Most images in one model call (1 turns batching off).
        #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
        max_batch: u16,
        /// Longest a batch waits for more requests after its first, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 2)]
        max_wait_ms: u64,
        /// Requests that may wait for a worker; beyond it, 503 with Retry-After.
        #[arg(long, value_name = "N", default_value_t = 1024)]
        queue: usize,
        /// Longest a request may wait for its answer, in milliseconds (then 503).
        #[arg(long, value_name = "MS", default_value_t = 10000)]
        timeout_ms: u64,
        /// Largest request body in bytes (then 413).
        #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
        max_body: usize,
        /// Worker threads running the model (default: --sessions for ONNX Runtime, 1 for tract).
        #[arg(long, value_name = "N")]
        workers: Option<usize>,
    },
    /// Measure each backend's throughput and latency at several batch sizes, the session pool's
    /// scaling and the server under load with dynamic batching on and off.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Backends to measure.
        #[arg(
            long = "backends",
            value_enum,
            value_delimiter = ',',
            default_value = "ort-cpu,tract"
        )]
        backends: Vec<BackendArg>,
        /// Batch sizes.
        #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
        batches: Vec<usize>,
        /// Seconds per measurement (at least).
        #[arg(long, value_name = "S", default_value_t = 2.0)]
        seconds: f64,
        /// Concurrent clients for the server measurement (also measured with 1).
        #[arg(long, value_name = "N", default_value_t = 32)]
        clients: usize,
        /// Requests per server measurement.
        #[arg(long, value_name = "N", default_value_t = 3000)]
        requests: usize,
        /// The server's --max-batch when batching is on.
        #[arg(long, value_name = "N", default_value_t = 64)]
        max_batch: usize,
        /// The server's --max-wait-ms when batching is on.
        #[arg(long, value_name = "MS", default_value_t = 2)]
        max_wait_ms: u64,
        /// Skip the server measurements.
        #[arg(long)]
        no_server: bool,
        /// Skip the session-pool measurement.
        #[arg(long)]
        no_pool: bool,
        /// Write the report as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the input images (raw little-endian f32, 64×C×H×W) for scripts/bench_infer.py.
        #[arg(long, value_name = "FILE")]
        save_inputs: Option<PathBuf>,
    },
    /// Load the ONNX Runtime library and report which one was found and how.
    Runtime {
        /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
        #[arg(long = "ort-lib", value_name = "FILE")]
        ort_lib: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    init_logging("warn");
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("maxl-infer: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Image paths from the arguments, `-` replaced by standard input's lines.
fn image_paths(args: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.as_os_str() == "-" {
            for line in std::io::stdin().lock().split(b'\n') {
                let mut line = line.context("standard input")?;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if !line.is_empty() {
                    out.push(path_from_bytes(line));
                }
            }
        } else {
            out.push(a);
        }
    }
    Ok(out)
}

#[cfg(unix)]
fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

#[cfg(not(unix))]
fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&b).into_owned())
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Predict {
            model,
            format,
            top_k,
            batch_size,
            images,
        } => {
            let m = model.load()?;
            let paths = image_paths(images)?;
            let bar = if std::io::stderr().is_terminal() {
                ProgressBar::new(paths.len() as u64)
            } else {
                ProgressBar::hidden()
            };
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} images {per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = predict::predict(
                &m,
                &paths,
                PredictOptions {
                    format,
                    top_k: top_k as usize,
                    batch_size: batch_size as usize,
                },
                &mut out,
                &mut |done| bar.set_position(done as u64),
            )?;
            out.flush()?;
            bar.finish_and_clear();
            if summary.skipped > 0 {
                eprintln!(
                    "maxl-infer: {} of {} images were skipped",
                    summary.skipped,
                    paths.len()
                );
            }
            Ok(summary.skipped == 0)
        }
        Command::Serve {
            model,
            addr,
            max_batch,
            max_wait_ms,
            queue,
            timeout_ms,
            max_body,
            workers,
        } => {
            let sessions = model.sessions as usize;
            let m = Arc::new(model.load()?);
            let workers = workers.unwrap_or(if m.backend() == Backend::Tract {
                1
            } else {
                sessions
            });
            let opts = ServeOptions {
                max_batch: max_batch as usize,
                max_wait: Duration::from_millis(max_wait_ms),
                queue,
                timeout: Duration::from_millis(timeout_ms),
                max_body,
                workers,
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let providers = m.providers();
                let server = server::start(m, addr, opts, server::shutdown_signal()).await?;
                // One line on stdout, for scripts and tests that wait for the server.
                println!("listening on http://{}", server.addr);
                tracing::info!("providers: {providers:?}");
                std::io::stdout().flush()?;
                server.wait().await
            })?;
            Ok(true)
        }
        Command::Bench {
            model,
            backends,
            batches,
            seconds,
            clients,
            requests,
            max_batch,
            max_wait_ms,
            no_server,
            no_pool,
            json,
            save_inputs,
        } => {
            let opts = BenchOptions {
                backends: backends.into_iter().map(Backend::from).collect(),
                batches,
                min_time: Duration::from_secs_f64(seconds.max(0.01)),
                clients: clients.max(1),
                requests: requests.max(1),
                max_batch: max_batch.max(1),
                max_wait: Duration::from_millis(max_wait_ms),
                skip_server: no_server,
                skip_pool: no_pool,
            };
            let report = bench::run(
                &model,
                &opts,
                save_inputs.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("{}: cannot write", p.display()))?;
            }
            Ok(true)
        }
        Command::Runtime { ort_lib } => {
            let rt = maxl_infer::OrtRuntime::load(ort_lib.as_deref(), None)?;
            println!(
                "onnxruntime: {} ({})",
                rt.library.path.display(),
                rt.library.source
            );
            println!("build: {}", rt.build_info);
            Ok(true)
        }
    }
}
