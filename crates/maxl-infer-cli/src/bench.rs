//! `maxl-infer bench`: what a deployment needs to size itself, measured in one run.
//!
//! * Each backend: images/s and p50/p99 call latency of `classify` (primary head + label
//!   generator for the predicted class) at batch 1, 8 and 64.
//! * The ONNX Runtime session pool: calls/s of 2 threads making batch-1 calls on a 2-session pool
//!   (1 intra-op thread each), against the same threads on a 1-session model behind a `Mutex`.
//! * The server, under a bounded load generator on 127.0.0.1 (C concurrent clients, a fixed
//!   number of requests): requests/s and p50/p99 with dynamic batching on and off.
//!
//! Inputs are deterministic pseudo-random images; `--save-inputs` writes them so that
//! `scripts/bench_infer.py` runs the same model on the same inputs in onnxruntime-python.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use maxl_cli::bench::{Table, quantile};
use maxl_cli::choice;
use maxl_infer::{AuxFor, Backend, Classify, InferError, MaxlModel, ThreadOptions};
use ndarray::{Array4, s};
use serde::Serialize;

use crate::args::ModelArgs;
use crate::server::{self, ServeOptions};

/// The arguments of `maxl-infer bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Backends to measure.
    #[arg(
        long = "backends",
        value_parser = choice::<Backend>(),
        value_delimiter = ',',
        default_value = "ort-cpu,tract"
    )]
    pub backends: Vec<Backend>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub batches: Vec<usize>,
    /// Seconds per measurement (at least).
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub seconds: f64,
    /// Concurrent clients for the server measurement (also measured with 1).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub clients: usize,
    /// Requests per server measurement.
    #[arg(long, value_name = "N", default_value_t = 3000)]
    pub requests: usize,
    /// The server's --max-batch when batching is on.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_batch: usize,
    /// The server's --max-wait-ms when batching is on.
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub max_wait_ms: u64,
    /// Skip the server measurements.
    #[arg(long)]
    pub no_server: bool,
    /// Skip the session-pool measurement.
    #[arg(long)]
    pub no_pool: bool,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the input images (raw little-endian f32, 64×C×H×W) for scripts/bench_infer.py.
    #[arg(long, value_name = "FILE")]
    pub save_inputs: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub backends: Vec<Backend>,
    pub batches: Vec<usize>,
    /// Least time spent on each measurement.
    pub min_time: Duration,
    /// Concurrent clients for the server measurements (each also measured with 1 client).
    pub clients: usize,
    /// Requests per server measurement.
    pub requests: usize,
    pub max_batch: usize,
    pub max_wait: Duration,
    pub skip_server: bool,
    pub skip_pool: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub backend: String,
    pub batch: usize,
    pub calls: usize,
    pub images_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolScaling {
    pub threads: usize,
    pub one_session_calls_per_s: f64,
    pub two_sessions_calls_per_s: f64,
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerLoad {
    pub batching: bool,
    pub max_batch: usize,
    pub max_wait_ms: f64,
    pub clients: usize,
    pub requests: usize,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub cores: usize,
    pub throughput: Vec<Throughput>,
    pub pool: Option<PoolScaling>,
    pub server: Vec<ServerLoad>,
}

/// Deterministic pseudo-random images in [0, 1].
pub fn inputs(n: usize, c: usize, h: usize, w: usize) -> Array4<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    Array4::from_shape_simple_fn((n, c, h, w), || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as u32 & 0xFF) as f32 / 255.0
    })
}

