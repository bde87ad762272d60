//! maxl-train as a user runs it: real Fashion-MNIST, real run directories, real errors.

mod common;

use std::process::Command;

use common::{assert_same_weights, bin, fashion_mnist_dir, metrics_without_seconds, run};

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

/// Fashion-MNIST's ten classes in four coarse groups of unequal size.
const COARSE: [(&str, &[usize]); 4] = [
    ("tops", &[0, 2, 4, 6]),
    ("bottoms", &[1, 3]),
    ("footwear", &[5, 7, 9]),
    ("bags", &[8]),
];

/// A config file that trains on the [`COARSE`] groups.
fn coarse_config() -> String {
    let mut yaml = String::from("dataset:\n  coarse_groups:\n");
    for (name, classes) in COARSE {
        yaml.push_str(&format!("    - {{name: {name}, classes: {classes:?}}}\n"));
    }
    yaml
}

/// The labels of Fashion-MNIST's test split, read from the installed IDX file.
fn fashion_mnist_test_labels() -> Vec<usize> {
    use std::io::Read;
    let path = fashion_mnist_dir().join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(bytes[..4], [0, 0, 8, 1], "IDX labels magic");
    bytes[8..].iter().map(|&b| usize::from(b)).collect()
}

/// The accuracy of always answering the largest [`COARSE`] group on `--test-limit n` images
/// (drawn class-balanced over the ten original classes).
fn coarse_majority_share(n: usize) -> f64 {
    let mut per_class = [0usize; 10];
    for k in fashion_mnist_test_labels() {
        per_class[k] += 1;
    }
    // Every class holds more than an equal share of n: each gives exactly n / 10 images.
    assert!(
        n.is_multiple_of(10) && per_class.iter().all(|&c| c >= n / 10),
        "{per_class:?}"
    );
    COARSE
        .iter()
        .map(|(_, classes)| (classes.len() * n / 10) as f64 / n as f64)
        .fold(0.0, f64::max)
}

#[test]
fn all_five_methods_run_and_write_their_run_directory() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("coarse.yaml");
    std::fs::write(&cfg, coarse_config()).unwrap();
    // Always answering the largest group (tops: 4 of 10 classes) scores 0.4. Over 23 runs
    // (seeds 0–6) every method scored at least 0.54.
    let majority = coarse_majority_share(300);
    assert!((majority - 0.4).abs() < 1e-12, "{majority}");
    const MARGIN: f64 = 0.1;
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
            test_acc > majority + MARGIN,
            "{method}: 4 coarse classes, one short epoch: {test_acc} (majority share {majority})"
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

