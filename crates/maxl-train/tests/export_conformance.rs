//! The exported graphs against the networks they came from: tch forward vs ONNX Runtime vs
//! tract, on random weights with randomised batch-norm statistics and on the trained model
//! committed in models/; the label generator's exact zeros; onnx.checker in the venv's Python;
//! the files' metadata against the manifest, and a manifest edited against it refused at load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use maxl_core::arch::Architecture;
use maxl_core::config::{Method, TrainConfig};
use maxl_core::hierarchy::Hierarchy;
use maxl_core::manifest::Manifest;
use maxl_infer::{Backend, MaxlModel};
use maxl_onnx::{ExportOptions, ModelMetadata};
use maxl_train::export::{ExportInfo, export};
use maxl_train::loss::mask_softmax;
use maxl_train::net::{BatchNorm, LabelGenerator, MultiTaskNet, ParamStore};
use ndarray::{Array1, Array2, Array4};
use tch::{Device, Kind, Tensor};

const TOL: f32 = 1e-4;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// Randomises biases and batch-norm affine parameters on top of the Xavier weights, and scales
/// the output layers ×4 so that the logits span a trained network's range (a few units).
fn randomise(store: &ParamStore) {
    tch::no_grad(|| {
        for (spec, t) in store
            .specs
            .iter()
            .filter(|s| s.kind.is_trainable())
            .zip(&store.params)
        {
            let v = if spec.name.ends_with("bn.weight") {
                Tensor::rand_like(t) + 0.5
            } else if spec.name.ends_with(".2.weight") {
                t * 4.0
            } else if spec.name.ends_with("bias") {
                Tensor::randn_like(t) * 0.1
            } else {
                continue;
            };
            t.shallow_clone().copy_(&v);
        }
    });
}

/// Sets the running statistics near the statistics of the activations (as training would),
/// then perturbs each of them randomly: realistic activation scales, no statistic equal to its
/// batch counterpart.
fn calibrate_and_perturb(run: impl Fn(&Tensor), store: &ParamStore, arch: &Architecture) {
    let i = &arch.input;
    tch::no_grad(|| {
        for _ in 0..40 {
            let x = (Tensor::rand(
                [32, i.channels as i64, i.height as i64, i.width as i64],
                (Kind::Float, Device::Cpu),
            ) - 0.5)
                / 0.2;
            run(&x);
        }
        for (j, b) in store.buffers.iter().enumerate() {
            let v = if j % 2 == 0 {
                b + Tensor::randn_like(b) * 0.1
            } else {
                b * (Tensor::rand_like(b) * 0.4 + 0.8)
            };
            b.shallow_clone().copy_(&v);
        }
    });
}

fn to_tensor(a: &Array4<f32>) -> Tensor {
    let s: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    Tensor::from_slice(a.as_slice().unwrap()).reshape(s)
}

fn to_array2(t: &Tensor) -> Array2<f32> {
    let s = t.size();
    let v = Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    Array2::from_shape_vec((s[0] as usize, s[1] as usize), v).unwrap()
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits are compared relative to their scale: `max_diff / max(1, max |reference|)`. Thirteen
/// f32 convolutions (vgg16) put a few 1e-6 of relative noise on logits of size ~30, and
/// probabilities are compared absolutely.
fn max_logit_diff(a: &Array2<f32>, reference: &Array2<f32>) -> f32 {
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    max_diff(a, reference) / scale
}

/// Deterministic pseudo-random images in [0, 1] and labels in [0, k).
fn inputs(n: usize, arch: &Architecture, k: usize, seed: u64) -> (Array4<f32>, Array1<i64>) {
    let i = &arch.input;
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f32 / (1u64 << 31) as f32
    };
    let images = Array4::from_shape_fn((n, i.channels, i.height, i.width), |_| next());
    let labels = Array1::from_shape_fn(n, |_| ((next() * k as f32) as i64).min(k as i64 - 1));
    (images, labels)
}