/// Raw little-endian f32, N×C×H×W (the shape is the model's).
pub fn save_inputs(path: &Path, x: &Array4<f32>) -> anyhow::Result<()> {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// p50 and p99 of latencies in seconds, in ms (the harness's one quantile definition).
fn ms(v: Vec<f64>) -> (f64, f64) {
    (quantile(&v, 0.5) * 1e3, quantile(&v, 0.99) * 1e3)
}

fn throughput(
    model: &MaxlModel,
    x: &Array4<f32>,
    batch: usize,
    min_time: Duration,
) -> anyhow::Result<Throughput> {
    let b = x.slice(s![..batch, .., .., ..]);
    let opts = Classify {
        top_k: 1,
        aux: AuxFor::Predicted,
    };
    for _ in 0..3 {
        model.classify(b.view(), &opts)?;
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < min_time || lat.len() < 10 {
        let t = Instant::now();
        model.classify(b.view(), &opts)?;
        lat.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    let calls = lat.len();
    let (p50_ms, p99_ms) = ms(lat);
    Ok(Throughput {
        backend: model.backend().name().into(),
        batch,
        calls,
        images_per_s: (calls * batch) as f64 / total,
        p50_ms,
        p99_ms,
    })
}

/// Calls/s of `threads` threads making batch-1 calls on one shared model for `min_time`; with
/// `lock`, each call holds it (one model behind a `Mutex`, as without a session pool).
fn calls_per_s(
    model: &MaxlModel,
    x: &Array4<f32>,
    threads: usize,
    min_time: Duration,
    lock: Option<&std::sync::Mutex<()>>,
) -> f64 {
    let b = x.slice(s![..1, .., .., ..]);
    let opts = Classify {
        top_k: 1,
        aux: AuxFor::Predicted,
    };
    for _ in 0..3 {
        let _ = model.classify(b.view(), &opts);
    }
    let calls = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while start.elapsed() < min_time {
                    let _held = lock.map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
                    if model.classify(b.view(), &opts).is_ok() {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    calls.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// A PNG of image `i` of `x` (grey or RGB).
pub fn png(x: &Array4<f32>, i: usize) -> Vec<u8> {
    let (c, h, w) = (x.shape()[1], x.shape()[2], x.shape()[3]);
    let px = |ch: usize, yy: usize, xx: usize| (x[[i, ch, yy, xx]] * 255.0).round() as u8;
    let img = if c == 1 {
        image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(w as u32, h as u32, |xx, yy| {
            image::Luma([px(0, yy as usize, xx as usize)])
        }))
    } else {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w as u32, h as u32, |xx, yy| {
            image::Rgb([0, 1, 2].map(|ch| px(ch, yy as usize, xx as usize)))
        }))
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding to memory");
    out.into_inner()
}

/// `requests` POSTs of `bodies` (round robin) to `url` from `clients` threads.
pub fn load(
    url: &str,
    bodies: &[Vec<u8>],
    clients: usize,
    requests: usize,
) -> (f64, Vec<f64>, usize) {
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    let latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(30)))
                        .build()
                        .into();
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break;
                        }
                        let t = Instant::now();
                        let ok = agent
                            .post(url)
                            .content_type("image/png")
                            .send(&bodies[i % bodies.len()][..])
                            .ok()
                            .and_then(|mut r| {
                                let ok = r.status().is_success();
                                r.body_mut().read_to_vec().ok().map(|_| ok)
                            })
                            .unwrap_or(false);
                        lat.push(t.elapsed().as_secs_f64());
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    (rate, latencies, errors.load(Ordering::Relaxed))
}

fn server_load(
    model: Arc<MaxlModel>,
    bodies: &[Vec<u8>],
    opts: ServeOptions,
    clients: usize,
    requests: usize,
) -> anyhow::Result<ServerLoad> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.block_on(server::start(
        model,
        "127.0.0.1:0".parse()?,
        opts.clone(),
        async {
            let _ = stopped.await;
        },
    ))?;
    let url = format!("http://{}/v1/predict", server.addr);
    // Warm-up, then the measurement.
    load(&url, bodies, clients, (clients * 2).min(requests));
    let (rate, lat, errors) = load(&url, bodies, clients, requests);
    let _ = stop.send(());
    rt.block_on(server.wait())?;
    let (p50_ms, p99_ms) = ms(lat);
    Ok(ServerLoad {
        batching: opts.max_batch > 1,
        max_batch: opts.max_batch,
        max_wait_ms: opts.max_wait.as_secs_f64() * 1e3,
        clients,
        requests,
        requests_per_s: rate,
        p50_ms,
        p99_ms,
        errors,
    })
}

/// Runs `maxl-infer bench`: every measurement, its tables on stdout, the report as JSON with
/// `--json`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let opts = BenchOptions {
        backends: args.backends.clone(),
        batches: args.batches.clone(),
        min_time: Duration::from_secs_f64(args.seconds.max(0.01)),
        clients: args.clients.max(1),
        requests: args.requests.max(1),
        max_batch: args.max_batch.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        skip_server: args.no_server,
        skip_pool: args.no_pool,
    };
    let report = measure(
        &args.model,
        &opts,
        args.save_inputs.as_deref(),
        &mut std::io::stdout().lock(),
    )?;
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

/// The input images, made once at the first model's input shape and shared by every phase.
struct Inputs {
    /// Images made (the largest batch, at least 64).
    n: usize,
    x: Option<Array4<f32>>,
}

impl Inputs {
    fn for_model(&mut self, model: &MaxlModel) -> &Array4<f32> {
        let s = model.input_shape();
        self.x
            .get_or_insert_with(|| inputs(self.n, s.channels, s.height, s.width))
    }
}

