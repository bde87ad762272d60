//! `maxl-infer predict` as a user runs it: the whole Fashion-MNIST test set through both
//! backends, batching, CSV and JSON lines, paths from stdin, awkward paths, bad images and
//! models whose manifest disagrees with their graphs or with the files' metadata.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bin, fashion_mnist_dir, run};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Runs `maxl-infer predict ARGS -` with `paths` on standard input.
fn predict_stdin(args: &[&str], paths: &[PathBuf]) -> common::Run {
    let mut child = Command::new(bin("maxl-infer"))
        .arg("predict")
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = Vec::new();
    for p in paths {
        input.extend_from_slice(p.as_os_str().as_encoded_bytes());
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    common::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_whole_test_set_as_png_files_gives_the_recorded_accuracy_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("test");
    fashion_mnist_dir();
    run(Command::new(bin("maxl-train"))
        .args(["dump-images", "--per-class", "1000", "--out"])
        .arg(&imgs))
    .assert_ok();
    let mut paths: Vec<PathBuf> = Vec::new();
    for d in std::fs::read_dir(&imgs).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            paths.push(f.unwrap().path());
        }
    }
    paths.sort();
    assert_eq!(paths.len(), 10_000);
    let manifest = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let recorded = manifest.training.primary_test_accuracy.unwrap();
    let expected = (recorded * 10_000.0).round() as i64;
    let mut answers: Vec<BTreeMap<String, (String, f64)>> = Vec::new();
    for backend in ["ort-cpu", "tract"] {
        let model = models();
        let r = predict_stdin(
            &[
                "--backend",
                backend,
                "--format",
                "jsonl",
                "--top-k",
                "2",
                "--batch-size",
                "100",
                "--model",
                model.to_str().unwrap(),
            ],
            &paths,
        );
        r.assert_ok();
        let mut per_image = BTreeMap::new();
        let mut correct = 0i64;
        let mut ambiguous = Vec::new();
        for line in r.stdout.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap().to_string();
            let class = v["class"].as_str().unwrap().to_string();
            let top = v["top_k"].as_array().unwrap();
            let margin =
                top[0]["probability"].as_f64().unwrap() - top[1]["probability"].as_f64().unwrap();
            let folder = common::folder_of(&path);
            if folder == class {
                correct += 1;
            }
            if margin < 1e-4 {
                ambiguous.push(format!("{path} (margin {margin:e})"));
            }
            per_image.insert(path, (class, margin));
        }
        assert_eq!(per_image.len(), 10_000, "{backend}");
        // The same number correct as recorded at training time, or the difference explained
        // by images the model cannot tell apart within 1e-4.
        assert!(
            (correct - expected).abs() <= ambiguous.len() as i64,
            "{backend}: {correct} correct, the manifest records {expected}; images with a top-2 margin below 1e-4: {ambiguous:?}"
        );
        answers.push(per_image);
    }
    // ort and tract agree image by image, except where the top two are within 1e-4.
    for (path, (class, margin)) in &answers[0] {
        let (other, _) = &answers[1][path];
        assert!(
            class == other || *margin < 1e-4,
            "{path}: ort says {class}, tract says {other}"
        );
    }
}

#[test]
fn csv_quoting_jsonl_top_k_and_bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut good = Vec::new();
    for (i, name) in [
        "plain.png",
        "with,comma.png",
        "with \"quotes\".png",
        "two\nlines.png",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.join(name);
        image::GrayImage::from_fn(28, 28, |x, y| {
            image::Luma([((x * y + i as u32 * 40) % 256) as u8])
        })
        .save_with_format(&p, image::ImageFormat::Png)
        .unwrap();
        good.push(p);
    }
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let text = dir.join("notes.png");
    std::fs::write(&text, "just text").unwrap();
    let r = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--batch-size", "3", "--model"])
        .arg(models())
        .args(&good)
        .arg(&corrupt)
        .arg(&text));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(
        r.stderr.contains("corrupt.png: cannot decode"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("notes.png: not a PNG or JPEG"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("2 of 6 images were skipped"),
        "{}",
        r.stderr
    );
    // Parse the CSV as a CSV reader would: quoted fields may hold commas, quotes and newlines.
    let rows = parse_csv(&r.stdout);
    assert_eq!(
        rows[0],
        [
            "path",
            "class",
            "class_probability",
            "aux_slot",
            "aux_label",
            "aux_probability"
        ]
    );
    assert_eq!(rows.len(), 5, "{}", r.stdout);
    for (row, path) in rows[1..].iter().zip(&good) {
        assert_eq!(row.len(), 6, "{row:?}");
        assert_eq!(row[0], path.to_str().unwrap());
        assert!(row[4].starts_with(&format!("{}.", row[1])), "{row:?}");
        let slot: usize = row[3].parse().unwrap();
        assert!(row[4].ends_with(&format!(".{}", slot % 5)), "{row:?}");
    }
    // JSON lines with top_k, the same answers as the CSV.
    let r = run(Command::new(bin("maxl-infer"))
        .args(["predict", "--format", "jsonl", "--top-k", "3", "--model"])
        .arg(models())
        .args(&good));
    r.assert_ok();
    for (line, row) in r.stdout.lines().zip(&rows[1..]) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "path",
            "class",
            "class_probability",
            "aux_slot",
            "aux_label",
            "aux_probability",
            "top_k",
        ] {
            assert!(keys.contains(&k), "{k} missing: {line}");
        }
        assert_eq!(v["path"], row[0]);
        assert_eq!(v["class"], row[1]);
        assert_eq!(v["top_k"].as_array().unwrap().len(), 3);
        assert_eq!(v["top_k"][0]["class"], row[1]);
    }
}

