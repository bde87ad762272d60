//! A model whose manifest says `resize: {shorter-side: S}`, exported by `maxl-train` from a
//! folder of non-square photos (an EXIF-rotated JPEG and a PNG per class), answers the same
//! photo with the same probabilities, bit for bit, through the library (`MaxlModel::
//! preprocess_file` then `classify`), `maxl-infer predict`, `maxl-infer serve` and `maxl-label`:
//! every path runs tract one image at a time, so equal answers mean equal input tensors.
//! (Training's reader gives that tensor too: crates/maxl-train/tests/one_photo_one_tensor.rs.)

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{bin, run};
use maxl_infer::{AuxFor, Backend, Classification, Classify, MaxlModel};

const CLASSES: [&str; 2] = ["portrait", "wide"];

/// A textured photo, different for each seed.
fn photo(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x as f32 * 0.6 + seed as f32).sin() * (y as f32 * 0.4).cos() * 60.0) as i32;
        let px = |base: i32| (base + t).clamp(0, 255) as u8;
        image::Rgb([
            px((x * 180 / w) as i32 + 30 * seed as i32 % 70),
            px(200 - (y * 160 / h) as i32),
            px(((x * 3 + y * seed) % 97) as i32 * 2),
        ])
    })
}

/// The photos, `<class>/<name>`, and the class index of each.
fn photo_folder(dir: &Path) -> Vec<(PathBuf, usize)> {
    let mut files = Vec::new();
    for (k, class) in CLASSES.iter().enumerate() {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).unwrap();
        let seed = k as u32 + 1;
        let jpeg = d.join("rotated.jpg");
        let img = photo(310 - 40 * seed, 190 + 9 * seed, seed);
        std::fs::write(&jpeg, common::jpeg::exif_jpeg(&img, 8, 88)).unwrap();
        let png = d.join("plain.png");
        photo(233 + 20 * seed, 151, seed + 7).save(&png).unwrap();
        files.push((jpeg, k));
        files.push((png, k));
    }
    files
}

/// Exports the untrained networks of a small CNN with a shorter-side resize, reading `photos`
/// as its dataset.
fn export_model(dir: &Path, photos: &Path) -> PathBuf {
    let yaml = format!(
        "model:
  architecture:
    input: {{channels: 3, height: 40, width: 36, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], resize: {{shorter-side: 47}}}}
    blocks: [{{convs: 1, channels: 4}}, {{convs: 1, channels: 8}}]
    head_hidden: 16
dataset: {{kind: image-folder, path: {p:?}, test_path: {p:?}, validation_fraction: 0.0}}
hierarchy: {{psi_per_class: 3}}
batch_size: 2
",
        p = photos.display().to_string(),
    );
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let models = dir.join("models");
    run(Command::new(bin("maxl-train"))
        .args(["--quiet", "--threads", "1", "--max-steps", "0", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("run"))
        .arg("--export")
        .arg(&models))
    .assert_ok();
    let manifest = std::fs::read_to_string(models.join("maxl.yaml")).unwrap();
    assert!(manifest.contains("shorter-side: 47"), "{manifest}");
    models
}

/// The library's answer for one file, on its own.
fn classify(model: &MaxlModel, file: &Path, aux: AuxFor<'_>) -> Classification {
    let x = model.preprocess_file(file).unwrap();
    let batch = model.stack(&[x]).unwrap();
    let opts = Classify {
        top_k: CLASSES.len(),
        aux,
    };
    model.classify(batch.view(), &opts).unwrap().remove(0)
}

/// A JSON number written from an f32, read back exactly.
fn f32_of(v: &serde_json::Value) -> f32 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")) as f32
}

/// The probabilities of a `predict` record (jsonl or the server's): class, aux, top k.
fn record_probabilities(v: &serde_json::Value) -> Vec<u32> {
    let mut p = vec![
        f32_of(&v["class_probability"]),
        f32_of(&v["aux_probability"]),
    ];
    p.extend(
        v["top_k"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| f32_of(&t["probability"])),
    );
    p.iter().map(|x| x.to_bits()).collect()
}

/// The same numbers from the library's classification (the predicted class's aux label).
fn library_probabilities(c: &Classification) -> Vec<u32> {
    let aux = c.aux.as_ref().unwrap();
    let mut p = vec![c.primary[aux.class], aux.probability];
    p.extend(c.top_k.iter().map(|t| t.probability));
    p.iter().map(|x| x.to_bits()).collect()
}