/// Runs every measurement; prints a table to `out` as it goes.
pub fn measure(
    args: &ModelArgs,
    opts: &BenchOptions,
    save: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<BenchReport> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(out, "model {} on {cores} cores", args.model.display())?;
    let mut x = Inputs {
        n: opts.batches.iter().copied().max().unwrap_or(64).max(64),
        x: None,
    };
    let mut report = BenchReport {
        model: args.model.display().to_string(),
        cores,
        throughput: measure_backends(args, opts, &mut x, save, out)?,
        pool: None,
        server: Vec::new(),
    };
    if !opts.skip_pool {
        report.pool = Some(measure_pool(args, opts, &mut x, out)?);
    }
    if !opts.skip_server {
        report.server = measure_server(args, opts, &mut x, out)?;
    }
    Ok(report)
}

/// The ONNX Runtime CPU model with `sessions` sessions of `intra` intra-op threads each, for the
/// pool and server phases.
fn load_ort_cpu(
    args: &ModelArgs,
    sessions: usize,
    intra: Option<usize>,
) -> Result<MaxlModel, InferError> {
    args.builder()
        .with_backend(Backend::OrtCpu)
        .with_threads(ThreadOptions {
            sessions,
            intra_threads: intra,
            global_threads: None,
            ..Default::default()
        })
        .build()
}

/// Throughput and latency of each backend at each batch size; writes the inputs to `save`.
fn measure_backends(
    args: &ModelArgs,
    opts: &BenchOptions,
    x: &mut Inputs,
    save: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<Throughput>> {
    let mut rows = Vec::new();
    let mut table = Table::new(["backend", "batch", "images/s", "p50 ms", "p99 ms"]);
    for &backend in &opts.backends {
        let model = args.builder().with_backend(backend).build()?;
        let xs = x.for_model(&model);
        if let Some(p) = save {
            save_inputs(p, xs)?;
        }
        for &batch in &opts.batches {
            let t = throughput(&model, xs, batch, opts.min_time)?;
            table.row([
                t.backend.clone(),
                t.batch.to_string(),
                format!("{:.1}", t.images_per_s),
                format!("{:.3}", t.p50_ms),
                format!("{:.3}", t.p99_ms),
            ]);
            rows.push(t);
        }
    }
    write!(out, "{table}")?;
    Ok(rows)
}

/// Calls/s of 2 threads on one ONNX Runtime session behind a lock against a 2-session pool.
fn measure_pool(
    args: &ModelArgs,
    opts: &BenchOptions,
    x: &mut Inputs,
    out: &mut dyn Write,
) -> anyhow::Result<PoolScaling> {
    let one = load_ort_cpu(args, 1, Some(1))?;
    let xs = x.for_model(&one);
    let a = calls_per_s(&one, xs, 2, opts.min_time, Some(&std::sync::Mutex::new(())));
    drop(one);
    let two = load_ort_cpu(args, 2, Some(1))?;
    let b = calls_per_s(&two, xs, 2, opts.min_time, None);
    let p = PoolScaling {
        threads: 2,
        one_session_calls_per_s: a,
        two_sessions_calls_per_s: b,
        ratio: b / a,
    };
    writeln!(
        out,
        "\nort-cpu pool, 2 threads of batch-1 calls, 1 intra-op thread per session:\n  1 session behind a lock {:.1} calls/s, 2-session pool {:.1} calls/s: {:.2}×",
        p.one_session_calls_per_s, p.two_sessions_calls_per_s, p.ratio
    )?;
    Ok(p)
}

/// The server (ONNX Runtime CPU, 1 worker) under load from `opts.clients` clients and from 1,
/// each with dynamic batching on and off.
fn measure_server(
    args: &ModelArgs,
    opts: &BenchOptions,
    x: &mut Inputs,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<ServerLoad>> {
    let model = Arc::new(load_ort_cpu(args, 1, None)?);
    let xs = x.for_model(&model);
    let bodies: Vec<Vec<u8>> = (0..xs.shape()[0]).map(|i| png(xs, i)).collect();
    writeln!(
        out,
        "\nserver (ort-cpu, 1 worker), {} requests per row:",
        opts.requests
    )?;
    let mut rows = Vec::new();
    let mut table = Table::new([
        "batching",
        "clients",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "errors",
    ]);
    for clients in [opts.clients, 1] {
        for batching in [true, false] {
            let so = ServeOptions {
                max_batch: if batching { opts.max_batch } else { 1 },
                max_wait: if batching {
                    opts.max_wait
                } else {
                    Duration::ZERO
                },
                workers: 1,
                ..ServeOptions::default()
            };
            let requests = if clients == 1 {
                opts.requests.min(500)
            } else {
                opts.requests
            };
            let l = server_load(model.clone(), &bodies, so, clients, requests)?;
            table.row([
                if l.batching { "on" } else { "off" }.to_string(),
                l.clients.to_string(),
                format!("{:.1}", l.requests_per_s),
                format!("{:.3}", l.p50_ms),
                format!("{:.3}", l.p99_ms),
                l.errors.to_string(),
            ]);
            rows.push(l);
        }
    }
    write!(out, "{table}")?;
    Ok(rows)
}
