//! The examples, run as a reader would run them, and the README showing them as they are.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running example server, killed when dropped (also when an assertion fails).
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts `examples/service` on the committed model and reads the address it bound.
    fn start() -> Server {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let mut child = Command::new(common::example("service"))
            .arg(&models)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start examples/service");
        let mut first = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let addr = first.trim().to_string();
        let server = Server { child, addr };
        assert!(
            server.addr.parse::<std::net::SocketAddr>().is_ok(),
            "the first line is not the bound address: {first:?}"
        );
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    common::http_agent(Duration::from_secs(60))
}

/// POSTs `body`; the status and the body parsed as JSON.
fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent
        .post(url)
        .send(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = r.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (r.status().as_u16(), json)
}

fn png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if (6..22).contains(&x) && (3..25).contains(&y) {
            200
        } else {
            10
        }])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn the_service_example_classifies_uploads_and_answers_junk_with_a_client_error() {
    let server = Server::start();
    let agent = agent();
    let mut health = agent.get(server.url("/health")).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(health.body_mut().read_to_string().unwrap(), "ok");

    let (status, json) = post(&agent, &server.url("/classify"), &png());
    assert_eq!(status, 200, "{json}");
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/maxl.yaml"))
            .unwrap();
    let name = json["class"]["name"].as_str().expect("class.name");
    assert!(
        manifest.contains(&format!("- name: {name}\n")),
        "`{name}` is not one of the model's classes"
    );
    let p = json["class"]["probability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{json}");
    assert_eq!(json["top_k"].as_array().unwrap().len(), 3, "{json}");
    assert_eq!(json["top_k"][0]["name"], json["class"]["name"], "{json}");
    assert_eq!(json["primary"].as_array().unwrap().len(), 10, "{json}");
    let aux = json["aux"]["label"].as_str().expect("aux.label");
    assert!(aux.starts_with(&format!("{name}.")), "{json}");

    for junk in [&b"definitely not an image"[..], b""] {
        let (status, json) = post(&agent, &server.url("/classify"), junk);
        assert_eq!(status, 400, "{json}");
        let error = json["error"].as_str().expect("error");
        assert!(error.contains("not a PNG or JPEG"), "{error}");
    }
}

/// The lines of a README code block that starts with the fence ```` ```rust ````.
fn rust_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match current.as_mut() {
            None if line.trim_end() == "```rust" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn the_readme_shows_the_service_example_verbatim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example =
        std::fs::read_to_string(root.join("crates/maxl-infer/examples/service.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        rust_blocks(&readme).contains(&example),
        "README.md has no ```rust block with crates/maxl-infer/examples/service.rs as it is"
    );
}

/// The train → export → label example on a slice of Fashion-MNIST: it trains, exports a model
/// that loads, and labels every image of the folder it wrote, each with a slot of its class.
#[test]
fn the_train_export_label_example_runs_the_whole_toolchain() {
    let data = common::fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let r = common::run(
        Command::new(common::example("train_export_label"))
            .arg(&data)
            .arg(&work),
    );
    r.assert_ok();
    assert!(
        r.stdout.contains("labelled 100 images (0 skipped)"),
        "{}",
        r.stdout
    );
    for f in ["maxl.yaml", "primary.onnx", "label_generator.onnx"] {
        assert!(work.join("model").join(f).is_file(), "{f}");
    }
    assert!(work.join("run/summary.yaml").is_file());
    let csv = std::fs::read_to_string(work.join("labels.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (path, class, label) = (col("path"), col("class"), col("aux_label"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 100);
    for row in &rows {
        // The class comes from the image's folder; the label is one of its ψ = 5 slots.
        assert_eq!(common::folder_of(row[path]), row[class], "{row:?}");
        let (of, k) = row[label].rsplit_once('.').unwrap();
        assert_eq!(of, row[class], "{row:?}");
        assert!(k.parse::<usize>().unwrap() < 5, "{row:?}");
    }
}

/// The loader bench on a few small JPEGs: it decodes every image of each epoch and reports one
/// JSON line with its rates; a missing folder is a one-line error.
#[test]
fn the_loader_bench_example_reports_batches_per_second() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..5u8 {
        let dir = tmp.path().join(["a", "b"][i as usize % 2]);
        std::fs::create_dir_all(&dir).unwrap();
        image::RgbImage::from_fn(24, 20, |x, y| {
            image::Rgb([i * 40, x as u8 * 9, y as u8 * 11])
        })
        .save(dir.join(format!("{i}.jpg")))
        .unwrap();
    }
    let r = common::run(
        Command::new(common::example("bench_loader"))
            .arg(tmp.path())
            .args(["--workers", "2", "--batch", "2", "--size", "16"])
            .args(["--resize", "18", "--epochs", "3"]),
    );
    r.assert_ok();
    let line = r.stdout.trim();
    // Two timed epochs of 3 batches (2 + 2 + 1 images).
    assert!(
        line.contains("\"impl\": \"maxl\"")
            && line.contains("\"batches\": 6,")
            && line.contains("\"images\": 10,")
            && line.contains("\"batches_per_s\": "),
        "{line}"
    );
    let r = common::run(Command::new(common::example("bench_loader")).arg(tmp.path().join("none")));
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("none"), "{}", r.stderr);
}
