//! maxl-train on the other dataset formats, with files the tests write in each format.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, metrics_without_seconds, run};

fn train() -> Command {
    train_for("1")
}

fn train_for(epochs: &str) -> Command {
    let mut c = Command::new(bin("maxl-train"));
    c.args([
        "--quiet",
        "--threads",
        "1",
        "--epochs",
        epochs,
        "--batch-size",
        "10",
    ]);
    c
}

/// Epochs that learn [`write_folder`]'s classes (every seed tried reached test accuracy 1).
const EPOCHS: &str = "6";

/// How far above the largest test class's share the test accuracy must be.
const MARGIN: f64 = 0.4;

/// A config under which [`write_folder`]'s classes are learnable: every training image trains
/// (no validation split) and no horizontal flips (a flip moves a square to the other side, into
/// another class's corner); `dataset_extra` adds lines to `dataset:`.
fn learning_config(dir: &Path, dataset_extra: &str) -> std::path::PathBuf {
    let path = dir.join("learn.yaml");
    std::fs::write(
        &path,
        format!("dataset:\n  validation_fraction: 0.0\n  horizontal_flip: false\n{dataset_extra}"),
    )
    .unwrap();
    path
}

/// The primary test accuracy a run's summary.yaml reports.
fn test_accuracy(run: &Path) -> f64 {
    let summary = std::fs::read_to_string(run.join("summary.yaml")).unwrap();
    summary
        .lines()
        .find_map(|l| l.strip_prefix("primary_test_accuracy: "))
        .unwrap_or_else(|| panic!("{summary}"))
        .parse()
        .unwrap()
}

/// Images per class folder under `root`.
fn images_per_class(root: &Path) -> Vec<usize> {
    let mut counts: Vec<usize> = std::fs::read_dir(root)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .collect();
    counts.sort_unstable();
    counts
}

/// Class k's images are a bright square in a different corner: learnable, not trivial noise.
fn write_folder(root: &Path, classes: &[&str], per_class: usize, size: u32) {
    for (k, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(size, size, |x, y| {
                let corner = (x < size / 2) as usize + 2 * ((y < size / 2) as usize);
                let v = if corner == k {
                    220
                } else {
                    20 + (i as u8 % 7) * 5
                };
                image::Rgb([v, v / 2, 255 - v])
            });
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{i}.{ext}"))).unwrap();
        }
    }
}

const TINY_RGB_ARCH: &str = "model:\n  architecture:\n    input: {channels: 3, height: 32, width: 32, mean: 0.5, std: 0.2}\n    blocks: [{convs: 1, channels: 4}, {convs: 1, channels: 8}]\n    head_hidden: 16\n";

#[test]
fn trains_on_an_image_folder_and_refuses_bad_images_and_unknown_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let (tr, te) = (tmp.path().join("train"), tmp.path().join("test"));
    write_folder(&tr, &["a", "b", "c"], 12, 40);
    write_folder(&te, &["a", "b", "c"], 4, 24);
    let cfg = learning_config(tmp.path(), "");
    let out = tmp.path().join("run");
    let r = run(train_for(EPOCHS)
        .args(["--dataset", "image-folder", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&tr)
        .arg("--test-data")
        .arg(&te)
        .arg("--out")
        .arg(&out));
    r.assert_ok();
    // The classes are learnable: well above always answering the largest test class.
    let counts = images_per_class(&te);
    let majority = *counts.last().unwrap() as f64 / counts.iter().sum::<usize>() as f64;
    let acc = test_accuracy(&out);
    assert!(
        acc >= majority + MARGIN,
        "test accuracy {acc}, largest class {majority}"
    );
    let summary = std::fs::read_to_string(out.join("summary.yaml")).unwrap();
    assert!(summary.contains("psi: [5, 5, 5]"), "{summary}");
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        metrics
            .lines()
            .next()
            .unwrap()
            .contains("usage_entropy.a,usage_entropy.b,usage_entropy.c"),
        "{metrics}"
    );

    let never = tmp.path().join("never");
    std::fs::write(
        te.join("b").join("broken.png"),
        b"\x89PNG\r\n\x1a\ntruncated",
    )
    .unwrap();
    run(train()
        .args(["--dataset", "image-folder", "--data"])
        .arg(&tr)
        .arg("--test-data")
        .arg(&te)
        .arg("--out")
        .arg(&never))
    .assert_one_line_error(&["broken.png", "cannot decode image"]);
    std::fs::remove_file(te.join("b").join("broken.png")).unwrap();
    write_folder(&te, &["zebra"], 1, 24);
    run(train()
        .args(["--dataset", "image-folder", "--data"])
        .arg(&tr)
        .arg("--test-data")
        .arg(&te)
        .arg("--out")
        .arg(&never))
    .assert_one_line_error(&["zebra", "not among the training classes"]);
    run(train()
        .args(["--dataset", "image-folder"])
        .arg("--out")
        .arg(&never))
    .assert_one_line_error(&["dataset.path is required"]);
    assert!(!never.exists());
}

