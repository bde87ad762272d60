//! maxl-train as a user runs it: real Fashion-MNIST, real run directories, real errors.

mod common;

use std::process::Command;

use common::{bin, fashion_mnist_dir, run};

fn train() -> Command {
    let mut c = Command::new(bin("maxl-train"));
    c.arg("--quiet");
    c
}

fn quick(c: &mut Command, out: &std::path::Path) {
    quick_on(c, out, "400");
}

/// One epoch on a class-balanced subset of `train_limit` training images.
fn quick_on(c: &mut Command, out: &std::path::Path, train_limit: &str) {
    c.args([
        "--epochs",
        "1",
        "--train-limit",
        train_limit,
        "--test-limit",
        "300",
        "--threads",
        "1",
        "--out",
    ])
    .arg(out);
}

const COARSE: &str = "dataset:\n  coarse_groups:\n    - {name: tops, classes: [0, 2, 4, 6]}\n    - {name: bottoms, classes: [1, 3]}\n    - {name: footwear, classes: [5, 7, 9]}\n    - {name: bags, classes: [8]}\n";

#[test]
fn all_five_methods_run_and_write_their_run_directory() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("coarse.yaml");
    std::fs::write(&cfg, COARSE).unwrap();
    for method in ["maxl", "maxl-no-entropy", "single", "random", "human"] {
        let out = tmp.path().join(method);
        let mut c = train();
        c.args(["--method", method, "--config"]).arg(&cfg);
        // Ten steps: four (400 class-balanced images) can leave a network guessing one class.
        quick_on(&mut c, &out, "1000");
        let r = run(&mut c);
        r.assert_ok();
        assert!(
            r.stdout
                .contains(&format!("{method}: primary test accuracy")),
            "{}",
            r.stdout
        );
        let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let lines: Vec<&str> = metrics.lines().collect();
        assert_eq!(lines.len(), 2, "{metrics}");
        let header: Vec<&str> = lines[0].split(',').collect();
        let row: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(header.len(), row.len());
        let test_acc: f64 = row[header.iter().position(|h| *h == "test_acc").unwrap()]
            .parse()
            .unwrap();
        assert!(
            test_acc > 0.25,
            "{method}: 4 coarse classes, one short epoch: {test_acc}"
        );
        let generator = method.starts_with("maxl");
        assert_eq!(
            header.iter().any(|h| h.starts_with("usage_entropy.")),
            generator,
            "{header:?}"
        );
        assert_eq!(out.join("label_generator.safetensors").exists(), generator);
        assert!(out.join("multitask.safetensors").exists());
        for png in ["accuracy.png", "loss.png"] {
            let bytes = std::fs::read(out.join(png)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{png}");
        }
        assert_eq!(out.join("slot_usage.png").exists(), generator);
        let config = std::fs::read_to_string(out.join("config.yaml")).unwrap();
        assert!(config.contains(&format!("method: {method}")), "{config}");
        if method == "human" {
            // ψ comes from the fine labels: 4 + 2 + 3 + 1 Fashion-MNIST classes.
            assert!(config.contains("- 4\n  - 2\n  - 3\n  - 1"), "{config}");
        }
    }
}

#[test]
fn maxl_learns_fashion_mnist_and_its_generator_neither_collapses_nor_stays_uniform() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let r = run(train()
        .args([
            "--epochs",
            "2",
            "--train-limit",
            "10000",
            "--test-limit",
            "2000",
            "--out",
        ])
        .arg(&out));
    r.assert_ok();
    let summary = std::fs::read_to_string(out.join("summary.yaml")).unwrap();
    let value = |key: &str| -> f64 {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("{key} missing: {summary}"))
            .parse()
            .unwrap()
    };
    assert!(value("primary_test_accuracy") > 0.75, "{summary}");
    let usage: Vec<f64> = summary
        .lines()
        .skip_while(|l| !l.starts_with("generator_usage_entropy:"))
        .skip(1)
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(usage.len(), 10);
    let mean = usage.iter().sum::<f64>() / 10.0;
    assert!(mean > 0.2, "slot usage collapsed: {summary}");
    assert!(
        value("generator_sample_entropy") < 0.995,
        "labels are uniform noise: {summary}"
    );
}

