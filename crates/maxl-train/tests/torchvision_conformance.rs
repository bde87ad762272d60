//! torchvision conformance of the ResNet backbones: torchvision's own `resnet18`, `resnet50`
//! and resnet18 with the CIFAR stem, built with random weights and randomised batch-norm
//! statistics by `scripts/torchvision_fixtures.py`, load through `--init-from`'s loader; maxl's
//! backbone features (tch) and the exported ONNX backbone (ONNX Runtime and tract, batch norm
//! kept and folded) equal torchvision's eval-mode features within 1e-4 relative, at 224×224, at
//! 96×100 (non-square) and at 32×32 for the CIFAR layout.

use std::path::{Path, PathBuf};
use std::process::Command;

use maxl_core::arch::Architecture;
use maxl_core::manifest::{ClassName, ManifestInput};
use maxl_onnx::{ExportOptions, ModelMetadata};
use maxl_train::export::weights;
use maxl_train::init_from::load_backbone;
use maxl_train::net::{BatchNorm, MultiTaskNet};
use ndarray::{Array2, Array4};
use prost::Message;
use tch::{Device, Kind, Tensor};
use tract_onnx::pb;
use tract_onnx::prelude::*;

const TOLERANCE: f64 = 1e-4;

fn python() -> PathBuf {
    std::env::var_os("MAXL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The fixtures, generated once per test binary run into a temporary directory.
fn fixtures(dir: &Path) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/torchvision_fixtures.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run the fixture script");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn read(path: &Path, name: &str) -> Tensor {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{}: no `{name}`", path.display()))
        .1
}

/// max |a − b| / max |b|.
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1e-12)
}

fn metadata(arch: &Architecture) -> ModelMetadata {
    ModelMetadata {
        producer: "maxl-train test".into(),
        classes: ["a", "b"]
            .iter()
            .map(|n| ClassName {
                name: n.to_string(),
                display: n.to_string(),
            })
            .collect(),
        psi: vec![],
        aux_slots: vec![],
        input: ManifestInput::of_spec(&arch.input),
    }
}

/// The primary graph with its internal `features` tensor declared as an output.
fn with_features_output(model: &pb::ModelProto, dim: usize) -> Vec<u8> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().unwrap();
    let mut features = graph.output[0].clone();
    features.name = "features".into();
    if let Some(pb::type_proto::Value::TensorType(t)) =
        features.r#type.as_mut().and_then(|t| t.value.as_mut())
        && let Some(shape) = t.shape.as_mut()
    {
        shape.dim[1].value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(
            dim as i64,
        ));
    }
    graph.output.push(features);
    model.encode_to_vec()
}

fn ort_features(bytes: &[u8], pixels: &Array4<f32>) -> Array2<f32> {
    let rt = maxl_infer::runtime::shared(None, None).expect("ONNX Runtime");
    let mut session = ort::session::Session::builder(&rt.environment)
        .unwrap()
        .commit_from_memory(bytes)
        .unwrap();
    let input = ort::value::TensorRef::from_array_view(pixels.view()).unwrap();
    let outputs = session.run(ort::inputs!["image" => input]).unwrap();
    let (shape, data) = outputs["features"].try_extract_tensor::<f32>().unwrap();
    Array2::from_shape_vec((shape[0] as usize, shape[1] as usize), data.to_vec()).unwrap()
}

fn tract_features(bytes: &[u8], pixels: &Array4<f32>) -> Array2<f32> {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .and_then(|m| m.with_input_names(["image"]))
        .and_then(|m| m.with_outputs_by_name(["features"]))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap();
    let out = plan
        .run(tvec!(Tensor4::from(pixels.clone()).into()))
        .unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .to_owned()
        .into_dimensionality()
        .unwrap()
}

type Tensor4 = tract_onnx::prelude::Tensor;

fn to_tensor2(a: &Array2<f32>) -> Tensor {
    Tensor::from_slice(a.as_slice().unwrap()).reshape([a.nrows() as i64, a.ncols() as i64])
}

#[test]
fn resnets_equal_torchvision_in_tch_ort_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    let cases = fixtures(dir.path());
    let cases = cases.as_object().unwrap();
    assert_eq!(cases.len(), 5, "{cases:?}");
    for (case, c) in cases {
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let arch = Architecture::preset(c["arch"].as_str().unwrap())
            .unwrap()
            .with_input_size(h, w);
        arch.validate().unwrap();
        let mut f = MultiTaskNet::new(&arch, 2, 0, Kind::Float, Device::Cpu);
        let state = dir.path().join(c["state"].as_str().unwrap());
        let report = load_backbone(&mut f.store, &state).unwrap();
        assert!(report.kept.is_empty(), "{case}: kept {:?}", report.kept);
        assert!(
            report
                .ignored
                .iter()
                .all(|n| n.starts_with("fc.") || n.ends_with("num_batches_tracked")),
            "{case}: {:?}",
            report.ignored
        );
        let io = dir.path().join(c["io"].as_str().unwrap());
        let (x, want) = (read(&io, "input"), read(&io, "features"));

        let got = tch::no_grad(|| f.features(&x, BatchNorm::Running));
        let r = relative(&got, &want);
        eprintln!("{case}: tch: {r:.1e}");
        assert!(
            r < TOLERANCE,
            "{case}: tch features differ by {r:e} relative"
        );

        // The graph normalises in-graph: feed the pixels that normalise to torchvision's input.
        let i = &arch.input;
        let per_channel = |v: Vec<f32>| Tensor::from_slice(&v).view([1, 3, 1, 1]);
        let pixels = &x * per_channel(i.std.expand(3)) + per_channel(i.mean.expand(3));
        let pixels = Array4::from_shape_vec(
            (2, 3, h, w),
            Vec::<f32>::try_from(pixels.contiguous().flatten(0, -1)).unwrap(),
        )
        .unwrap();
        for fold in [false, true] {
            let opts = ExportOptions {
                fold_batch_norm: fold,
            };
            let model =
                maxl_onnx::primary_model(&arch, 2, 0, &weights(&f.store), opts, &metadata(&arch))
                    .unwrap();
            let bytes = with_features_output(&model, arch.feature_dim());
            for (backend, out) in [
                ("ort", ort_features(&bytes, &pixels)),
                ("tract", tract_features(&bytes, &pixels)),
            ] {
                let r = relative(&to_tensor2(&out), &want);
                eprintln!("{case}: {backend}, fold {fold}: {r:.1e}");
                assert!(
                    r < TOLERANCE,
                    "{case}: ONNX ({backend}, fold {fold}) features differ by {r:e} relative"
                );
            }
        }
    }
}
