//! The library as a service embeds it: one model shared by threads, any input layout, results
//! independent of batch composition, load-time validation of the manifest against the graphs,
//! and errors that say whose fault they are. Runs on ort-cpu and tract with the committed model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxl_infer::{
    AuxFor, Backend, Classification, Classify, Fault, InferError, MaxlModel, ProviderOptions,
    ThreadOptions,
};
use ndarray::{Array4, Axis, s};

const BACKENDS: [Backend; 2] = [Backend::OrtCpu, Backend::Tract];

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// Image `i` of `x` classified on its own.
fn classify_one(
    model: &MaxlModel,
    x: &Array4<f32>,
    i: usize,
    opts: &Classify<'_>,
) -> Classification {
    model
        .classify(x.slice(s![i..i + 1, .., .., ..]), opts)
        .unwrap()
        .remove(0)
}

fn load(backend: Backend, sessions: usize) -> MaxlModel {
    MaxlModel::builder(models())
        .with_backend(backend)
        .with_threads(ThreadOptions {
            sessions,
            intra_threads: Some(1),
            global_threads: None,
            ..Default::default()
        })
        .build()
        .unwrap_or_else(|e| panic!("{backend}: {e}"))
}

/// Deterministic images in [0, 1] that look a little like clothing (a bright blob on black),
/// so that the model's answers vary across images.
fn images(n: usize, seed: u64) -> Array4<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let mut x = Array4::zeros((n, 1, 28, 28));
    for mut img in x.axis_iter_mut(Axis(0)) {
        let (cy, cx) = (6.0 + 16.0 * next(), 6.0 + 16.0 * next());
        let (ry, rx) = (3.0 + 10.0 * next(), 3.0 + 10.0 * next());
        for ((_, y, xx), v) in img.indexed_iter_mut() {
            let d = ((y as f32 - cy) / ry).powi(2) + ((xx as f32 - cx) / rx).powi(2);
            *v = if d < 1.0 {
                (0.4 + 0.6 * next()).min(1.0)
            } else {
                0.05 * next()
            };
        }
    }
    x
}

#[test]
fn the_model_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MaxlModel>();
    assert_send_sync::<Arc<MaxlModel>>();
}