#[test]
fn bad_configs_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let out = tmp.path().join("never");
    let cases: Vec<(std::path::PathBuf, Vec<&str>)> = vec![
        (
            write("syntax.yaml", "epochs: [3\n"),
            vec!["syntax.yaml", "line"],
        ),
        (
            write("field.yaml", "epoks: 3\n"),
            vec!["field.yaml", "unknown field `epoks`"],
        ),
        (
            write("preset.yaml", "model: {preset: resnet}\n"),
            vec!["preset.yaml", "unknown preset `resnet`"],
        ),
        (
            write("zero.yaml", "hierarchy: {psi: [1, 0]}\n"),
            vec!["zero.yaml", "ψ[1] is 0"],
        ),
    ];
    for (cfg, needles) in cases {
        let mut c = train();
        c.arg("--config").arg(&cfg).arg("--out").arg(&out);
        run(&mut c).assert_one_line_error(&needles);
    }
    run(train().args(["--config", "/nonexistent/run.yaml"]))
        .assert_one_line_error(&["/nonexistent/run.yaml", "cannot read"]);
    run(train().args(["--preset", "resnet"])).assert_one_line_error(&["unknown preset `resnet`"]);
    assert!(!out.exists(), "nothing is created for a refused run");
}

#[test]
fn data_that_does_not_fit_is_refused() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let psi = tmp.path().join("psi.yaml");
    std::fs::write(&psi, "hierarchy: {psi: [2, 2, 2]}\n").unwrap();
    let out = tmp.path().join("never");
    run(train().arg("--config").arg(&psi).arg("--out").arg(&out))
        .assert_one_line_error(&["ψ has 3 entries but the dataset has 10 primary classes"]);
    run(train().args(["--method", "human"]).arg("--out").arg(&out))
        .assert_one_line_error(&["method `human` needs fine labels"]);
    run(train().args(["--preset", "vgg16"]).arg("--out").arg(&out))
        .assert_one_line_error(&["1×28×28", "3×32×32"]);
    assert!(!out.exists());
}

#[test]
fn missing_and_truncated_dataset_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(train().arg("--data").arg(&empty).arg("--out").arg(&out))
        .assert_one_line_error(&["train-images-idx3-ubyte.gz", "No such file"]);
    // A copy of the real test split with a truncated training images file.
    let src = fashion_mnist_dir();
    let trunc = tmp.path().join("trunc");
    std::fs::create_dir(&trunc).unwrap();
    for f in [
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(src.join(f), trunc.join(f)).unwrap();
    }
    let images = std::fs::read(src.join("train-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        trunc.join("train-images-idx3-ubyte.gz"),
        &images[..images.len() / 2],
    )
    .unwrap();
    run(train().arg("--data").arg(&trunc).arg("--out").arg(&out))
        .assert_one_line_error(&["train-images-idx3-ubyte.gz", "corrupt gzip"]);
    assert!(!out.exists());
}

#[test]
fn an_existing_run_is_never_overwritten() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("metrics.csv"), "precious\n").unwrap();
    let mut c = train();
    quick(&mut c, &out);
    run(&mut c).assert_one_line_error(&["already holds a run"]);
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv")).unwrap(),
        "precious\n"
    );
}

/// metrics.csv without the wall-clock and CPU-time columns.
fn metrics_without_seconds(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let timed: Vec<usize> = ["seconds", "cpu_seconds"]
        .iter()
        .map(|name| header.iter().position(|h| h == name).unwrap())
        .collect();
    text.lines()
        .map(|l| {
            let cols: Vec<&str> = l
                .split(',')
                .enumerate()
                .filter(|(i, _)| !timed.contains(i))
                .map(|(_, c)| c)
                .collect();
            cols.join(",")
        })
        .collect()
}