/// `maxl-weighted` from the command line: the generator's weights per epoch in metrics.csv
/// (overall percentiles and per class), summary.yaml, its plots, a checkpoint that resumes, and
/// an export whose label generator outputs `sample_weight` (declared in the manifest).
#[test]
fn maxl_weighted_reports_its_weights_resumes_and_exports_them() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("weighted");
    let mut c = train();
    c.args([
        "--method",
        "maxl-weighted",
        "--weight-mean-penalty",
        "0.1",
        "--schedule",
        "fused",
        "--meta-gradient",
        "jvp",
    ]);
    // The fused schedule needs plain SGD for θ1.
    let cfg = tmp.path().join("sgd.yaml");
    std::fs::write(
        &cfg,
        "multitask_optimizer: {lr: 0.05, momentum: 0.0, weight_decay: 0.0}\ngenerator_optimizer: {lr: 0.05}\n",
    )
    .unwrap();
    c.arg("--config").arg(&cfg);
    quick_on(&mut c, &out, "600");
    let r = run(&mut c);
    r.assert_ok();
    assert!(
        r.stdout.contains("per-image weight of the auxiliary loss"),
        "{}",
        r.stdout
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let per_class = header
        .iter()
        .filter(|h| h.starts_with("weight_mean."))
        .count();
    assert_eq!(per_class, 10, "{header:?}");
    let value = |name: &str| -> f64 { metrics_column(&out, name)[0].parse().unwrap() };
    let (p10, p50, p90, mean) = (
        value("weight_p10"),
        value("weight_p50"),
        value("weight_p90"),
        value("weight_mean"),
    );
    assert!(
        0.0 < p10 && p10 <= p50 && p50 <= p90 && p90 < 2.0,
        "{metrics}"
    );
    assert!(p10 <= mean + 1e-3 && mean <= p90 + 1e-3, "{metrics}");
    // One epoch of meta-gradient steps moved them off their start at exactly 1.
    assert!(p10 < 0.999 || p90 > 1.001, "{metrics}");
    let summary = std::fs::read_to_string(out.join("summary.yaml")).unwrap();
    assert!(
        summary.contains("generator_weights:\n  mean: "),
        "{summary}"
    );
    for png in ["weights.png", "weights_by_class.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    let config = std::fs::read_to_string(out.join("config.yaml")).unwrap();
    assert!(
        config.contains("method: maxl-weighted") && config.contains("weight_mean_penalty: 0.1"),
        "{config}"
    );
    // A second epoch from the checkpoint keeps the weight head.
    run(train()
        .args(["--resume"])
        .arg(&out)
        .args(["--epochs", "2", "--threads", "1"]))
    .assert_ok();
    assert_eq!(metrics_column(&out, "weight_mean").len(), 2);
    // The export: the generator's `sample_weight`, declared in the manifest.
    let models = tmp.path().join("models");
    run(Command::new(bin("maxl-train"))
        .args(["export", "--checkpoint"])
        .arg(out.join("checkpoints/last"))
        .arg("--out")
        .arg(&models))
    .assert_ok();
    let manifest = std::fs::read_to_string(models.join("maxl.yaml")).unwrap();
    assert!(manifest.contains("sample_weight"), "{manifest}");
    // The penalty belongs to maxl-weighted alone.
    let r = run(train().args(["--method", "maxl", "--weight-mean-penalty", "0.1"]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("weight_mean_penalty applies to method `maxl-weighted` only"),
        "{}",
        r.stderr
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
    assert_same_weights(&full, &split);
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
    let (a, again, b) = (
        tmp.path().join("a"),
        tmp.path().join("again"),
        tmp.path().join("b"),
    );
    run(train().args(args).arg("--out").arg(&a)).assert_ok();
    run(train().args(args).arg("--out").arg(&again)).assert_ok();
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
    // The same seed reproduces the run: the same metrics and, bit for bit, the same weights
    // and checkpoints.
    assert_eq!(metrics_without_seconds(&a), metrics_without_seconds(&again));
    for f in [
        "multitask.safetensors",
        "label_generator.safetensors",
        "checkpoints/last/multitask.safetensors",
        "checkpoints/last/label_generator.safetensors",
        "checkpoints/last/optimizer.safetensors",
        "checkpoints/last/state.yaml",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f} differs between two runs with the same seed"
        );
    }
    // A different seed changes the initial weights, so the metrics and weights differ.
    assert_ne!(metrics_without_seconds(&a), metrics_without_seconds(&b));
    assert_ne!(
        std::fs::read(a.join("multitask.safetensors")).unwrap(),
        std::fs::read(b.join("multitask.safetensors")).unwrap()
    );
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
    let mut written = std::collections::BTreeMap::new();
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
            written.insert(file, got);
        }
    }
    // The documented names and shapes are those written.
    let (doc_path, doc) = checkpoint_names_doc();
    let doc_name = doc_path.display();
    let table = checkpoint_name_table(&doc);
    let tensors = |file: &str| -> Vec<(String, Vec<usize>)> {
        written[file]
            .iter()
            .map(|l| {
                let (name, shape) = l.split_once(' ').unwrap();
                (
                    name.to_string(),
                    shape.split('x').map(|d| d.parse().unwrap()).collect(),
                )
            })
            .collect()
    };
    let multitask = tensors("multitask.safetensors");
    for (name, _) in &multitask {
        assert!(
            table
                .iter()
                .flat_map(|(n, _)| n)
                .any(|p| glob_match(p, name)),
            "{doc_name}: `{name}` is written but not in the table"
        );
    }
    // Symbols (C_out, H, K, …) take one value per conv layer ({i}) or network-wide.
    let mut symbols: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for (names, shapes) in &table {
        for (j, pattern) in names.iter().enumerate() {
            let matched: Vec<&(String, Vec<usize>)> = multitask
                .iter()
                .filter(|(n, _)| glob_match(pattern, n))
                .collect();
            assert!(
                !matched.is_empty(),
                "{doc_name}: `{pattern}` matches nothing written"
            );
            let shape = match shapes.len() {
                1 => &shapes[0],
                n if n == names.len() => &shapes[j],
                _ => continue,
            };
            for (name, dims) in matched {
                assert_eq!(
                    dims.len(),
                    shape.len(),
                    "{doc_name}: {name} {dims:?} vs {shape:?}"
                );
                let layer = pattern
                    .split_once("{i}")
                    .map(|(before, _)| name[before.len()..].split('.').next().unwrap().to_string())
                    .unwrap_or_default();
                for (d, sym) in dims.iter().zip(shape) {
                    match sym.parse::<usize>() {
                        Ok(v) => assert_eq!(*d, v, "{doc_name}: {name} {dims:?} vs {shape:?}"),
                        Err(_) => {
                            let bound = *symbols.entry((sym.clone(), layer.clone())).or_insert(*d);
                            assert_eq!(
                                *d, bound,
                                "{doc_name}: {name} {dims:?}: {sym} was {bound} before"
                            );
                        }
                    }
                }
            }
        }
    }
    // The generator's names: the table's backbone and the head patterns in the text.
    let spans: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains('*') || s.contains("{i}"))
        .collect();
    for (name, _) in tensors("label_generator.safetensors") {
        assert!(
            table
                .iter()
                .flat_map(|(n, _)| n.iter().map(String::as_str))
                .chain(spans.iter().copied())
                .any(|p| glob_match(p, &name)),
            "{doc_name}: the generator's `{name}` is not documented"
        );
    }
}