/// tch's outputs at the running statistics for images in [0, 1].
struct Reference {
    primary_logits: Array2<f32>,
    primary_probs: Array2<f32>,
    /// Auxiliary logits and probabilities, unless single-task.
    aux: Option<(Array2<f32>, Array2<f32>)>,
    /// The generator's logits and masked probabilities, when there is one.
    generator: Option<(Array2<f32>, Array2<f32>)>,
    /// The generator's per-image weights, when it has a weight head.
    weights: Option<Array1<f32>>,
}

fn reference(
    f: &MultiTaskNet,
    g: Option<&LabelGenerator>,
    images: &Array4<f32>,
    labels: &Array1<i64>,
) -> Reference {
    let i = &f.arch.input;
    let per_channel = |v: Vec<f32>| Tensor::from_slice(&v).view([1, i.channels as i64, 1, 1]);
    let x = (to_tensor(images) - per_channel(i.mean.expand(i.channels)))
        / per_channel(i.std.expand(i.channels));
    let y = Tensor::from_slice(labels.as_slice().unwrap());
    tch::no_grad(|| {
        let out = f.forward(&x, BatchNorm::Running);
        let generator = g.map(|g| {
            let gl = g.logits_with(&x, &g.store.params, BatchNorm::Running);
            let gp = mask_softmax(&gl, &g.mask_table.index_select(0, &y));
            (to_array2(&gl), to_array2(&gp))
        });
        let weights = g
            .and_then(|g| g.outputs(&x, &y, BatchNorm::Running).weights)
            .map(|w| Array1::from_vec(Vec::<f32>::try_from(&w).unwrap()));
        Reference {
            primary_probs: to_array2(&out.primary.softmax(-1, Kind::Float)),
            primary_logits: to_array2(&out.primary),
            aux: out
                .aux
                .map(|a| (to_array2(&a), to_array2(&a.softmax(-1, Kind::Float)))),
            generator,
            weights,
        }
    })
}

fn compare(
    dir: &Path,
    f: &MultiTaskNet,
    g: Option<&LabelGenerator>,
    what: &str,
    batches: &[usize],
) {
    let k = f.num_primary;
    for backend in [Backend::OrtCpu, Backend::Tract] {
        let model = MaxlModel::builder(dir)
            .with_backend(backend)
            .build()
            .unwrap_or_else(|e| panic!("{what} {backend:?}: {e}"));
        assert_eq!(model.has_generator(), g.is_some(), "{what}");
        for &n in batches {
            let (images, labels) = inputs(n, &f.arch, k, n as u64);
            let r = reference(f, g, &images, &labels);
            let p = model.predict(images.view()).unwrap();
            let mut checks = vec![
                (
                    "primary_logits",
                    max_logit_diff(&p.primary_logits, &r.primary_logits),
                ),
                (
                    "primary_probs",
                    max_diff(&p.primary_probs, &r.primary_probs),
                ),
            ];
            match (&r.aux, &p.aux_logits, &p.aux_probs) {
                (Some((logits, probs)), Some(pl), Some(pp)) => {
                    checks.push(("aux_logits", max_logit_diff(pl, logits)));
                    checks.push(("aux_probs", max_diff(pp, probs)));
                }
                (None, None, None) => {}
                _ => panic!("{what}, {backend:?}: auxiliary outputs differ in presence"),
            }
            if let Some((gen_logits, gen_probs)) = &r.generator {
                let l = model.generate_labels(images.view(), labels.view()).unwrap();
                checks.push((
                    "generator_logits",
                    max_logit_diff(l.logits.as_ref().unwrap(), gen_logits),
                ));
                checks.push(("aux_label_probs", max_diff(&l.probs, gen_probs)));
                assert_eq!(
                    l.weights.is_some(),
                    r.weights.is_some(),
                    "{what}, {backend:?}: sample_weight present in one only"
                );
                assert_eq!(model.has_sample_weight(), r.weights.is_some(), "{what}");
                if let (Some(got), Some(want)) = (&l.weights, &r.weights) {
                    let d = got
                        .iter()
                        .zip(want)
                        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    // The acceptance bound: 1e-5 on (0, 2).
                    assert!(
                        d <= 1e-5,
                        "{what}, {backend:?}, batch {n}: sample_weight differs by {d:e}"
                    );
                }
                let argmax: Vec<i64> = gen_probs
                    .rows()
                    .into_iter()
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                            .0 as i64
                    })
                    .collect();
                assert_eq!(
                    l.slots.to_vec(),
                    argmax,
                    "{what}, {backend:?}, batch {n}: aux_slot"
                );
            } else {
                let e = model
                    .generate_labels(images.view(), labels.view())
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("no label generator"), "{e}");
            }
            for (name, d) in checks {
                assert!(
                    d <= TOL,
                    "{what}, {backend:?}, batch {n}: {name} differs by {d:e}"
                );
            }
        }
    }
}

