//! A small HTTP service around one shared `MaxlModel`: `POST /classify` with an image (PNG or
//! JPEG) as the body answers its classification as JSON; `GET /health` answers `ok`.
//!
//!     cargo run --release -p maxl-infer --example service -- models 127.0.0.1:8080 [backend]
//!     curl --data-binary @shoe.png http://127.0.0.1:8080/classify

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maxl_infer::{Backend, Classify, Fault, InferError, MaxlModel, ThreadOptions};
use serde_json::json;

/// A model error as JSON, with the status its fault calls for: a bad upload is the client's
/// fault (400), a broken model or runtime the server's (500).
fn error_response(e: &InferError) -> Response {
    let status = match e.fault() {
        Fault::Caller => StatusCode::BAD_REQUEST,
        Fault::Model | Fault::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({ "error": e.to_string() }))).into_response()
}

async fn classify(State(model): State<Arc<MaxlModel>>, body: Bytes) -> Response {
    let opts = Classify {
        top_k: 3,
        ..Classify::default()
    };
    // Decoding and inference are CPU work: they run on tokio's blocking pool, not its workers.
    let result = tokio::task::spawn_blocking(move || model.classify_encoded(&[&body], &opts)).await;
    match result {
        Ok(Ok(mut results)) => Json(results.swap_remove(0)).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(panic) => {
            let error = json!({ "error": panic.to_string() });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(error)).into_response()
        }
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = serve().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, addr, rest @ ..] = args.as_slice() else {
        return Err("usage: service <model-dir> <address> [ort-cpu|ort-cuda|tract]".into());
    };
    let backend: Backend = rest.first().map_or("ort-cpu", String::as_str).parse()?;
    // Loaded once; every request shares it. With ONNX Runtime, two sessions per graph let two
    // requests run at once, each on one thread.
    let threads = ThreadOptions {
        sessions: 2,
        intra_threads: Some(1),
        ..ThreadOptions::default()
    };
    let model = MaxlModel::builder(dir)
        .with_backend(backend)
        .with_threads(threads)
        .build()?;
    let app = Router::new()
        .route("/classify", post(classify))
        .route("/health", get(|| async { "ok" }))
        .with_state(Arc::new(model));
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    // The first line of output: the address bound (the port chosen, for `127.0.0.1:0`).
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
