//! `maxl-infer serve`: an HTTP model server (axum on tokio) with dynamic batching.
//!
//! Requests are decoded on tokio's blocking pool, then queued (bounded) for worker threads
//! that run the model off the async threads: a worker takes the first waiting request and every
//! request already queued behind it (up to `max_batch`); while other requests are still being
//! decoded it waits for them, up to `max_wait` after the first, then answers all of them from one
//! model call. A lone request is never held back waiting for company that is not coming. A full queue answers 503 with `Retry-After`; a
//! request not answered within `timeout` answers 503 too (and is dropped from the queue).
//!
//! Every error is JSON `{"error": "..."}`: 400 for a bad image, an unknown class or a model
//! without a label generator, 404 for an unknown path, 413 for a body over `max_body`,
//! 500 for a model or runtime failure, 503 when overloaded.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use maxl_core::manifest::{ClassName, ManifestInput, TrainingSummary};
use maxl_infer::{AuxFor, Backend, Classify, InferError, MaxlModel, Providers};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::args::ModelArgs;
use crate::record::Record;

/// The arguments of `maxl-infer serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Most images in one model call (1 turns batching off).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_batch: u16,
    /// Longest a batch waits for more requests after its first, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub max_wait_ms: u64,
    /// Requests that may wait for a worker; beyond it, 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub queue: usize,
    /// Longest a request may wait for its answer, in milliseconds (then 503).
    #[arg(long, value_name = "MS", default_value_t = 10000)]
    pub timeout_ms: u64,
    /// Largest request body in bytes (then 413).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_body: usize,
    /// Worker threads running the model (default: --sessions for ONNX Runtime, 1 for tract).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most images in one model call (1: no batching).
    pub max_batch: usize,
    /// How long a worker waits for more requests after the first of a batch.
    pub max_wait: Duration,
    /// Requests waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Longest a request may wait for its answer.
    pub timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Worker threads running the model (each makes its own batches).
    pub workers: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(2),
            queue: 1024,
            timeout: Duration::from_secs(10),
            max_body: 16 << 20,
            workers: 1,
        }
    }
}

/// What a queued request asks for.
enum Ask {
    /// The predicted class, its generator slot, and the top k.
    Predict { top_k: usize },
    /// The generator's slot for a given class.
    Label { class: usize },
}

struct Job {
    pixels: Vec<f32>,
    ask: Ask,
    reply: oneshot::Sender<Result<Record, InferError>>,
}

/// Latency histogram bucket bounds, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];
/// Batch size histogram bucket bounds.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in micro-units, to stay an integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6).round() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        let n = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {n}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {n}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

/// Counters for `/metrics` (Prometheus text format).
pub struct Metrics {
    /// (endpoint, status) → requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Histogram,
    batch: Histogram,
    queued: AtomicU64,
}

impl Metrics {
    fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(&LATENCY_BUCKETS),
            batch: Histogram::new(&BATCH_BUCKETS),
            queued: AtomicU64::new(0),
        }
    }

    fn count(&self, endpoint: &'static str, status: StatusCode) {
        *self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((endpoint, status.as_u16()))
            .or_default() += 1;
    }

    fn render(&self) -> String {
        let mut s = String::from(
            "# HELP maxl_requests_total HTTP requests answered, by endpoint and status.\n# TYPE maxl_requests_total counter\n",
        );
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((endpoint, status), n) in &requests {
            s.push_str(&format!(
                "maxl_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}\n"
            ));
        }
        s.push_str("# HELP maxl_errors_total Requests answered with a status of 400 or more, by endpoint.\n# TYPE maxl_errors_total counter\n");
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((endpoint, status), n) in &requests {
            if *status >= 400 {
                *errors.entry(endpoint).or_default() += n;
            }
        }
        for (endpoint, n) in errors {
            s.push_str(&format!(
                "maxl_errors_total{{endpoint=\"{endpoint}\"}} {n}\n"
            ));
        }
        self.latency.render(
            "maxl_request_duration_seconds",
            "Time from a request's body being read to its answer, for inference requests.",
            &mut s,
        );
        self.batch
            .render("maxl_batch_size", "Images per model call.", &mut s);
        s.push_str(&format!(
            "# HELP maxl_queue_depth Requests waiting for a worker.\n# TYPE maxl_queue_depth gauge\nmaxl_queue_depth {}\n",
            self.queued.load(Ordering::Relaxed)
        ));
        s
    }
}

struct AppState {
    model: Arc<MaxlModel>,
    jobs: Sender<Job>,
    /// Requests being decoded, not yet queued: the company a worker may wait for.
    decoding: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    options: ServeOptions,
    info: ModelInfo,
}