fn export_random(dir: &Path, opts: ExportOptions) -> (MultiTaskNet, LabelGenerator) {
    let (f, g) = export_random_with(dir, opts, "small", Method::Maxl, 1.0);
    (f, g.unwrap())
}

/// Random weights for `preset`, exported as `method` trains them: with a label generator (with
/// its weight head, randomised too, for `maxl-weighted`) or without one (the `single` baseline:
/// no auxiliary head either).
fn export_random_with(
    dir: &Path,
    opts: ExportOptions,
    preset: &str,
    method: Method,
    generator_head_scale: f64,
) -> (MultiTaskNet, Option<LabelGenerator>) {
    let generator = method.uses_generator();
    tch::manual_seed(11);
    let arch = Architecture::preset(preset).unwrap();
    let h = Hierarchy::new(vec![2, 1, 3]).unwrap();
    let f = MultiTaskNet::new(
        &arch,
        3,
        if generator { 6 } else { 0 },
        Kind::Float,
        Device::Cpu,
    );
    let g = if method.weighted() {
        LabelGenerator::new_weighted(&arch, &h, Kind::Float, Device::Cpu)
    } else {
        LabelGenerator::new(&arch, &h, Kind::Float, Device::Cpu)
    };
    randomise(&f.store);
    randomise(&g.store);
    if let [w, _] = g.weight_head_params() {
        // Weights spread over (0, 2) rather than all 1.
        tch::no_grad(|| w.shallow_clone().copy_(&(Tensor::randn_like(w) * 0.05)));
    }
    let y = Tensor::zeros([32], (Kind::Int64, Device::Cpu));
    calibrate_and_perturb(
        |x| drop(f.forward(x, BatchNorm::BatchUpdate)),
        &f.store,
        &arch,
    );
    calibrate_and_perturb(
        |x| drop(g.forward(x, &y, BatchNorm::BatchUpdate)),
        &g.store,
        &arch,
    );
    if generator_head_scale != 1.0 {
        tch::no_grad(|| {
            for (spec, t) in g
                .store
                .specs
                .iter()
                .filter(|s| s.kind.is_trainable())
                .zip(&g.store.params)
            {
                if spec.name.ends_with(".2.weight") {
                    t.shallow_clone().copy_(&(t * generator_head_scale));
                }
            }
        });
    }
    let config = TrainConfig {
        method,
        ..TrainConfig::default()
    };
    let names = vec!["T-shirt/top".to_string(), "Bag".into(), "Ankle boot".into()];
    let info = ExportInfo {
        config: &config,
        arch: &arch,
        hierarchy: &h,
        class_names: &names,
        epochs: 0,
        primary_test_accuracy: None,
    };
    let m = export(dir, &f, generator.then_some(&g), &info, opts).unwrap();
    assert_eq!(
        m.aux_slots,
        vec![
            "T-shirt_top.0",
            "T-shirt_top.1",
            "Bag.0",
            "Ankle_boot.0",
            "Ankle_boot.1",
            "Ankle_boot.2"
        ]
    );
    (f, generator.then_some(g))
}