#[test]
fn a_streamed_image_folder_trains_as_the_folder_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (tr, te) = (tmp.path().join("train"), tmp.path().join("test"));
    write_folder(&tr, &["a", "b", "c"], 6, 40);
    write_folder(&te, &["a", "b", "c"], 2, 24);
    let arch = tmp.path().join("arch.yaml");
    std::fs::write(&arch, TINY_RGB_ARCH).unwrap();
    let go = |out: &Path, stream: &[&str]| {
        run(train_for("2")
            .args(["--dataset", "image-folder", "--config"])
            .arg(&arch)
            .arg("--data")
            .arg(&tr)
            .arg("--test-data")
            .arg(&te)
            .args(stream)
            .arg("--out")
            .arg(out))
    };
    let (memory, streamed) = (tmp.path().join("memory"), tmp.path().join("streamed"));
    go(&memory, &["--stream", "never"]).assert_ok();
    // The images take 72 KiB decoded, within a 1 MiB budget: `always` streams them anyway.
    go(&streamed, &["--stream", "always", "--memory-budget", "1"]).assert_ok();
    assert_eq!(
        metrics_without_seconds(&memory),
        metrics_without_seconds(&streamed)
    );
    let config = std::fs::read_to_string(streamed.join("config.yaml")).unwrap();
    assert!(
        config.contains("stream: always") && config.contains("memory_budget_mb: 1"),
        "{config}"
    );
    std::fs::write(te.join("c").join("broken.png"), b"\x89PNG\r\n\x1a\ncut").unwrap();
    go(&tmp.path().join("bad"), &["--stream", "always"])
        .assert_one_line_error(&["broken.png", "cannot decode image"]);
    let r = go(&tmp.path().join("bad2"), &["--stream", "sometimes"]);
    assert_eq!(r.code, Some(2), "a usage error: {}", r.stderr);
}

#[test]
fn trains_on_a_csv_list_with_a_held_out_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let classes = ["w", "x", "y", "z"];
    let per_class = 20;
    write_folder(&tmp.path().join("imgs"), &classes, per_class, 28);
    let mut csv = String::from("path,label\n");
    for class in classes {
        for i in 0..per_class {
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            csv.push_str(&format!("imgs/{class}/{i}.{ext},{class}\n"));
        }
    }
    let list = tmp.path().join("list.csv");
    std::fs::write(&list, csv).unwrap();
    // Half the list held out: 40 test images, more than any class has, so whichever images
    // the seeded split holds out, the largest test class is at most 20 of the 40.
    let cfg = learning_config(tmp.path(), "  test_fraction: 0.5\n");
    let n_test = (classes.len() * per_class) / 2;
    let majority_bound = per_class.min(n_test) as f64 / n_test as f64;
    assert_eq!(majority_bound, 0.5);
    let out = tmp.path().join("run");
    let r = run(train_for(EPOCHS)
        .args(["--dataset", "csv", "--method", "random", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&list)
        .arg("--out")
        .arg(&out));
    r.assert_ok();
    assert!(
        r.stdout.contains("random: primary test accuracy"),
        "{}",
        r.stdout
    );
    let acc = test_accuracy(&out);
    assert!(
        acc >= majority_bound + MARGIN,
        "test accuracy {acc}, largest test class at most {majority_bound}"
    );
    std::fs::write(&list, "imgs/x/0.png,x\nimgs/x/404.png,x\n").unwrap();
    run(train()
        .args(["--dataset", "csv", "--data"])
        .arg(&list)
        .arg("--out")
        .arg(tmp.path().join("never")))
    .assert_one_line_error(&["404.png"]);
}

/// CIFAR-100 records: 1 coarse byte, 1 fine byte, 3072 pixel bytes.
fn write_cifar100(path: &Path, n: usize) {
    let mut bytes = Vec::new();
    for i in 0..n {
        let coarse = (i % 20) as u8;
        let fine = coarse * 5 + (i / 20 % 5) as u8;
        bytes.extend_from_slice(&[coarse, fine]);
        bytes.extend((0..3072).map(|p| ((p * 7 + i * 13) % 256) as u8));
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar100_trains_the_human_baseline_and_refuses_bad_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir(&dir).unwrap();
    write_cifar100(&dir.join("train.bin"), 200);
    write_cifar100(&dir.join("test.bin"), 40);
    let cfg = tmp.path().join("arch.yaml");
    std::fs::write(&cfg, TINY_RGB_ARCH).unwrap();
    let out = tmp.path().join("run");
    let r = run(train()
        .args(["--dataset", "cifar100", "--method", "human", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&dir)
        .arg("--out")
        .arg(&out));
    r.assert_ok();
    let config = std::fs::read_to_string(out.join("config.yaml")).unwrap();
    assert!(config.contains("kind: cifar100"), "{config}");
    let summary = std::fs::read_to_string(out.join("summary.yaml")).unwrap();
    assert!(
        summary.contains(&format!("psi: {:?}", vec![5; 20])),
        "{summary}"
    );

    let never = tmp.path().join("never");
    let bytes = std::fs::read(dir.join("train.bin")).unwrap();
    std::fs::write(dir.join("train.bin"), &bytes[..bytes.len() - 100]).unwrap();
    run(train()
        .args(["--dataset", "cifar100", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&dir)
        .arg("--out")
        .arg(&never))
    .assert_one_line_error(&["train.bin", "3074-byte CIFAR-100 records"]);
    // CIFAR-10 with the default (1×28×28) preset does not fit.
    let c10 = tmp.path().join("c10");
    std::fs::create_dir(&c10).unwrap();
    for f in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let mut rec = vec![3u8];
        rec.extend(vec![9u8; 3072]);
        std::fs::write(c10.join(f), rec.repeat(3)).unwrap();
    }
    run(train()
        .args(["--dataset", "cifar10", "--data"])
        .arg(&c10)
        .arg("--out")
        .arg(&never))
    .assert_one_line_error(&["3×32×32", "1×28×28"]);
    assert!(!never.exists());
}
