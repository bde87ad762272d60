//! Untrained exports: random weights for any [`Architecture`], and a whole model directory
//! (`maxl.yaml`, `primary.onnx`, `label_generator.onnx`) of a tiny network with them, so that
//! tests, examples and benchmarks can load, run and label with a model — a `maxl-weighted` one
//! included — without training first. Deterministic for a given seed.

use std::path::Path;

use maxl_core::arch::{Architecture, ConvBlock, InputSpec, ParamKind, ParamSpec, WEIGHT_HEAD};
use maxl_core::manifest::{
    self, MANIFEST_FILE, Manifest, ManifestInput, ManifestModels, ModelFile, TrainingSummary,
};

use crate::{
    AUX_LOGITS, AUX_PROBS, Array, ExportOptions, GENERATOR_LOGITS, IMAGE, LABEL_PROBS, LABEL_SLOT,
    ModelMetadata, PRIMARY_LABEL, PRIMARY_LOGITS, PRIMARY_PROBS, SAMPLE_WEIGHT, Weights,
};

/// How much larger than a Linear layer's usual initialisation the weight head's weights are, so
/// that the untrained weights spread over much of (0, 2) instead of staying near 1.
const WEIGHT_HEAD_SCALE: f32 = 6.0;

/// A small VGG-style network on `input`: two blocks of one convolution (4 and 8 channels) and
/// heads 16 wide. It exports and runs in milliseconds.
pub fn tiny_architecture(input: InputSpec) -> Architecture {
    Architecture {
        input,
        blocks: vec![
            ConvBlock {
                convs: 1,
                channels: 4,
            },
            ConvBlock {
                convs: 1,
                channels: 8,
            },
        ],
        resnet: None,
        head_hidden: 16,
    }
}

/// SplitMix64: a small deterministic generator (no dependency, same numbers everywhere).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Random weights for `specs`, as PyTorch initialises a fresh network (uniform ±1/√fan-in for
/// convolutions and linear layers) with batch-norm statistics and affine terms near their
/// defaults but not equal to them, so that every tensor matters. The weight head's weights
/// (`weight_head.weight`) are drawn wider, so that its weights spread over (0, 2).
pub fn random_weights(specs: &[ParamSpec], seed: u64) -> Weights {
    let mut rng = SplitMix(seed ^ 0x6D61_786C_5F77_6569);
    let mut fan_in = 1usize;
    specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let (lo, hi) = match s.kind {
                ParamKind::ConvWeight | ParamKind::LinearWeight => {
                    fan_in = s.shape[1..].iter().product::<usize>().max(1);
                    let b = 1.0 / (fan_in as f32).sqrt();
                    if s.name == format!("{WEIGHT_HEAD}.weight") {
                        (-b * WEIGHT_HEAD_SCALE, b * WEIGHT_HEAD_SCALE)
                    } else {
                        (-b, b)
                    }
                }
                ParamKind::ConvBias | ParamKind::LinearBias => {
                    let b = 1.0 / (fan_in as f32).sqrt();
                    (-b, b)
                }
                ParamKind::BnWeight => (0.8, 1.2),
                ParamKind::BnBias | ParamKind::BnRunningMean => (-0.1, 0.1),
                ParamKind::BnRunningVar => (0.5, 1.5),
            };
            let data = (0..n).map(|_| rng.uniform(lo, hi)).collect();
            (
                s.name.clone(),
                Array {
                    shape: s.shape.clone(),
                    data,
                },
            )
        })
        .collect()
}

/// Writes an untrained model into `dir` (created if needed): `primary.onnx` (with an auxiliary
/// head), `label_generator.onnx` (with a weight head and its `sample_weight` output when
/// `weighted`, as `maxl-weighted` exports it) and `maxl.yaml`, all of [`tiny_architecture`] on
/// `template`'s input, with `template`'s classes, ψ and slot names. The manifest records the
/// method as `maxl-weighted` or `maxl` and the dataset as `synthetic`. Returns the manifest
/// written; an error names the file that could not be written.
pub fn export(
    dir: &Path,
    template: &Manifest,
    weighted: bool,
    seed: u64,
) -> Result<Manifest, String> {
    let arch = tiny_architecture(template.input.spec());
    arch.validate()
        .map_err(|e| format!("{}: input: {e}", MANIFEST_FILE))?;
    let hierarchy = template.hierarchy()?;
    let (k, a) = (hierarchy.num_primary(), hierarchy.num_aux());
    let producer = format!("maxl-onnx {} (synthetic)", env!("CARGO_PKG_VERSION"));
    let metadata = ModelMetadata {
        producer: producer.clone(),
        classes: template.classes.clone(),
        psi: template.psi.clone(),
        aux_slots: template.aux_slots.clone(),
        input: ManifestInput::of_spec(&arch.input),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let opts = ExportOptions::default();
    let write = |name: &str, model: &tract_onnx::pb::ModelProto, outputs: &[&str]| {
        let path = dir.join(name);
        let bytes = crate::to_bytes(model);
        std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let inputs: &[&str] = if name == "primary.onnx" {
            &[IMAGE]
        } else {
            &[IMAGE, PRIMARY_LABEL]
        };
        Ok::<_, String>(ModelFile {
            path: name.into(),
            sha256: manifest::sha256_bytes(&bytes),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        })
    };
    let f = random_weights(&arch.multitask_params(k, a), seed);
    let primary = crate::primary_model(&arch, k, a, &f, opts, &metadata)
        .map_err(|e| format!("primary.onnx: {e}"))?;
    let primary = write(
        "primary.onnx",
        &primary,
        &[PRIMARY_PROBS, AUX_PROBS, PRIMARY_LOGITS, AUX_LOGITS],
    )?;
    let g = random_weights(
        &arch.generator_params_for(a, weighted),
        seed.wrapping_add(1),
    );
    let generator = crate::label_generator_model(&arch, &hierarchy, &g, opts, &metadata)
        .map_err(|e| format!("label_generator.onnx: {e}"))?;
    let mut outputs = vec![LABEL_PROBS, LABEL_SLOT, GENERATOR_LOGITS];
    if weighted {
        outputs.push(SAMPLE_WEIGHT);
    }
    let generator = write("label_generator.onnx", &generator, &outputs)?;
    let m = Manifest {
        format: manifest::FORMAT,
        producer,
        opset: crate::OPSET,
        psi: metadata.psi,
        aux_slots: metadata.aux_slots,
        classes: metadata.classes,
        input: metadata.input,
        models: ManifestModels {
            primary,
            label_generator: Some(generator),
        },
        training: TrainingSummary {
            method: if weighted { "maxl-weighted" } else { "maxl" }.into(),
            schedule: "none".into(),
            architecture: "synthetic tiny (untrained)".into(),
            generator_architecture: None,
            dataset: "synthetic".into(),
            epochs: 0,
            seed,
            primary_test_accuracy: None,
        },
    };
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, m.to_yaml()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(m)
}
