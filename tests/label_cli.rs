//! maxl-label and maxl-infer with the model committed in models/, on real Fashion-MNIST images.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, fashion_mnist_dir, run};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn dump(out: &Path, per_class: usize) {
    fashion_mnist_dir();
    run(Command::new(bin("maxl-train"))
        .args([
            "dump-images",
            "--per-class",
            &per_class.to_string(),
            "--out",
        ])
        .arg(out))
    .assert_ok();
}

fn label(input: &Path, out: &Path, backend: &str) -> common::Run {
    run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--model")
        .arg(models())
        .args(["--backend", backend]))
}

#[test]
fn labels_a_folder_identically_with_ort_and_tract() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 6);
    let (a, b) = (tmp.path().join("ort.csv"), tmp.path().join("tract.csv"));
    let r = label(&imgs, &a, "ort-cpu");
    r.assert_ok();
    assert!(r.stdout.contains("labelled 60 images"), "{}", r.stdout);
    label(&imgs, &b, "tract").assert_ok();
    let (ta, tb) = (
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap(),
    );
    assert_eq!(ta.lines().count(), 61);
    assert_eq!(
        ta.lines().next().unwrap(),
        "path,class,class_probability,aux_slot,aux_label,aux_probability"
    );
    // Paths, classes and slots (the probabilities may differ in the last digits).
    let key = |t: &str| {
        t.lines()
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                [c[0], c[1], c[3], c[4]].join(",")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&ta), key(&tb), "ort and tract assign the same slots");
    // Every slot lies inside its class's ψ range (ψ = 5): slot / 5 is the class index.
    let manifest = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let classes: Vec<&str> = manifest.classes.iter().map(|c| c.name.as_str()).collect();
    for line in ta.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let slot: usize = cols[3].parse().unwrap();
        assert_eq!(classes[slot / 5], cols[1], "{line}");
        assert!(cols[4].starts_with(&format!("{}.", cols[1])), "{line}");
        for p in [cols[2], cols[5]] {
            let p: f32 = p.parse().unwrap();
            assert!((0.0..=1.0).contains(&p), "{line}");
        }
        let aux: f32 = cols[5].parse().unwrap();
        assert!(aux > 0.0, "{line}");
    }
}

#[test]
fn bad_items_are_reported_and_skipped_and_the_rest_is_labelled() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 2);
    std::fs::write(
        imgs.join("Bag").join("corrupt.png"),
        b"\x89PNG\r\n\x1a\nbroken",
    )
    .unwrap();
    std::fs::create_dir(imgs.join("Zebra")).unwrap();
    std::fs::copy(
        imgs.join("Bag").join(
            std::fs::read_dir(imgs.join("Bag"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
        imgs.join("Zebra/z.png"),
    )
    .unwrap();
    let out = tmp.path().join("labels.csv");
    let r = label(&imgs, &out, "ort-cpu");
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
    assert!(
        r.stderr.contains("skipped: ") && r.stderr.contains("corrupt.png: cannot decode image"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("z.png: folder `Zebra` is not a class of the model"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("2 of 22 images were skipped"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 21);
}

#[test]
fn model_errors_are_one_line_and_keep_an_existing_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 1);
    let out = tmp.path().join("labels.csv");
    std::fs::write(&out, "precious\n").unwrap();
    // A model directory whose ONNX file does not match the manifest.
    let bad = tmp.path().join("model");
    std::fs::create_dir(&bad).unwrap();
    for f in ["maxl.yaml", "primary.onnx", "label_generator.onnx"] {
        std::fs::copy(models().join(f), bad.join(f)).unwrap();
    }
    let mut bytes = std::fs::read(bad.join("primary.onnx")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(bad.join("primary.onnx"), bytes).unwrap();
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&bad));
    r.assert_one_line_error(&["primary.onnx: SHA-256", "does not match"]);
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(&imgs)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(tmp.path().join("none")));
    r.assert_one_line_error(&["maxl.yaml: cannot read"]);
    let r = run(Command::new(bin("maxl-label"))
        .arg("--input")
        .arg(tmp.path().join("nothing"))
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(models()));
    r.assert_one_line_error(&["nothing"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "precious\n");
}

#[test]
fn maxl_infer_predicts_real_images_mostly_right() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = tmp.path().join("imgs");
    dump(&imgs, 5);
    let files: Vec<PathBuf> = std::fs::read_dir(&imgs)
        .unwrap()
        .flat_map(|d| {
            std::fs::read_dir(d.unwrap().path())
                .unwrap()
                .map(|f| f.unwrap().path())
        })
        .collect();
    for backend in ["ort-cpu", "tract"] {
        let r = run(Command::new(bin("maxl-infer"))
            .args(["predict", "--backend", backend, "--model"])
            .arg(models())
            .args(&files));
        r.assert_ok();
        let right = r
            .stdout
            .lines()
            .skip(1)
            .filter(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                Path::new(cols[0])
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    == cols[1]
            })
            .count();
        assert!(right >= 35, "{backend}: {right} of 50 right\n{}", r.stdout);
    }
}