/// The documentation file, README.md or one of docs/*.md, that holds the table of checkpoint
/// names (the row with `primary_head.0.weight`), with its text.
fn checkpoint_names_doc() -> (std::path::PathBuf, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        files.extend(
            dir.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "md")),
        );
    }
    let mut found: Vec<(std::path::PathBuf, String)> = files
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            text.lines()
                .any(|l| l.starts_with('|') && l.contains("`primary_head.0.weight`"))
                .then_some((p, text))
        })
        .collect();
    let names: Vec<_> = found.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        found.len(),
        1,
        "one file holds the table of names: {names:?}"
    );
    found.pop().unwrap()
}

/// The rows of the checkpoint-name table in `doc`: (name patterns, shapes). A name written
/// `.bn.bias` continues the one before it (`backbone.{i}.bn.weight` → `backbone.{i}.bn.bias`);
/// code spans without a dot (`single`) are not names. Shapes are the `[…]` of the second cell,
/// as lists of dimensions (numbers or symbols).
fn checkpoint_name_table(doc: &str) -> Vec<(Vec<String>, Vec<Vec<String>>)> {
    let lines: Vec<&str> = doc.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with('|') && l.contains("`primary_head.0.weight`"))
        .unwrap();
    let start = (0..=at)
        .rev()
        .take_while(|&i| lines[i].starts_with('|'))
        .last()
        .unwrap();
    let rows: Vec<(Vec<String>, Vec<Vec<String>>)> = lines[start..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        // The header and the separator have no code spans.
        .filter(|l| l.contains('`'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            let mut names: Vec<String> = Vec::new();
            for span in cells[1].split('`').skip(1).step_by(2) {
                if !span.contains('.') {
                    continue;
                }
                let name = match (span.strip_prefix('.'), names.last()) {
                    (Some(rest), Some(prev)) => {
                        let first = format!(".{}.", rest.split('.').next().unwrap());
                        let cut = prev
                            .find(&first)
                            .unwrap_or_else(|| panic!("`{span}` does not continue `{prev}`"));
                        format!("{}{span}", &prev[..cut])
                    }
                    _ => span.to_string(),
                };
                names.push(name);
            }
            let shapes = cells[2]
                .split('[')
                .skip(1)
                .map(|s| {
                    s.split(']')
                        .next()
                        .unwrap()
                        .split(',')
                        .map(|d| d.trim().to_string())
                        .collect()
                })
                .collect();
            (names, shapes)
        })
        .collect();
    assert!(rows.len() >= 4, "{rows:?}");
    rows
}