/// `GET /v1/model`: the manifest's description of the model, and how it runs here.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub classes: Vec<ClassName>,
    pub psi: Vec<usize>,
    pub aux_slots: Vec<String>,
    pub input: ManifestInput,
    pub training: TrainingSummary,
    pub backend: String,
    pub providers: Providers,
    pub has_label_generator: bool,
    /// Whether generator results carry `aux_weight` (a `maxl-weighted` model).
    pub has_sample_weight: bool,
    pub max_batch: usize,
}

impl ModelInfo {
    pub fn new(model: &MaxlModel, max_batch: usize) -> Self {
        let m = model.manifest();
        Self {
            classes: m.classes.clone(),
            psi: m.psi.clone(),
            aux_slots: m.aux_slots.clone(),
            input: m.input.clone(),
            training: m.training.clone(),
            backend: model.backend().name().to_string(),
            providers: model.providers(),
            has_label_generator: model.has_generator(),
            has_sample_weight: model.has_sample_weight(),
            max_batch,
        }
    }
}

/// An error answer: `{"error": ...}` with a status (and `Retry-After` for 503).
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        let status = if e.is_caller_fault() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

type Answer = Result<axum::Json<Record>, ApiError>;

fn finish(state: &AppState, endpoint: &'static str, answer: Answer) -> Response {
    let r = answer.into_response();
    state.metrics.count(endpoint, r.status());
    r
}

/// Decodes on the blocking pool, queues, and waits for the worker's answer.
async fn infer(state: &Arc<AppState>, body: Bytes, ask: Ask) -> Answer {
    let started = Instant::now();
    let model = state.model.clone();
    let decoding = Decoding::start(&state.decoding);
    let pixels = tokio::task::spawn_blocking(move || model.preprocess(&body, "request body"))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let (reply, answer) = oneshot::channel();
    let sent = state.jobs.try_send(Job { pixels, ask, reply });
    drop(decoding);
    match sent {
        Ok(()) => {
            state.metrics.queued.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the queue is full ({} requests waiting); retry later",
                    state.options.queue
                ),
            ));
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ));
        }
    }
    let record = match tokio::time::timeout(state.options.timeout, answer).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request was dropped by the worker",
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no answer within {} ms; retry later",
                    state.options.timeout.as_millis()
                ),
            ));
        }
    };
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    Ok(axum::Json(record))
}

/// Counts a request as being decoded while it lives.
struct Decoding(Arc<AtomicUsize>);

impl Decoding {
    fn start(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn body_or_error(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, ApiError> {
    match body {
        Ok(b) if b.is_empty() => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is empty; send one encoded PNG or JPEG image",
        )),
        Ok(b) => Ok(b),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {max} bytes"),
        )),
        Err(e) => Err(ApiError::new(e.status(), e.body_text())),
    }
}

#[derive(serde::Deserialize)]
struct PredictQuery {
    top_k: Option<usize>,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    Query(q): Query<PredictQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let body = body_or_error(body, state.options.max_body)?;
        let top_k = q.top_k.unwrap_or(1).clamp(1, state.model.num_classes());
        infer(&state, body, Ask::Predict { top_k }).await
    }
    .await;
    finish(&state, "/v1/predict", answer)
}

#[derive(serde::Deserialize)]
struct LabelQuery {
    class: Option<String>,
}

async fn label(
    State(state): State<Arc<AppState>>,
    Query(q): Query<LabelQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let name = q.class.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing query parameter `class` (POST /v1/label?class=NAME)",
            )
        })?;
        let class = state.model.class_index(&name)?;
        if !state.model.has_generator() {
            return Err(
                InferError::NoGenerator(state.model.manifest().training.method.clone()).into(),
            );
        }
        let body = body_or_error(body, state.options.max_body)?;
        infer(&state, body, Ask::Label { class }).await
    }
    .await;
    finish(&state, "/v1/label", answer)
}

async fn model_info(State(state): State<Arc<AppState>>) -> Response {
    let r = axum::Json(state.info.clone()).into_response();
    state.metrics.count("/v1/model", r.status());
    r
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let r = axum::Json(serde_json::json!({ "status": "ok" })).into_response();
    state.metrics.count("/healthz", r.status());
    r
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    let r = ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint (POST /v1/predict, POST /v1/label?class=NAME, GET /v1/model, GET /healthz, GET /metrics)",
    )
    .into_response();
    state.metrics.count("other", r.status());
    r
}