#[test]
fn a_resumed_run_equals_the_uninterrupted_run() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    let common = [
        "--train-limit",
        "500",
        "--test-limit",
        "300",
        "--threads",
        "1",
        "--batch-size",
        "50",
    ];
    run(train()
        .args(common)
        .args(["--epochs", "3", "--out"])
        .arg(&full))
    .assert_ok();
    run(train()
        .args(common)
        .args(["--epochs", "1", "--out"])
        .arg(&split))
    .assert_ok();
    // An interruption after the metrics row of epoch 2 but before its checkpoint: the resumed
    // run drops the row the checkpoint does not cover.
    let csv = split.join("metrics.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("2,0.05,1,1,1,1,0.1,0.1,0.1,1.0,0.5\n");
    std::fs::write(&csv, text).unwrap();
    let r = run(train()
        .arg("--resume")
        .arg(&split)
        .args(["--epochs", "3", "--threads", "1"]));
    r.assert_ok();
    assert_eq!(
        metrics_without_seconds(&full),
        metrics_without_seconds(&split)
    );
    for f in ["multitask.safetensors", "label_generator.safetensors"] {
        assert_eq!(
            std::fs::read(full.join(f)).unwrap(),
            std::fs::read(split.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // Resuming a finished run does nothing and changes nothing.
    let before = std::fs::read_to_string(&csv).unwrap();
    let r = run(train().arg("--resume").arg(&split).args(["--threads", "1"]));
    r.assert_ok();
    assert!(r.stdout.contains("nothing to do"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), before);
    // --resume takes the run's own config: other settings are a usage error.
    let r = run(train()
        .arg("--resume")
        .arg(&split)
        .args(["--method", "single"]));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("'--resume <DIR>' cannot be used with '--method <METHOD>'"),
        "{}",
        r.stderr
    );
}

#[test]
fn deterministic_mode_and_max_steps() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "--no-shuffle",
        "--no-augment",
        "--max-steps",
        "3",
        "--train-limit",
        "400",
        "--test-limit",
        "100",
        "--threads",
        "1",
        "--epochs",
        "5",
    ];
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(train().args(args).arg("--out").arg(&a)).assert_ok();
    run(train()
        .args(args)
        .args(["--seed", "7"])
        .arg("--out")
        .arg(&b))
    .assert_ok();
    let summary = std::fs::read_to_string(a.join("summary.yaml")).unwrap();
    assert!(summary.contains("steps: 3\n"), "{summary}");
    assert_eq!(metrics_without_seconds(&a).len(), 2, "one partial epoch");
    let config = std::fs::read_to_string(a.join("config.yaml")).unwrap();
    assert!(
        config.contains("shuffle: false")
            && config.contains("crop_padding: 0")
            && config.contains("horizontal_flip: false")
    );
    // A different seed changes the initial weights, so the metrics differ; with the same seed
    // a rerun is identical (the resume test covers that).
    assert_ne!(metrics_without_seconds(&a), metrics_without_seconds(&b));
}

#[test]
fn checkpoints_load_in_pytorch_with_the_documented_names() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run(train()
        .args([
            "--epochs",
            "1",
            "--train-limit",
            "200",
            "--test-limit",
            "100",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&out))
    .assert_ok();
    let arch = maxl_core::Architecture::preset("small").unwrap();
    let script = "import sys\nfrom safetensors.torch import load_file\nfor k, v in sorted(load_file(sys.argv[1]).items()):\n    print(k, 'x'.join(map(str, v.shape)))\n";
    for (file, specs) in [
        ("multitask.safetensors", arch.multitask_params(10, 50)),
        ("label_generator.safetensors", arch.generator_params(50)),
    ] {
        for path in [
            out.join(file),
            out.join("checkpoints/last").join(file),
            out.join("checkpoints/best").join(file),
        ] {
            let r = run(Command::new(common::python())
                .args(["-c", script])
                .arg(&path));
            r.assert_ok();
            let mut want: Vec<String> = specs
                .iter()
                .map(|s| {
                    format!(
                        "{} {}",
                        s.name,
                        s.shape
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join("x")
                    )
                })
                .collect();
            want.sort();
            let got: Vec<String> = r.stdout.lines().map(String::from).collect();
            assert_eq!(got, want, "{}", path.display());
        }
    }
}

#[test]
fn bench_times_every_mode_in_its_own_process_against_single_task() {
    let r = run(Command::new(bin("maxl-train")).args([
        "bench",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "2",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]));
    r.assert_ok();
    let rows: Vec<&str> = r.stdout.lines().skip(2).collect();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "single",
            "reference-double-backward",
            "reference-jvp",
            "interleaved-double-backward",
            "interleaved-jvp",
            "fused-double-backward",
            "fused-jvp"
        ],
        "{}",
        r.stdout
    );
    for row in &rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let ms: f64 = cols[1].parse().unwrap();
        let ratio: f64 = cols[2].parse().unwrap();
        let rss: f64 = cols[4].parse().unwrap();
        assert!(ms > 0.0 && ratio > 0.0 && rss > 10.0, "{row}");
        if cols[0] == "single" {
            assert_eq!(ratio, 1.0);
        }
    }
    // JSON lines for scripts, and a clear error for an unknown mode.
    let r = run(Command::new(bin("maxl-train")).args([
        "bench",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--modes",
        "single,fused-jvp",
        "--json",
    ]));
    r.assert_ok();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("\"mode\": \"fused-jvp\""), "{}", r.stdout);
    let r = run(Command::new(bin("maxl-train")).args(["bench", "--modes", "fast"]));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("unknown mode `fast`"), "{}", r.stderr);
    // The f32 check of the jvp meta-gradient against the double backward.
    let r = run(Command::new(bin("maxl-train")).args([
        "bench",
        "--check-jvp",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]));
    r.assert_ok();
    let d: f64 = r
        .stdout
        .split("= ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(d < 1e-4, "{}", r.stdout);
}