/// Whether `name` fits `pattern`, in which `{i}` stands for a layer number and `*` for the rest
/// of a name (one or more characters).
fn glob_match(pattern: &str, name: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("{i}") {
        let digits = name.bytes().take_while(u8::is_ascii_digit).count();
        (1..=digits).any(|k| glob_match(rest, &name[k..]))
    } else if let Some(rest) = pattern.strip_prefix('*') {
        (1..=name.len()).any(|k| name.is_char_boundary(k) && glob_match(rest, &name[k..]))
    } else {
        match (pattern.chars().next(), name.chars().next()) {
            (None, None) => true,
            (Some(p), Some(n)) if p == n => {
                glob_match(&pattern[p.len_utf8()..], &name[n.len_utf8()..])
            }
            _ => false,
        }
    }
}

/// A smoke test: every mode is timed in its own process and reported against single-task (the
/// timings themselves are only checked to be positive).
#[test]
fn bench_smoke_test_times_every_mode_in_its_own_process_against_single_task() {
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
            "fused-jvp",
            "weighted-interleaved-double-backward",
            "weighted-interleaved-jvp",
            "weighted-fused-double-backward",
            "weighted-fused-jvp"
        ],
        "{}",
        r.stdout
    );
    for row in &rows {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let ms: f64 = cols[1].parse().unwrap();
        let ratio: f64 = cols[2].parse().unwrap();
        let rss: f64 = cols[5].parse().unwrap();
        assert!(ms > 0.0 && ratio > 0.0 && rss > 10.0, "{row}");
        if cols[0] == "single" {
            assert_eq!(ratio, 1.0);
        }
        // maxl-weighted's rows also against the MAXL iteration they add weights to.
        let to_maxl = cols[3].parse::<f64>();
        assert_eq!(to_maxl.is_ok(), cols[0].starts_with("weighted-"), "{row}");
        assert!(to_maxl.map_or(true, |v| v > 0.0), "{row}");
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
    let modes: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["mode"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(modes, ["single", "fused-jvp"], "{}", r.stdout);
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
    // maxl's paired difference: its test accuracy minus the baseline's of the same seed, as
    // each run's summary.yaml records them.
    let test_acc = |run: &str, seed: &str| -> f64 {
        yaml_value(
            &out.join(run).join(format!("seed-{seed}/summary.yaml")),
            "primary_test_accuracy",
        )
        .parse()
        .unwrap()
    };
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut diffs = Vec::new();
    for l in csv.lines().skip(1).filter(|l| l.starts_with("maxl,")) {
        let cols: Vec<&str> = l.split(',').collect();
        let seed = cols[col("seed")];
        let want = test_acc("maxl", seed) - test_acc("single", seed);
        let got: f64 = cols[col("diff_to_baseline")].parse().unwrap();
        assert!(
            (got - want).abs() < 1e-9,
            "seed {seed}: {got} vs {want}: {l}"
        );
        diffs.push(want);
        // The generator's per-image label entropy, as the run's summary.yaml records it.
        let entropy: f64 = yaml_value(
            &out.join("maxl").join(format!("seed-{seed}/summary.yaml")),
            "generator_sample_entropy",
        )
        .parse()
        .unwrap();
        let got: f64 = cols[col("generator_sample_entropy")].parse().unwrap();
        assert!((got - entropy).abs() < 1e-4, "{got} vs {entropy}: {l}");
    }
    // results.md's last column: the per-image entropy for the generator's run only.
    let last_cell = |row: &str| {
        row.trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(last_cell(rows[0]), "—", "{md}");
    assert!(last_cell(rows[1]).contains(" ± "), "{md}");
    assert_eq!(diffs.len(), 2, "{csv}");
    assert!(
        diffs.iter().any(|&d| d != 0.0),
        "maxl and single differ on some seed, else the check above proves little: {csv}"
    );
    // results.md: their mean ± sample standard deviation, in percentage points.
    let mean = (diffs[0] + diffs[1]) / 2.0;
    let std = (diffs[0] - diffs[1]).abs() / 2f64.sqrt();
    let cell: Vec<f64> = rows[1].split('|').map(str::trim).collect::<Vec<_>>()[9]
        .split(" ± ")
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(cell.len(), 2, "{md}");
    assert!(
        (cell[0] - 100.0 * mean).abs() <= 0.0051 && (cell[1] - 100.0 * std).abs() <= 0.0051,
        "Δ {cell:?} vs {} ± {}: {md}",
        100.0 * mean,
        100.0 * std
    );
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

/// A value of `key: value` in a YAML file of plain scalars (summary.yaml, state.yaml).
fn yaml_value(path: &std::path::Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} missing in {}: {text}", path.display()))
        .trim()
        .to_string()
}

/// One column of metrics.csv.
fn metrics_column(dir: &std::path::Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let col = lines
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}: {text}"));
    lines
        .map(|l| l.split(',').nth(col).unwrap().to_string())
        .collect()
}

#[test]
fn without_a_validation_set_metrics_stay_rectangular_and_best_is_the_last_epoch() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("noval.yaml");
    std::fs::write(&cfg, "dataset:\n  validation_fraction: 0.0\n").unwrap();
    let out = tmp.path().join("run");
    let mut c = train();
    c.arg("--config").arg(&cfg).args([
        "--epochs",
        "2",
        "--train-limit",
        "400",
        "--test-limit",
        "300",
        "--threads",
        "1",
        "--out",
    ]);
    run(c.arg(&out)).assert_ok();
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let widths: Vec<usize> = metrics.lines().map(|l| l.split(',').count()).collect();
    assert_eq!(widths.len(), 3);
    assert!(widths.iter().all(|&w| w == widths[0]), "{metrics}");
    assert_eq!(metrics_column(&out, "val_acc"), ["NaN", "NaN"], "{metrics}");
    // Every epoch is the best so far: the best checkpoint is epoch 2's, the final weights.
    let best = out.join("checkpoints/best");
    assert!(best.join("multitask.safetensors").exists());
    assert_eq!(yaml_value(&best.join("state.yaml"), "epochs_done"), "2");
    assert_eq!(yaml_value(&best.join("state.yaml"), "best_epoch"), "2");
    assert_eq!(yaml_value(&out.join("summary.yaml"), "best_epoch"), "2");
    for f in [
        "multitask.safetensors",
        "label_generator.safetensors",
        "optimizer.safetensors",
        "state.yaml",
    ] {
        assert_eq!(
            std::fs::read(best.join(f)).unwrap(),
            std::fs::read(out.join("checkpoints/last").join(f)).unwrap(),
            "{f}: best and last differ"
        );
    }
    assert_same_weights(&best, &out);
}