/// Runs one batch of jobs and answers each.
fn run_batch(model: &MaxlModel, jobs: Vec<Job>, metrics: &Metrics) {
    // Requests whose client gave up (timed out) are not computed.
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if jobs.is_empty() {
        return;
    }
    metrics.batch.observe(jobs.len() as f64);
    let top_k = jobs
        .iter()
        .map(|j| match j.ask {
            Ask::Predict { top_k } => top_k,
            Ask::Label { .. } => 1,
        })
        .max()
        .unwrap_or(1);
    let given: Vec<Option<usize>> = jobs
        .iter()
        .map(|j| match j.ask {
            Ask::Predict { .. } => None,
            Ask::Label { class } => Some(class),
        })
        .collect();
    let aux = if model.has_generator() {
        AuxFor::GivenOrPredicted(&given)
    } else {
        AuxFor::None
    };
    let pixels: Vec<&[f32]> = jobs.iter().map(|j| j.pixels.as_slice()).collect();
    let result = model
        .stack(&pixels)
        .and_then(|b| model.classify(b.view(), &Classify { top_k, aux }));
    match result {
        Ok(results) => {
            for (job, c) in jobs.into_iter().zip(results) {
                let record = match job.ask {
                    Ask::Predict { top_k } => {
                        let mut c = c;
                        c.top_k.truncate(top_k);
                        Record::new(model, None, &c).with_top_k(&c)
                    }
                    Ask::Label { .. } => Record::new(model, None, &c).with_distribution(&c),
                };
                let _ = job.reply.send(Ok(record));
            }
        }
        Err(e) => {
            let message = e.to_string();
            let caller = e.is_caller_fault();
            for job in jobs {
                let e = if caller {
                    InferError::Input(message.clone())
                } else {
                    InferError::Run {
                        backend: model.backend().name(),
                        message: message.clone(),
                    }
                };
                let _ = job.reply.send(Err(e));
            }
        }
    }
}

/// A worker: batches of up to `max_batch` jobs: the first, those already queued, and those
/// still being decoded if they arrive within `max_wait` of the first. Returns when every sender
/// is gone and the queue is empty.
fn worker(
    model: Arc<MaxlModel>,
    jobs: Receiver<Job>,
    opts: ServeOptions,
    metrics: Arc<Metrics>,
    decoding: Arc<AtomicUsize>,
) {
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + opts.max_wait;
        let mut batch = vec![first];
        while batch.len() < opts.max_batch {
            if let Ok(j) = jobs.try_recv() {
                batch.push(j);
                continue;
            }
            let now = Instant::now();
            if decoding.load(Ordering::SeqCst) == 0 || now >= deadline {
                break;
            }
            match jobs.recv_deadline(deadline.min(now + Duration::from_micros(100))) {
                Ok(j) => batch.push(j),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        metrics
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        run_batch(&model, batch, &metrics);
    }
}

/// A running server's address and its handle.
pub struct Server {
    pub addr: SocketAddr,
    workers: Vec<std::thread::JoinHandle<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Waits until the server has stopped (after `shutdown` resolved and in-flight requests were
    /// answered) and its workers have finished the queue.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        let workers = self.workers;
        tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await?;
        Ok(())
    }
}

/// Binds `addr` and serves `model` until `shutdown` resolves.
pub async fn start(
    model: Arc<MaxlModel>,
    addr: SocketAddr,
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = crossbeam_channel::bounded::<Job>(opts.queue.max(1));
    let metrics = Arc::new(Metrics::new());
    let decoding = Arc::new(AtomicUsize::new(0));
    let workers = (0..opts.workers.max(1))
        .map(|i| {
            let (model, rx, opts, metrics, decoding) = (
                model.clone(),
                rx.clone(),
                opts.clone(),
                metrics.clone(),
                decoding.clone(),
            );
            std::thread::Builder::new()
                .name(format!("maxl-worker-{i}"))
                .spawn(move || worker(model, rx, opts, metrics, decoding))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let state = Arc::new(AppState {
        info: ModelInfo::new(&model, opts.max_batch),
        model,
        jobs: tx,
        decoding,
        metrics,
        options: opts.clone(),
    });
    let app = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/label", post(label))
        .route("/v1/model", get(model_info))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body))
        .with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(Server {
        addr,
        workers,
        task,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: no new connections; answering the requests in flight");
}

/// Runs `maxl-infer serve` until SIGTERM or Ctrl-C: loads the model, starts the server and prints
/// one line, `listening on http://ADDR`, on stdout once it accepts connections.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let m = Arc::new(args.model.load()?);
    let workers = args.workers.unwrap_or(if m.backend() == Backend::Tract {
        1
    } else {
        args.model.sessions as usize
    });
    let opts = ServeOptions {
        max_batch: args.max_batch as usize,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue,
        timeout: Duration::from_millis(args.timeout_ms),
        max_body: args.max_body,
        workers,
    };
    let addr = args.addr;
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let providers = m.providers();
        let server = start(m, addr, opts, shutdown_signal()).await?;
        // One line on stdout, for scripts and tests that wait for the server.
        println!("listening on http://{}", server.addr);
        tracing::info!("providers: {providers:?}");
        std::io::stdout().flush()?;
        server.wait().await
    })
}