#[test]
fn compare_runs_methods_by_seeds_resumes_and_writes_the_results() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exp");
    let experiment = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/maxl-train/configs/low-data-fmnist.yaml"
    );
    let compare = |test_limit: &str| {
        let mut c = Command::new(bin("maxl-train"));
        c.args([
            "compare",
            experiment,
            "--quiet",
            "--seeds",
            "0,1",
            "--only",
            "single,maxl",
        ]);
        c.args([
            "--epochs",
            "1",
            "--train-limit",
            "200",
            "--test-limit",
            test_limit,
            "--threads",
            "1",
            // Batches made from images kept on the device (the CPU here): the same numbers.
            "--data-placement",
            "device",
        ]);
        c.arg("--out").arg(&out);
        run(&mut c)
    };
    let r = compare("300");
    r.assert_ok();
    // The output directory records the whole experiment, not the runs and seeds chosen:
    // `results` shows whatever has finished, whichever compare trained it.
    let recorded = std::fs::read_to_string(out.join("experiment.yaml")).unwrap();
    assert!(
        recorded.contains("name: single-at-maxl-time") && recorded.contains("- 2"),
        "{recorded}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    let rows: Vec<&str> = md.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(
        rows[0].starts_with("| single | single |") && rows[0].contains("| 2 | 1 |"),
        "{md}"
    );
    assert!(
        rows[1].starts_with("| maxl | maxl | reference | jvp | 5 | 2 | 1 |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "header + 2 runs × 2 seeds: {csv}");
    for l in csv.lines().skip(1).filter(|l| l.starts_with("single,")) {
        assert!(
            l.ends_with(",0.00000"),
            "the baseline's paired difference is 0: {l}"
        );
    }
    for png in ["test_accuracy.png", "slot_usage.png"] {
        assert!(
            std::fs::metadata(out.join(png)).unwrap().len() > 5000,
            "{png}"
        );
    }
    // 200 images, class-balanced: 20 per class.
    let cfg = std::fs::read_to_string(out.join("maxl/seed-1/config.yaml")).unwrap();
    assert!(
        cfg.contains("train_limit: 200") && cfg.contains("seed: 1"),
        "{cfg}"
    );

    // Finished runs are skipped: nothing changes, the table is rewritten the same.
    let before = std::fs::read_to_string(out.join("maxl/seed-0/metrics.csv")).unwrap();
    let r = compare("300");
    r.assert_ok();
    assert_eq!(
        std::fs::read_to_string(out.join("maxl/seed-0/metrics.csv")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        csv
    );
    let r = run(Command::new(bin("maxl-train")).arg("results").arg(&out));
    r.assert_ok();
    assert_eq!(std::fs::read_to_string(out.join("results.md")).unwrap(), md);

    // An unfinished run (no summary yet) is run again; a run of another config is refused.
    std::fs::remove_file(out.join("single/seed-1/summary.yaml")).unwrap();
    compare("300").assert_ok();
    assert!(out.join("single/seed-1/summary.yaml").exists());
    let r = compare("301");
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("single/seed-0") && r.stderr.contains("holds a run of another config"),
        "{}",
        r.stderr
    );
}

#[test]
fn without_a_validation_set_metrics_stay_rectangular_and_best_is_the_last_epoch() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("noval.yaml");
    std::fs::write(&cfg, "dataset:\n  validation_fraction: 0.0\n").unwrap();
    let out = tmp.path().join("run");
    let mut c = train();
    c.arg("--config").arg(&cfg);
    quick(&mut c, &out);
    run(&mut c).assert_ok();
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let widths: Vec<usize> = metrics.lines().map(|l| l.split(',').count()).collect();
    assert_eq!(widths.len(), 2);
    assert_eq!(widths[0], widths[1], "{metrics}");
    assert!(out.join("checkpoints/best/multitask.safetensors").exists());
}