#[test]
fn the_best_checkpoint_holds_the_epoch_with_the_best_validation_accuracy() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    // The learning rate grows tenfold every epoch (0.002, 0.02, 0.2, 2): validation accuracy
    // rises, then training overshoots, so the best epoch is neither the first nor the last
    // (epoch 2 for each of seeds 0–4, by 7 points or more).
    let cfg = tmp.path().join("overshoot.yaml");
    std::fs::write(
        &cfg,
        "multitask_optimizer: {lr: 0.002, momentum: 0.9, weight_decay: 0.0}\nlr_step: {every_epochs: 1, gamma: 10.0}\n",
    )
    .unwrap();
    let common = [
        "--method",
        "single",
        "--train-limit",
        "300",
        "--test-limit",
        "100",
        "--threads",
        "1",
        "--batch-size",
        "50",
    ];
    let out = tmp.path().join("run");
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(common)
        .args(["--epochs", "4", "--out"])
        .arg(&out))
    .assert_ok();
    // The first epoch with the highest validation accuracy, from metrics.csv.
    let val: Vec<f64> = metrics_column(&out, "val_acc")
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(val.len(), 4);
    let top = val.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let best_epoch = val.iter().position(|&v| v == top).unwrap() + 1;
    assert!(
        1 < best_epoch && best_epoch < 4,
        "neither the first nor the last epoch is the best here: {val:?}"
    );
    let best = out.join("checkpoints/best");
    assert_eq!(
        yaml_value(&best.join("state.yaml"), "best_epoch"),
        best_epoch.to_string(),
        "{val:?}"
    );
    assert_eq!(
        yaml_value(&best.join("state.yaml"), "epochs_done"),
        best_epoch.to_string()
    );
    assert_eq!(
        yaml_value(&out.join("summary.yaml"), "best_epoch"),
        best_epoch.to_string()
    );
    let reported: f64 = yaml_value(&out.join("summary.yaml"), "best_validation_accuracy")
        .parse()
        .unwrap();
    assert!((reported - top).abs() < 1e-9, "{reported} vs {val:?}");
    // Its weights are those after that epoch: a run of just that many epochs (the same seed,
    // so the same epochs) ends with them.
    let short = tmp.path().join("short");
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(common)
        .args(["--epochs", &best_epoch.to_string(), "--out"])
        .arg(&short))
    .assert_ok();
    assert_eq!(
        std::fs::read(best.join("multitask.safetensors")).unwrap(),
        std::fs::read(short.join("multitask.safetensors")).unwrap(),
        "best is not epoch {best_epoch}'s weights ({val:?})"
    );
}