#[test]
fn random_weights_match_in_tch_ort_and_tract() {
    for fold in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (f, g) = export_random(
            dir.path(),
            ExportOptions {
                fold_batch_norm: fold,
            },
        );
        compare(
            dir.path(),
            &f,
            Some(&g),
            &format!("random weights (fold_batch_norm = {fold})"),
            &[1, 3, 64],
        );
    }
}

#[test]
fn a_weighted_generators_sample_weight_matches_in_tch_ort_and_tract() {
    for fold in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let opts = ExportOptions {
            fold_batch_norm: fold,
        };
        let (f, g) = export_random_with(dir.path(), opts, "small", Method::MaxlWeighted, 1.0);
        let g = g.unwrap();
        let m = Manifest::load(dir.path()).unwrap();
        let outputs = &m.models.label_generator.as_ref().unwrap().outputs;
        assert_eq!(outputs.last().map(String::as_str), Some("sample_weight"));
        // The weights are spread over (0, 2), not all 1 (where they lie depends on the random
        // weights, drawn from the RNG the tests running in parallel share).
        let (images, labels) = inputs(64, &f.arch, 3, 2);
        let w = reference(&f, Some(&g), &images, &labels).weights.unwrap();
        let (lo, hi) = w
            .iter()
            .fold((2.0f32, 0.0f32), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(0.0 < lo && hi < 2.0 && hi - lo > 0.1, "weights {lo}..{hi}");
        compare(
            dir.path(),
            &f,
            Some(&g),
            &format!("maxl-weighted random weights (fold_batch_norm = {fold})"),
            &[1, 3, 64],
        );
    }
}

#[test]
fn a_random_vgg16_export_matches_in_tch_ort_and_tract() {
    // RGB input, multi-conv blocks, randomised batch-norm statistics.
    let dir = tempfile::tempdir().unwrap();
    let (f, g) = export_random_with(
        dir.path(),
        ExportOptions::default(),
        "vgg16",
        Method::Maxl,
        1.0,
    );
    compare(dir.path(), &f, g.as_ref(), "vgg16 random weights", &[1, 4]);
}

#[test]
fn a_single_task_export_without_a_generator_matches_in_tch_ort_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    let (f, g) = export_random_with(
        dir.path(),
        ExportOptions::default(),
        "small",
        Method::Single,
        1.0,
    );
    assert!(g.is_none());
    assert!(!dir.path().join("label_generator.onnx").exists());
    compare(
        dir.path(),
        &f,
        None,
        "single-task random weights",
        &[1, 3, 64],
    );
}