#[test]
fn many_threads_on_one_model_get_bit_identical_results() {
    let x = images(16, 1);
    for backend in BACKENDS {
        let model = Arc::new(load(backend, 2));
        let opts = Classify {
            top_k: 3,
            aux: AuxFor::Predicted,
        };
        // Single-threaded reference, one image per call.
        let reference: Vec<Classification> = (0..16)
            .map(|i| classify_one(&model, &x, i, &opts))
            .collect();
        let handles: Vec<_> = (0..16)
            .map(|t| {
                let (model, x, reference) = (model.clone(), x.clone(), reference.clone());
                std::thread::spawn(move || {
                    for call in 0..200 {
                        let i = (t * 7 + call) % 16;
                        let got = classify_one(&model, &x, i, &opts);
                        assert_eq!(got, reference[i], "{backend}: thread {t}, call {call}");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}

#[test]
fn one_images_result_does_not_depend_on_its_batch() {
    let x = images(24, 2);
    let opts = Classify {
        top_k: 10,
        aux: AuxFor::Predicted,
    };
    for backend in BACKENDS {
        let model = load(backend, 1);
        let alone: Vec<Classification> = (0..24)
            .map(|i| classify_one(&model, &x, i, &opts))
            .collect();
        let whole = model.classify(x.view(), &opts).unwrap();
        // The same images in another order and another company.
        let reversed = x.slice(s![..;-1, .., .., ..]).to_owned();
        let mut rev = model.classify(reversed.view(), &opts).unwrap();
        rev.reverse();
        let part = model
            .classify(x.slice(s![5..12, .., .., ..]), &opts)
            .unwrap();
        for i in 0..24 {
            close(
                &alone[i],
                &whole[i],
                &format!("{backend} image {i} in the batch of 24"),
            );
            close(&alone[i], &rev[i], &format!("{backend} image {i} reversed"));
        }
        for (j, r) in part.iter().enumerate() {
            close(
                &alone[5 + j],
                r,
                &format!("{backend} image {} in 5..12", 5 + j),
            );
        }
        // The answers are not all the same (the test would be vacuous).
        let classes: std::collections::BTreeSet<usize> =
            alone.iter().map(|c| c.class.class).collect();
        assert!(classes.len() >= 2, "{backend}: {classes:?}");
    }
}

/// Same class, slot and top-k order; probabilities within 1e-6.
fn close(a: &Classification, b: &Classification, what: &str) {
    assert_eq!(a.class.class, b.class.class, "{what}");
    let (aa, ba) = (a.aux.as_ref().unwrap(), b.aux.as_ref().unwrap());
    assert_eq!((aa.class, aa.slot), (ba.class, ba.slot), "{what}");
    match (aa.weight, ba.weight) {
        (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-6, "{what}: weight {x} vs {y}"),
        (x, y) => assert_eq!(x, y, "{what}: weight"),
    }
    let classes = |c: &Classification| c.top_k.iter().map(|t| t.class).collect::<Vec<_>>();
    assert_eq!(classes(a), classes(b), "{what}");
    for (x, y) in a
        .primary
        .iter()
        .zip(&b.primary)
        .chain(aa.distribution.iter().zip(&ba.distribution))
    {
        assert!((x - y).abs() <= 1e-6, "{what}: {x} vs {y}");
    }
}

#[test]
fn permuted_and_strided_views_give_the_same_answers() {
    let x = images(5, 3);
    // The same images stored N×W×H×C (transposed), viewed as NCHW (non-standard strides).
    let nwhc = x
        .view()
        .permuted_axes([0, 3, 2, 1])
        .as_standard_layout()
        .into_owned();
    let view = nwhc.view().permuted_axes([0, 3, 2, 1]);
    assert!(!view.is_standard_layout());
    // Every other image of a larger batch (a strided view).
    let mut doubled = Array4::zeros((10, 1, 28, 28));
    for i in 0..5 {
        doubled
            .slice_mut(s![2 * i, .., .., ..])
            .assign(&x.slice(s![i, .., .., ..]));
    }
    let strided = doubled.slice(s![..;2, .., .., ..]);
    for backend in BACKENDS {
        let model = load(backend, 1);
        let opts = Classify::default();
        let want = model.classify(x.view(), &opts).unwrap();
        assert_eq!(model.classify(view, &opts).unwrap(), want, "{backend}");
        assert_eq!(model.classify(strided, &opts).unwrap(), want, "{backend}");
        let p = model.predict(view).unwrap();
        assert_eq!(p, model.predict(x.view()).unwrap(), "{backend}");
    }
}

#[test]
fn outputs_are_consistent() {
    let x = images(8, 4);
    for backend in BACKENDS {
        let model = load(backend, 1);
        let h = model.hierarchy().clone();
        let given: Vec<usize> = (0..8).map(|i| (i * 3) % 10).collect();
        let res = model
            .classify(
                x.view(),
                &Classify {
                    top_k: 4,
                    aux: AuxFor::Given(&given),
                },
            )
            .unwrap();
        for (r, &k) in res.iter().zip(&given) {
            assert_eq!(r.top_k.len(), 4);
            assert!(
                r.top_k
                    .windows(2)
                    .all(|w| w[0].probability >= w[1].probability)
            );
            assert_eq!(r.top_k[0].class, r.class.class);
            assert!((r.primary.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let a = r.aux.as_ref().unwrap();
            assert_eq!(a.class, k);
            assert!(h.slots(k).contains(&a.slot));
            let name = &model.manifest().classes[k].name;
            assert_eq!(a.label, format!("{name}.{}", a.slot - h.slots(k).start));
            assert_eq!(a.distribution.len(), h.psi()[k]);
            assert!((a.distribution.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert_eq!(a.distribution[a.slot - h.slots(k).start], a.probability);
        }
        // Without a generator request there is no aux; with `Predicted` it is for the argmax.
        let none = model
            .classify(
                x.view(),
                &Classify {
                    top_k: 1,
                    aux: AuxFor::None,
                },
            )
            .unwrap();
        assert!(none.iter().all(|r| r.aux.is_none()));
        let pred = model.classify(x.view(), &Classify::default()).unwrap();
        assert!(
            pred.iter()
                .all(|r| r.aux.as_ref().unwrap().class == r.class.class)
        );
    }
}

#[test]
fn bad_inputs_are_the_callers_fault_and_refused_before_running() {
    for backend in BACKENDS {
        let model = load(backend, 1);
        let mut x = images(2, 5);
        x[[1, 0, 3, 4]] = f32::NAN;
        let e = model.predict(x.view()).unwrap_err();
        assert_eq!(e.fault(), Fault::Caller);
        assert!(e.to_string().contains("images[1, 0, 3, 4] is NaN"), "{e}");
        x[[1, 0, 3, 4]] = 1.5;
        let e = model.predict(x.view()).unwrap_err().to_string();
        assert!(e.contains("must be finite and in [0, 1]"), "{e}");
        let wrong = Array4::<f32>::zeros((1, 3, 28, 28));
        let e = model.predict(wrong.view()).unwrap_err().to_string();
        assert!(e.contains("3×28×28, the model expects 1×28×28"), "{e}");
        let ok = images(2, 6);
        let e = model
            .classify(
                ok.view(),
                &Classify {
                    top_k: 1,
                    aux: AuxFor::Given(&[0, 10]),
                },
            )
            .unwrap_err();
        assert!(e.is_caller_fault());
        assert!(e.to_string().contains("label 10 is outside"), "{e}");
        let e = model.class_index("Zebra").unwrap_err();
        assert!(
            e.is_caller_fault() && e.to_string().contains("Zebra"),
            "{e}"
        );
        assert_eq!(model.class_index("Ankle boot").unwrap(), 9);
        assert_eq!(model.class_index("Ankle_boot").unwrap(), 9);
        let e = model.preprocess(b"GIF89a nope", "upload").unwrap_err();
        assert!(e.is_caller_fault());
        assert!(e.to_string().starts_with("upload: "), "{e}");
        // An empty batch is fine and empty.
        let empty = Array4::<f32>::zeros((0, 1, 28, 28));
        assert!(
            model
                .classify(empty.view(), &Classify::default())
                .unwrap()
                .is_empty()
        );
    }
}

#[test]
fn a_png_declaring_a_huge_size_is_refused_without_decoding() {
    // 20000×20000 in the header of a few-byte PNG.
    let mut png = Vec::new();
    image::DynamicImage::new_luma8(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&20000u32.to_be_bytes());
    png[20..24].copy_from_slice(&20000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    let model = load(Backend::Tract, 1);
    let e = model.preprocess(&png, "big.png").unwrap_err();
    assert!(e.is_caller_fault());
    let s = e.to_string();
    assert!(s.starts_with("big.png: "), "{s}");
    assert!(
        s.contains("image is 20000×20000, over the decode limit"),
        "{s}"
    );
}

/// Copies the committed model and edits its manifest with `edit`.
fn edited(tmp: &Path, edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = tmp.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["primary.onnx", "label_generator.onnx"] {
        std::fs::copy(models().join(f), dir.join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(models().join("maxl.yaml")).unwrap();
    std::fs::write(dir.join("maxl.yaml"), edit(&yaml)).unwrap();
    dir
}

#[test]
fn a_manifest_that_disagrees_with_its_graphs_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    // 9 classes with 9 ψ entries next to a 10-class graph.
    let nine = |y: &str| {
        let y = y.replacen("- 5\n", "", 1);
        let y = y.replace("- name: Ankle_boot\n  display: Ankle boot\n", "");
        (0..5).fold(y, |y, i| y.replace(&format!("- Ankle_boot.{i}\n"), ""))
    };
    // The same Σψ, another ψ.
    let reshaped = |y: &str| {
        let y = y.replacen("- 5\n- 5\n", "- 4\n- 6\n", 1);
        y.replace("- T-shirt_top.4\n", "")
            .replace("- Trouser.4\n", "- Trouser.4\n- Trouser.5\n")
    };
    type Edit = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "class count",
            Box::new(nine),
            vec!["maxl.yaml: classes:", "9 classes", "width 10"],
        ),
        (
            "input size",
            Box::new(|y: &str| y.replace("height: 28", "height: 32")),
            vec!["maxl.yaml: input:", "1×32×28", "1×28×28"],
        ),
        (
            "output name",
            Box::new(|y: &str| y.replace("- aux_logits", "- auxiliary_logits")),
            vec!["maxl.yaml: models.primary.outputs:", "`auxiliary_logits`"],
        ),
        (
            "ψ",
            Box::new(reshaped),
            vec!["maxl.yaml: psi:", "[4, 6, 5", "[5, 5, 5"],
        ),
        (
            "input name",
            Box::new(|y: &str| y.replace("- primary_label", "- label")),
            vec!["maxl.yaml: models.label_generator.inputs:"],
        ),
    ];
    for (what, edit, needles) in cases {
        let dir = edited(&tmp.path().join(what.replace(' ', "_")), edit);
        for backend in BACKENDS {
            let e = MaxlModel::builder(&dir)
                .with_backend(backend)
                .build()
                .err()
                .unwrap_or_else(|| panic!("{what}: {backend} loaded a mismatched model"));
            assert_eq!(e.fault(), Fault::Model, "{what}: {e}");
            let s = e.to_string();
            assert!(!s.contains('\n'), "{what}: {s}");
            for n in &needles {
                assert!(s.contains(n), "{what} on {backend}: `{n}` missing in: {s}");
            }
        }
    }
}

#[test]
fn providers_are_reported_and_fallbacks_only_when_asked() {
    let ort = load(Backend::OrtCpu, 1);
    let p = ort.providers();
    assert_eq!(p.primary, vec!["CPUExecutionProvider"]);
    assert_eq!(p.label_generator.unwrap(), vec!["CPUExecutionProvider"]);
    assert_eq!(load(Backend::Tract, 1).providers().primary, vec!["tract"]);
    // This machine's ONNX Runtime is the CPU build: CUDA cannot register.
    let e = MaxlModel::builder(models())
        .with_backend(Backend::OrtCuda)
        .build()
        .unwrap_err();
    assert!(matches!(e, InferError::Provider { .. }), "{e}");
    assert_eq!(e.fault(), Fault::Runtime);
    let fallback = MaxlModel::builder(models())
        .with_backend(Backend::OrtTensorRt)
        .with_providers(ProviderOptions {
            fallback_to_cpu: true,
            ..Default::default()
        })
        .build()
        .unwrap();
    assert_eq!(fallback.providers().primary, vec!["CPUExecutionProvider"]);
    let x = images(3, 7);
    assert_eq!(
        fallback.classify(x.view(), &Classify::default()).unwrap(),
        ort.classify(x.view(), &Classify::default()).unwrap()
    );
}

/// An untrained export with the committed model's classes, ψ and input, in `tmp`: a
/// `maxl-weighted` one (with `sample_weight`) or a plain MAXL one.
fn synthetic(tmp: &Path, weighted: bool) -> PathBuf {
    let dir = tmp.join(if weighted { "weighted" } else { "plain" });
    let template = maxl_core::manifest::Manifest::load(&models()).unwrap();
    let m = maxl_onnx::synthetic::export(&dir, &template, weighted, 11).unwrap();
    assert_eq!(
        m.training.method,
        if weighted { "maxl-weighted" } else { "maxl" }
    );
    dir
}

/// A float initialiser of an ONNX file.
fn initializer(model: &tract_onnx::pb::ModelProto, name: &str) -> Vec<f32> {
    let t = model
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    t.raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// 2·sigmoid(features·w + b) per image, by hand: the features from tract (the graph's own
/// `features` node), w and b read from the file.
fn weights_by_hand(dir: &Path, x: &Array4<f32>, labels: &[i64]) -> Vec<f64> {
    use prost::Message;
    use tract_onnx::prelude::*;
    let bytes = std::fs::read(dir.join("label_generator.onnx")).unwrap();
    let proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let (w, b) = (
        initializer(&proto, "weight_head.weight"),
        initializer(&proto, "weight_head.bias")[0],
    );
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(&bytes))
        .and_then(|m| m.with_outputs_by_name(["features"]))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let out = plan
        .run(tvec![
            Tensor::from(x.clone()).into(),
            Tensor::from(ndarray::Array1::from_vec(labels.to_vec())).into()
        ])
        .unwrap();
    let features = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(features.shape(), [x.shape()[0], w.len()]);
    features
        .outer_iter()
        .map(|f| {
            let s: f64 = f
                .iter()
                .zip(&w)
                .map(|(f, w)| *f as f64 * *w as f64)
                .sum::<f64>()
                + b as f64;
            2.0 / (1.0 + (-s).exp())
        })
        .collect()
}

#[test]
fn a_weighted_export_gives_every_image_its_weight_alike_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic(tmp.path(), true);
    let x = images(12, 8);
    let given: Vec<usize> = (0..12).map(|i| (i * 7) % 10).collect();
    let labels: Vec<i64> = given.iter().map(|&k| k as i64).collect();
    let want = weights_by_hand(&dir, &x, &labels);
    // Untrained, yet spread over (0, 2): the comparison is not of constants.
    let (lo, hi) = want
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &w| (l.min(w), h.max(w)));
    assert!(lo > 0.0 && hi < 2.0 && hi - lo > 0.1, "{want:?}");
    for backend in BACKENDS {
        let model = MaxlModel::builder(&dir)
            .with_backend(backend)
            .build()
            .unwrap();
        assert!(model.has_sample_weight(), "{backend}");
        let g = model
            .generate_labels(x.view(), ndarray::ArrayView1::from(&labels))
            .unwrap();
        let weights = g.weights.expect("a weighted export has weights");
        assert_eq!(weights.len(), 12);
        for (i, (&got, &w)) in weights.iter().zip(&want).enumerate() {
            assert!(
                (got as f64 - w).abs() < 1e-5,
                "{backend} image {i}: {got} vs {w} by hand"
            );
        }
        let res = model
            .classify(
                x.view(),
                &Classify {
                    top_k: 1,
                    aux: AuxFor::Given(&given),
                },
            )
            .unwrap();
        for (j, r) in res.iter().enumerate() {
            let aux = r.aux.as_ref().unwrap();
            assert_eq!(aux.weight, Some(weights[j]), "{backend} image {j}");
            // The weight depends on the image alone: not on its batch, nor on its class.
            let alone = classify_one(&model, &x, j, &Classify::default());
            let w = alone.aux.unwrap().weight.unwrap();
            assert!((w - weights[j]).abs() <= 1e-6, "{backend} image {j} alone");
            // Serialised with the rest of the slot.
            let json = serde_json::to_value(aux).unwrap();
            assert_eq!(json["weight"].as_f64().unwrap() as f32, weights[j]);
        }
    }
}

#[test]
fn exports_without_sample_weight_have_none_and_a_manifest_not_listing_it_still_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let x = images(4, 9);
    let plain = synthetic(tmp.path(), false);
    for backend in BACKENDS {
        for dir in [models(), plain.clone()] {
            let model = MaxlModel::builder(&dir)
                .with_backend(backend)
                .build()
                .unwrap();
            assert!(!model.has_sample_weight(), "{backend} {}", dir.display());
            let labels = ndarray::Array1::from_vec(vec![0i64, 1, 2, 3]);
            let g = model.generate_labels(x.view(), labels.view()).unwrap();
            assert_eq!(g.weights, None);
            let res = model.classify(x.view(), &Classify::default()).unwrap();
            for r in &res {
                let aux = r.aux.as_ref().unwrap();
                assert_eq!(aux.weight, None);
                let json = serde_json::to_value(aux).unwrap();
                assert!(json.get("weight").is_none(), "{json}");
            }
        }
    }
    // A weighted export whose manifest does not list `sample_weight` (one written before the
    // output existed): the file has it, so it is read all the same.
    let weighted = synthetic(tmp.path(), true);
    let yaml = std::fs::read_to_string(weighted.join("maxl.yaml")).unwrap();
    assert!(yaml.contains("  - sample_weight\n"), "{yaml}");
    let unlisted = tmp.path().join("unlisted");
    std::fs::create_dir_all(&unlisted).unwrap();
    for f in ["primary.onnx", "label_generator.onnx"] {
        std::fs::copy(weighted.join(f), unlisted.join(f)).unwrap();
    }
    std::fs::write(
        unlisted.join("maxl.yaml"),
        yaml.replace("    - sample_weight\n", "")
            .replace("  - sample_weight\n", ""),
    )
    .unwrap();
    for backend in BACKENDS {
        let listed = MaxlModel::builder(&weighted)
            .with_backend(backend)
            .build()
            .unwrap();
        let model = MaxlModel::builder(&unlisted)
            .with_backend(backend)
            .build()
            .unwrap();
        assert!(model.has_sample_weight(), "{backend}");
        let opts = Classify::default();
        assert_eq!(
            model.classify(x.view(), &opts).unwrap(),
            listed.classify(x.view(), &opts).unwrap(),
            "{backend}"
        );
    }
}

#[test]
fn a_sample_weight_of_another_shape_is_refused_at_load() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let dir = synthetic(tmp.path(), true);
    let path = dir.join("label_generator.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    // Declare it [N, 1].
    let out = proto
        .graph
        .as_mut()
        .unwrap()
        .output
        .iter_mut()
        .find(|o| o.name == maxl_onnx::SAMPLE_WEIGHT)
        .unwrap();
    let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
        out.r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("not a tensor")
    };
    let dims = &mut t.shape.as_mut().unwrap().dim;
    let mut one = dims[0].clone();
    one.value = Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(1));
    dims.push(one);
    let edited = proto.encode_to_vec();
    std::fs::write(&path, &edited).unwrap();
    let yaml = std::fs::read_to_string(dir.join("maxl.yaml")).unwrap();
    let yaml = yaml.replace(
        &maxl_core::manifest::sha256_bytes(&bytes),
        &maxl_core::manifest::sha256_bytes(&edited),
    );
    std::fs::write(dir.join("maxl.yaml"), yaml).unwrap();
    for backend in BACKENDS {
        let e = MaxlModel::builder(&dir)
            .with_backend(backend)
            .build()
            .expect_err("a [N, 1] sample_weight loads");
        assert_eq!(e.fault(), Fault::Model);
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        for n in [
            "maxl.yaml: models.label_generator.outputs:",
            "`sample_weight` is [N, 1]",
            "label_generator.onnx",
        ] {
            assert!(s.contains(n), "{backend}: `{n}` missing in: {s}");
        }
    }
}