struct Server(Child, String);

impl Server {
    fn start(models: &Path) -> Self {
        let mut child = Command::new(bin("maxl-infer"))
            .args(["serve", "--addr", "127.0.0.1:0", "--backend", "tract"])
            .args(["--max-batch", "1", "--model"])
            .arg(models)
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
        Self(child, base)
    }

    fn post(&self, path: &str, file: &Path) -> serde_json::Value {
        let agent = common::http_agent(std::time::Duration::from_secs(60));
        let url = format!("{}{path}", self.1);
        let mut r = agent
            .post(&url)
            .send(std::fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_photo_answers_alike_through_the_library_cli_server_and_labeller() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let files = photo_folder(&photos);
    let models = export_model(tmp.path(), &photos);
    let model = MaxlModel::builder(&models)
        .with_backend(Backend::Tract)
        .build()
        .unwrap();
    let predicted: Vec<Classification> = files
        .iter()
        .map(|(f, _)| classify(&model, f, AuxFor::Predicted))
        .collect();
    let given: Vec<Classification> = files
        .iter()
        .map(|(f, k)| classify(&model, f, AuxFor::Given(&[*k])))
        .collect();
    // The photos are told apart: the comparisons below are not of one repeated answer.
    let distinct: std::collections::BTreeSet<Vec<u32>> =
        predicted.iter().map(library_probabilities).collect();
    assert_eq!(distinct.len(), files.len());

    // maxl-infer predict, one image per batch.
    let r = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--backend", "tract", "--format", "jsonl"])
        .args(["--top-k", "2", "--batch-size", "1", "--model"])
        .arg(&models)
        .args(files.iter().map(|(f, _)| f)));
    r.assert_ok();
    let by_path: BTreeMap<String, serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["path"].as_str().unwrap().to_string(), v)
        })
        .collect();
    for ((f, _), c) in files.iter().zip(&predicted) {
        let v = &by_path[&f.display().to_string()];
        assert_eq!(
            record_probabilities(v),
            library_probabilities(c),
            "predict: {}",
            f.display()
        );
    }

    // maxl-infer serve: /v1/predict, and /v1/label for the given class.
    let server = Server::start(&models);
    for (((f, k), p), g) in files.iter().zip(&predicted).zip(&given) {
        let v = server.post("/v1/predict?top_k=2", f);
        assert_eq!(
            record_probabilities(&v),
            library_probabilities(p),
            "serve: {}",
            f.display()
        );
        let v = server.post(&format!("/v1/label?class={}", CLASSES[*k]), f);
        let served: Vec<u32> = v["aux_distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| f32_of(x).to_bits())
            .collect();
        let library: Vec<u32> = (g.aux.as_ref().unwrap().distribution.iter())
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(served, library, "serve /v1/label: {}", f.display());
    }
    drop(server);

    // maxl-label writes six decimals: the library's numbers, printed the same way.
    let labels = tmp.path().join("labels.csv");
    run(Command::new(bin("maxl-label"))
        .args([
            "--quiet",
            "--backend",
            "tract",
            "--batch-size",
            "1",
            "--probs",
        ])
        .arg("--input")
        .arg(&photos)
        .arg("--out")
        .arg(&labels)
        .arg("--model")
        .arg(&models))
    .assert_ok();
    let text = std::fs::read_to_string(&labels).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: BTreeMap<String, Vec<String>> = lines
        .map(|l| {
            let row: Vec<String> = l.split(',').map(str::to_string).collect();
            (row[col("path")].clone(), row)
        })
        .collect();
    assert_eq!(rows.len(), files.len(), "{text}");
    for ((f, k), g) in files.iter().zip(&given) {
        let rel = f.strip_prefix(&photos).unwrap().display().to_string();
        let row = &rows[&rel];
        let aux = g.aux.as_ref().unwrap();
        let six = |p: f32| format!("{p:.6}");
        assert_eq!(row[col("class")], CLASSES[*k], "{rel}");
        assert_eq!(row[col("class_probability")], six(g.primary[*k]), "{rel}");
        assert_eq!(row[col("aux_probability")], six(aux.probability), "{rel}");
        let distribution: Vec<String> = aux.distribution.iter().map(|&p| six(p)).collect();
        assert_eq!(
            row[col("aux_distribution")],
            distribution.join(";"),
            "{rel}"
        );
    }
}