#[test]
fn the_committed_trained_model_matches_its_weights() {
    let dir = models_dir();
    let weights = dir.join("weights");
    let config = TrainConfig::load(&weights.join("config.yaml")).unwrap();
    let arch = config.model.resolve().unwrap();
    let h = config.hierarchy.resolve(10).unwrap();
    let read = |f: &str| Tensor::read_safetensors(weights.join(f)).unwrap();
    let fs = ParamStore::from_named(
        arch.multitask_params(10, h.num_aux()),
        &read("multitask.safetensors"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let gs = ParamStore::from_named(
        arch.generator_params(h.num_aux()),
        &read("label_generator.safetensors"),
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let f = MultiTaskNet {
        arch: arch.clone(),
        num_primary: 10,
        num_aux: h.num_aux(),
        store: fs,
    };
    let g = LabelGenerator::with_store(&arch, &h, gs);
    compare(&dir, &f, Some(&g), "committed model", &[1, 3, 64]);
}

#[test]
fn generated_labels_are_exactly_zero_off_class_even_for_extreme_logits() {
    let h = Hierarchy::new(vec![2, 1, 3]).unwrap();
    // Logits of a usual size, and ×1000 (the generator's output layer scaled before export).
    for scale in [1.0f64, 1e3] {
        let dir = tempfile::tempdir().unwrap();
        let (f, _) = export_random_with(
            dir.path(),
            ExportOptions::default(),
            "small",
            Method::Maxl,
            scale,
        );
        for backend in [Backend::OrtCpu, Backend::Tract] {
            let model = MaxlModel::builder(dir.path())
                .with_backend(backend)
                .build()
                .unwrap();
            let (images, _) = inputs(9, &f.arch, 3, 5);
            let labels = Array1::from_vec(vec![0i64, 1, 2, 0, 1, 2, 0, 1, 2]);
            let out = model.generate_labels(images.view(), labels.view()).unwrap();
            let largest = out
                .logits
                .as_ref()
                .unwrap()
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            if scale > 1.0 {
                assert!(largest > 100.0, "{backend:?}: logits up to {largest} only");
            }
            for (row, &y) in out.probs.rows().into_iter().zip(&labels) {
                let slots = h.slots(y as usize);
                assert!(
                    (row.sum() - 1.0).abs() <= 1e-6,
                    "{backend:?} ×{scale}: row sums to {}",
                    row.sum()
                );
                for (j, &v) in row.iter().enumerate() {
                    assert!(v.is_finite());
                    if !slots.contains(&j) {
                        assert_eq!(v, 0.0, "{backend:?} ×{scale}: slot {j} of class {y} is {v}");
                    }
                }
            }
            for (&s, &y) in out.slots.iter().zip(&labels) {
                assert!(h.slots(y as usize).contains(&(s as usize)));
            }
            // Labels outside [0, K) are refused before anything runs.
            let e = model
                .generate_labels(
                    images.slice(ndarray::s![..2, .., .., ..]),
                    Array1::from_vec(vec![0, 3]).view(),
                )
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("label 3 is outside the primary classes [0, 3)"),
                "{e}"
            );
        }
    }
}

#[test]
fn exported_files_pass_the_onnx_checker() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, folded) = (dir.path().join("plain"), dir.path().join("folded"));
    let weighted = dir.path().join("weighted");
    export_random(&plain, ExportOptions::default());
    export_random(
        &folded,
        ExportOptions {
            fold_batch_norm: true,
        },
    );
    export_random_with(
        &weighted,
        ExportOptions::default(),
        "small",
        Method::MaxlWeighted,
        1.0,
    );
    let python =
        std::env::var_os("MAXL_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let script = "import sys, onnx\nfor p in sys.argv[1:]:\n    m = onnx.load(p)\n    onnx.checker.check_model(m, full_check=True)\n    assert m.opset_import[0].version == 17\n    print('ok', p)\n";
    let mut files: Vec<PathBuf> = Vec::new();
    for d in [&plain, &folded, &weighted, &models_dir()] {
        files.push(d.join("primary.onnx"));
        files.push(d.join("label_generator.onnx"));
    }
    let out = Command::new(&python)
        .args(["-c", script])
        .args(&files)
        .output()
        .expect("run the venv's Python (scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnx.checker failed:\n{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), files.len());
}

#[test]
fn a_manifest_that_does_not_match_its_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    export_random(dir.path(), ExportOptions::default());
    let path = dir.path().join("label_generator.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    for backend in [Backend::OrtCpu, Backend::Tract] {
        let e = MaxlModel::builder(dir.path())
            .with_backend(backend)
            .build()
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("label_generator.onnx: SHA-256") && e.contains("does not match"),
            "{e}"
        );
    }
}

