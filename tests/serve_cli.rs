//! `maxl-infer serve` on a free 127.0.0.1 port, spoken to with real HTTP requests.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::bin;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        Self::start_with(&models(), args)
    }

    fn start_with(model: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin("maxl-infer"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Self { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    common::http_agent(Duration::from_secs(30))
}

/// (status, Retry-After, body).
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, Option<String>, String) {
    let mut r = agent
        .post(url)
        .content_type("image/png")
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        retry,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn png(seed: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(28, 28, |x, y| {
        let d = (x as i32 - 14).pow(2) + (y as i32 - 14).pow(2);
        image::Luma([if d < (40 + seed as i32 * 9) {
            ((seed * 37 + x * 5) % 200 + 55) as u8
        } else {
            0
        }])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A valid PNG header declaring 20000×20000 with no image data behind it.
fn huge_png() -> Vec<u8> {
    let mut b = png(0);
    b[16..20].copy_from_slice(&20000u32.to_be_bytes());
    b[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&b[12..29]);
    b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    b
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn metric(metrics: &str, endpoint: &str, status: u16) -> u64 {
    let key = format!("maxl_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn answers_errors_metrics_and_concurrency() {
    let server = Server::start(&[
        "--max-batch",
        "16",
        "--max-wait-ms",
        "5",
        "--max-body",
        "65536",
    ]);
    let a = agent();
    let (status, body) = get(&a, &server.url("/healthz"));
    assert_eq!((status, body.contains("ok")), (200, true));
    // The model description.
    let (status, body) = get(&a, &server.url("/v1/model"));
    assert_eq!(status, 200);
    let m = json(&body);
    assert_eq!(m["classes"].as_array().unwrap().len(), 10);
    assert_eq!(m["classes"][9]["display"], "Ankle boot");
    assert_eq!(m["psi"].as_array().unwrap().len(), 10);
    assert_eq!(m["aux_slots"].as_array().unwrap().len(), 50);
    assert_eq!(m["input"]["height"], 28);
    assert_eq!(m["training"]["method"], "maxl");
    assert_eq!(m["providers"]["primary"][0], "CPUExecutionProvider");
    // Sequential answers, with the documented schema.
    let images: Vec<Vec<u8>> = (0..12).map(png).collect();
    let sequential: Vec<String> = images
        .iter()
        .map(|img| {
            let (status, _, body) = post(&a, &server.url("/v1/predict?top_k=3"), img);
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect();
    let v = json(&sequential[0]);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "aux_label",
            "aux_probability",
            "aux_slot",
            "class",
            "class_probability",
            "top_k"
        ]
    );
    assert_eq!(v["top_k"].as_array().unwrap().len(), 3);
    assert!(
        v["aux_label"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}.", v["class"].as_str().unwrap()))
    );
    // The same requests from 8 concurrent clients, batched together: the same answers.
    let start = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (url, images, start) = (
                server.url("/v1/predict?top_k=3"),
                images.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let a = agent();
                start.wait();
                (0..24)
                    .map(|i| {
                        let k = (i + t) % images.len();
                        let (status, _, body) = post(&a, &url, &images[k]);
                        assert_eq!(status, 200, "{body}");
                        (k, body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (k, body) in h.join().unwrap() {
            assert_eq!(json(&body), json(&sequential[k]), "image {k}");
        }
    }
    // The generator's slot for a given class.
    let (status, _, body) = post(&a, &server.url("/v1/label?class=Ankle%20boot"), &images[0]);
    assert_eq!(status, 200, "{body}");
    let l = json(&body);
    assert_eq!(l["class"], "Ankle_boot");
    assert!(l["aux_label"].as_str().unwrap().starts_with("Ankle_boot."));
    assert_eq!(l["aux_distribution"].as_array().unwrap().len(), 5);
    // Errors: JSON bodies, the right statuses, no dropped connection.
    let (status, _, body) = post(&a, &server.url("/v1/predict"), b"\x89PNG\r\n\x1a\ncorrupt");
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("request body")
    );
    // Refused from its header, before any pixel buffer is allocated.
    let (status, _, body) = post(&a, &server.url("/v1/predict"), &huge_png());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("20000×20000"), "{body}");
    let (status, _, body) = post(&a, &server.url("/v1/predict"), &vec![7u8; 65537]);
    assert_eq!(status, 413, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("65536"));
    let (status, _, body) = post(&a, &server.url("/v1/label?class=Zebra"), &images[0]);
    assert_eq!(status, 400, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("Zebra"));
    let (status, _, body) = post(&a, &server.url("/v1/nothing"), &images[0]);
    assert_eq!(status, 404, "{body}");
    // The metrics count all of it.
    let (status, metrics) = get(&a, &server.url("/metrics"));
    assert_eq!(status, 200);
    assert_eq!(metric(&metrics, "/v1/predict", 200), 12 + 8 * 24);
    assert_eq!(metric(&metrics, "/v1/predict", 400), 2);
    assert_eq!(metric(&metrics, "/v1/predict", 413), 1);
    assert_eq!(metric(&metrics, "/v1/label", 200), 1);
    assert_eq!(metric(&metrics, "/v1/label", 400), 1);
    assert!(
        metrics.contains("maxl_errors_total{endpoint=\"/v1/predict\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("maxl_batch_size_count"), "{metrics}");
    assert!(
        metrics.contains("maxl_request_duration_seconds_bucket{le=\"+Inf\"} 205"),
        "{metrics}"
    );
    assert!(server.terminate().success());
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    // One worker, one batch image at a time, a queue of 1: 48 simultaneous clients overflow it.
    let server = Server::start(&["--max-batch", "1", "--queue", "1", "--workers", "1"]);
    let start = Arc::new(Barrier::new(48));
    let img = png(3);
    let handles: Vec<_> = (0..48)
        .map(|_| {
            let (url, img, start) = (server.url("/v1/predict"), img.clone(), start.clone());
            std::thread::spawn(move || {
                let a = agent();
                start.wait();
                post(&a, &url, &img)
            })
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "no 503 from 48 clients on a queue of 1");
    for (status, retry, body) in &answers {
        assert!(*status == 200 || *status == 503, "{status}: {body}");
        if *status == 503 {
            assert_eq!(retry.as_deref(), Some("1"));
            assert!(
                json(body)["error"]
                    .as_str()
                    .unwrap()
                    .contains("queue is full")
            );
        }
    }
    let (_, metrics) = get(&agent(), &server.url("/metrics"));
    assert_eq!(metric(&metrics, "/v1/predict", 503), busy.len() as u64);
    assert_eq!(
        metric(&metrics, "/v1/predict", 200),
        (answers.len() - busy.len()) as u64
    );
    assert!(server.terminate().success());
}

#[test]
fn sigterm_answers_the_requests_in_flight_and_exits_0() {
    // Batches wait up to 800 ms for company: the requests are in flight when SIGTERM arrives.
    let server = Server::start(&["--max-batch", "64", "--max-wait-ms", "800"]);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let url = server.url("/v1/predict");
            std::thread::spawn(move || post(&agent(), &url, &png(i)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    for h in handles {
        let (status, _, body) = h.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn a_weighted_model_answers_with_aux_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let like = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let dir = maxl_label::synthetic::model(&tmp.path().join("weighted"), &like, true, 4).unwrap();
    let server = Server::start_with(&dir, &["--backend", "tract"]);
    let a = agent();
    let (status, body) = get(&a, &server.url("/v1/model"));
    assert_eq!(status, 200);
    let m = json(&body);
    assert_eq!(m["has_sample_weight"], true);
    assert_eq!(m["training"]["method"], "maxl-weighted");
    let (_, _, body) = post(&a, &server.url("/v1/predict?top_k=2"), &png(1));
    let v = json(&body);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "aux_label",
            "aux_probability",
            "aux_slot",
            "aux_weight",
            "class",
            "class_probability",
            "top_k"
        ]
    );
    let w = v["aux_weight"].as_f64().unwrap();
    assert!(w > 0.0 && w < 2.0, "{body}");
    // The weight is the image's, whichever class the generator is asked for.
    let (status, _, body) = post(&a, &server.url("/v1/label?class=Coat"), &png(1));
    assert_eq!(status, 200, "{body}");
    let l = json(&body);
    assert!(
        (l["aux_weight"].as_f64().unwrap() - w).abs() < 1e-6,
        "{body}"
    );
    assert!(server.terminate().success());
    // The committed model (no sample_weight) says so and answers without the key.
    let server = Server::start(&["--backend", "tract"]);
    let (_, body) = get(&a, &server.url("/v1/model"));
    assert_eq!(json(&body)["has_sample_weight"], false);
    let (_, _, body) = post(&a, &server.url("/v1/label?class=Coat"), &png(1));
    assert!(json(&body).get("aux_weight").is_none(), "{body}");
    assert!(server.terminate().success());
}