#[test]
fn a_generator_with_its_own_architecture_resumes_and_exports() {
    fashion_mnist_dir();
    let tmp = tempfile::tempdir().unwrap();
    // f: the small VGG preset; g: a narrow ResNet on the same 1×28×28 input.
    let cfg = tmp.path().join("gen.yaml");
    std::fs::write(
        &cfg,
        "model:\n  preset: small\n  generator:\n    architecture:\n      input: {channels: 1, height: 28, width: 28, mean: 0.5, std: 0.2}\n      resnet: {block: basic, layers: [1, 1], widths: [4, 8], stem: cifar}\n      head_hidden: 16\n",
    )
    .unwrap();
    let common = [
        "--train-limit",
        "200",
        "--test-limit",
        "100",
        "--threads",
        "1",
        "--batch-size",
        "50",
    ];
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(common)
        .args(["--epochs", "2", "--out"])
        .arg(&full))
    .assert_ok();
    run(train()
        .arg("--config")
        .arg(&cfg)
        .args(common)
        .args(["--epochs", "1", "--out"])
        .arg(&split))
    .assert_ok();
    run(train()
        .arg("--resume")
        .arg(&split)
        .args(["--epochs", "2", "--threads", "1"]))
    .assert_ok();
    assert_same_weights(&full, &split);
    let models = tmp.path().join("models");
    run(Command::new(bin("maxl-train"))
        .args(["export", "--checkpoint"])
        .arg(split.join("checkpoints/last"))
        .arg("--out")
        .arg(&models))
    .assert_ok();
    let manifest = std::fs::read_to_string(models.join("maxl.yaml")).unwrap();
    assert!(
        manifest.contains("generator_architecture: custom"),
        "{manifest}"
    );
    // The generator's ONNX graph is residual: it has Add nodes, f's VGG graph has none.
    let generator = std::fs::read(models.join("label_generator.onnx")).unwrap();
    let primary = std::fs::read(models.join("primary.onnx")).unwrap();
    let has = |bytes: &[u8], s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has(&generator, "GlobalAveragePool") && !has(&primary, "GlobalAveragePool"));
    // A generator whose input is not f's is refused in one line.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("height: 28, width: 28", "height: 32, width: 32"),
    )
    .unwrap();
    run(train()
        .arg("--config")
        .arg(&bad)
        .args(common)
        .arg("--out")
        .arg(tmp.path().join("bad")))
    .assert_one_line_error(&["bad.yaml", "generator"]);
}