#[cfg(unix)]
#[test]
fn a_non_utf8_path_is_reported_not_mangled() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let odd = tmp.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    let fine = tmp.path().join("fine.png");
    for p in [&odd, &fine] {
        image::GrayImage::from_pixel(28, 28, image::Luma([77]))
            .save_with_format(p, image::ImageFormat::Png)
            .unwrap();
    }
    let r = predict_stdin(
        &["--model", models().to_str().unwrap()],
        &[odd.clone(), fine.clone()],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("not valid UTF-8"), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    assert!(lines[1].starts_with(fine.to_str().unwrap()));
    assert!(!r.stdout.contains('\u{FFFD}'));
}

#[test]
fn an_edited_manifest_is_a_one_line_error_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([30]))
        .save(&img)
        .unwrap();
    for (from, to, field) in [
        ("width: 28", "width: 27", "input:"),
        (
            "- primary_probs",
            "- primary_prob",
            "models.primary.outputs:",
        ),
    ] {
        let dir = tmp.path().join(field.trim_end_matches(':'));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["primary.onnx", "label_generator.onnx"] {
            std::fs::copy(models().join(f), dir.join(f)).unwrap();
        }
        let yaml = std::fs::read_to_string(models().join("maxl.yaml")).unwrap();
        assert!(yaml.contains(from));
        std::fs::write(dir.join("maxl.yaml"), yaml.replacen(from, to, 1)).unwrap();
        for backend in ["ort-cpu", "tract"] {
            run(Command::new(bin("maxl-infer"))
                .args(["predict", "--backend", backend, "--model"])
                .arg(&dir)
                .arg(&img))
            .assert_one_line_error(&["maxl.yaml", field]);
        }
    }
}

/// Exports the committed model's weights again with `maxl-train export` into `out`, from a run
/// directory made of models/weights: files with metadata, unlike the committed ones.
fn export_committed_weights(tmp: &Path, out: &Path) {
    let weights = models().join("weights");
    let run_dir = tmp.join("run");
    let checkpoint = run_dir.join("checkpoints").join("last");
    std::fs::create_dir_all(&checkpoint).unwrap();
    std::fs::copy(weights.join("config.yaml"), run_dir.join("config.yaml")).unwrap();
    let manifest = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let classes: String = manifest
        .classes
        .iter()
        .map(|c| format!("- {}\n", c.display))
        .collect();
    std::fs::write(run_dir.join("classes.yaml"), classes).unwrap();
    for f in ["multitask.safetensors", "label_generator.safetensors"] {
        std::fs::copy(weights.join(f), checkpoint.join(f)).unwrap();
    }
    std::fs::write(
        checkpoint.join("state.yaml"),
        "format: 1\nepochs_done: 3\nsteps_done: 0\nbest_val_acc: 0.5\nbest_epoch: 3\n",
    )
    .unwrap();
    run(Command::new(bin("maxl-train"))
        .args(["export", "--checkpoint"])
        .arg(&checkpoint)
        .arg("--out")
        .arg(out))
    .assert_ok();
}