#[test]
fn exported_files_carry_the_manifest_in_their_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (maxl, single) = (dir.path().join("maxl"), dir.path().join("single"));
    export_random(&maxl, ExportOptions::default());
    export_random_with(
        &single,
        ExportOptions::default(),
        "small",
        Method::Single,
        1.0,
    );
    for d in [&maxl, &single] {
        let m = Manifest::load(d).unwrap();
        let want = ModelMetadata::of_manifest(&m);
        let files = std::iter::once(&m.models.primary).chain(m.models.label_generator.as_ref());
        let mut n = 0;
        for f in files {
            let decl = maxl_onnx::describe(&std::fs::read(d.join(&f.path)).unwrap()).unwrap();
            assert_eq!(decl.metadata, want.to_props(), "{}", f.path);
            let got = decl.maxl_metadata().unwrap().unwrap();
            assert_eq!(
                (&got.producer, &got.classes, &got.psi, &got.aux_slots),
                (&m.producer, &m.classes, &m.psi, &m.aux_slots),
                "{}",
                f.path
            );
            let i = &m.input;
            assert_eq!(
                got.input.mean.expand(got.input.channels),
                i.mean.expand(i.channels)
            );
            assert_eq!(
                got.input.std.expand(got.input.channels),
                i.std.expand(i.channels)
            );
            assert_eq!(
                (got.input.channels, got.input.height, got.input.resize),
                (i.channels, i.height, i.resize)
            );
            n += 1;
        }
        assert_eq!(n, if d == &maxl { 2 } else { 1 });
    }
    // The committed model predates the metadata: it has none and still loads.
    let committed = maxl_onnx::describe(&std::fs::read(models_dir().join("primary.onnx")).unwrap());
    assert!(committed.unwrap().metadata.is_empty());
    MaxlModel::builder(models_dir())
        .with_backend(Backend::Tract)
        .build()
        .unwrap();
}

#[test]
fn a_manifest_that_contradicts_the_files_metadata_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let exported = dir.path().join("exported");
    export_random(&exported, ExportOptions::default());
    let yaml = std::fs::read_to_string(exported.join("maxl.yaml")).unwrap();
    let (bag, boot) = (
        "- name: Bag\n  display: Bag\n",
        "- name: Ankle_boot\n  display: Ankle boot\n",
    );
    let cases = [
        (
            "swapped classes",
            yaml.replace(&format!("{bag}{boot}"), &format!("{boot}{bag}")),
            r#"primary.onnx: metadata says class 1 is "Bag", maxl.yaml says "Ankle boot""#,
        ),
        (
            "changed mean",
            yaml.replace("mean: 0.5\n", "mean: 0.45\n"),
            "primary.onnx: metadata says input mean is [0.5], maxl.yaml says [0.45]",
        ),
    ];
    for (what, edited, message) in cases {
        assert_ne!(edited, yaml, "{what}: the edit applies");
        let d = dir.path().join(what.replace(' ', "_"));
        std::fs::create_dir_all(&d).unwrap();
        for f in ["primary.onnx", "label_generator.onnx"] {
            std::fs::copy(exported.join(f), d.join(f)).unwrap();
        }
        std::fs::write(d.join("maxl.yaml"), edited).unwrap();
        for backend in [Backend::OrtCpu, Backend::Tract] {
            let e = MaxlModel::builder(&d)
                .with_backend(backend)
                .build()
                .err()
                .unwrap_or_else(|| panic!("{what}: {backend} loaded a contradicted model"));
            assert_eq!(e.fault(), maxl_infer::Fault::Model, "{what}: {e}");
            let s = e.to_string();
            assert!(
                s.ends_with(message) && s.starts_with(d.to_str().unwrap()) && !s.contains('\n'),
                "{what} on {backend}: {s}"
            );
        }
    }
}

#[test]
fn onnxruntime_python_shows_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    export_random(dir.path(), ExportOptions::default());
    let want = ModelMetadata::of_manifest(&Manifest::load(dir.path()).unwrap()).to_props();
    let python =
        std::env::var_os("MAXL_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let script = "import sys, onnxruntime as ort\nm = ort.InferenceSession(sys.argv[1]).get_modelmeta().custom_metadata_map\nfor k in sorted(m):\n    print(k + '\\t' + m[k])\n";
    for f in ["primary.onnx", "label_generator.onnx"] {
        let out = Command::new(&python)
            .args(["-c", script])
            .arg(dir.path().join(f))
            .output()
            .expect("run the venv's Python (scripts/setup.sh)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{f}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: BTreeMap<String, String> = stdout
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want, "{f}");
    }
}