#[test]
fn a_manifest_that_contradicts_the_files_metadata_is_a_one_line_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([30]))
        .save(&img)
        .unwrap();
    let exported = tmp.path().join("exported");
    export_committed_weights(tmp.path(), &exported);
    let predict = |dir: &Path, backend: &str| {
        run(Command::new(bin("maxl-infer"))
            .args(["predict", "--backend", backend, "--model"])
            .arg(dir)
            .arg(&img))
    };
    predict(&exported, "tract").assert_ok();
    let yaml = std::fs::read_to_string(exported.join("maxl.yaml")).unwrap();
    let (dress, coat) = (
        "- name: Dress\n  display: Dress\n",
        "- name: Coat\n  display: Coat\n",
    );
    let cases = [
        (
            "swapped",
            yaml.replace(&format!("{dress}{coat}"), &format!("{coat}{dress}")),
            r#"primary.onnx: metadata says class 3 is "Dress", maxl.yaml says "Coat""#,
        ),
        (
            "mean",
            yaml.replace("mean: 0.5\n", "mean: 0.45\n"),
            "primary.onnx: metadata says input mean is [0.5], maxl.yaml says [0.45]",
        ),
    ];
    for (what, edited, message) in cases {
        assert_ne!(edited, yaml, "{what}: the edit applies");
        let dir = tmp.path().join(what);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["primary.onnx", "label_generator.onnx"] {
            std::fs::copy(exported.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("maxl.yaml"), edited).unwrap();
        for backend in ["ort-cpu", "tract"] {
            predict(&dir, backend).assert_one_line_error(&[message]);
        }
    }
}

/// A smoke test: the bench runs and reports every measurement (the timings themselves are only
/// checked to be positive).
#[test]
fn bench_smoke_test_reports_every_measurement() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let inputs = tmp.path().join("inputs.f32");
    let r = run(Command::new(bin("maxl-infer"))
        .args([
            "bench",
            "--seconds",
            "0.05",
            "--requests",
            "40",
            "--clients",
            "4",
            "--batches",
            "1,8",
            "--model",
        ])
        .arg(models())
        .arg("--json")
        .arg(&json)
        .arg("--save-inputs")
        .arg(&inputs));
    r.assert_ok();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["throughput"].as_array().unwrap().len(), 4, "{v}");
    assert!(v["pool"]["ratio"].as_f64().unwrap() > 0.0);
    let server = v["server"].as_array().unwrap();
    assert_eq!(server.len(), 4);
    for s in server {
        assert_eq!(s["errors"], 0, "{s}");
        assert!(s["requests_per_s"].as_f64().unwrap() > 0.0);
    }
    // 64 images of 1×28×28 f32.
    assert_eq!(std::fs::metadata(&inputs).unwrap().len(), 64 * 28 * 28 * 4);
}

/// A small RFC 4180 reader for the tests.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

/// An untrained `maxl-weighted` (or plain) model with the committed model's classes and input.
fn synthetic_model(dir: &Path, weighted: bool) -> PathBuf {
    let like = maxl_core::manifest::Manifest::load(&models()).unwrap();
    maxl_label::synthetic::model(dir, &like, weighted, 3).unwrap()
}

#[test]
fn a_weighted_model_adds_aux_weight_to_csv_and_jsonl_alike_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let model = synthetic_model(&tmp.path().join("weighted"), true);
    let plain = synthetic_model(&tmp.path().join("plain"), false);
    let paths: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = tmp.path().join(format!("img{i}.png"));
            image::GrayImage::from_fn(28, 28, |x, y| {
                image::Luma([((x * 7 + y * (i + 3) * 5 + i * 31) % 256) as u8])
            })
            .save(&p)
            .unwrap();
            p
        })
        .collect();
    let predict = |dir: &Path, backend: &str, format: &str| {
        let r = run(Command::new(bin("maxl-infer"))
            .args(["predict", "--batch-size", "4", "--backend", backend])
            .args(["--format", format, "--model"])
            .arg(dir)
            .args(&paths));
        r.assert_ok();
        r.stdout
    };
    let mut by_backend = Vec::new();
    for backend in ["ort-cpu", "tract"] {
        let rows = parse_csv(&predict(&model, backend, "csv"));
        assert_eq!(
            rows[0],
            [
                "path",
                "class",
                "class_probability",
                "aux_slot",
                "aux_label",
                "aux_probability",
                "aux_weight"
            ]
        );
        assert_eq!(rows.len(), 7);
        let csv: Vec<f32> = rows[1..].iter().map(|r| r[6].parse().unwrap()).collect();
        assert!(csv.iter().all(|w| *w > 0.0 && *w < 2.0), "{csv:?}");
        let jsonl = predict(&model, backend, "jsonl");
        for (line, w) in jsonl.lines().zip(&csv) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let got = v["aux_weight"].as_f64().unwrap() as f32;
            assert!((got - w).abs() < 1e-6, "{line}");
        }
        by_backend.push(csv);
        // A model without sample_weight: the columns and keys as always.
        let rows = parse_csv(&predict(&plain, backend, "csv"));
        assert_eq!(rows[0].len(), 6, "{:?}", rows[0]);
        assert!(!predict(&plain, backend, "jsonl").contains("aux_weight"));
    }
    for (o, t) in by_backend[0].iter().zip(&by_backend[1]) {
        assert!((o - t).abs() < 1e-5, "ort {o}, tract {t}");
    }
}
