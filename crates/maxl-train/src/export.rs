//! Exporting trained networks: `primary.onnx`, `label_generator.onnx` (methods with a generator)
//! and the manifest `maxl.yaml`, from live networks or from a run's checkpoint.
//!
//! The manifest's classes, ψ, slot names and input description are built once, as the
//! [`ModelMetadata`] both ONNX files carry, so the files and the manifest say the same.
//!
//! Every file is written under a temporary name and renamed; the manifest goes last, so a crash
//! leaves either the previous complete export or files whose hashes the loader refuses.

use std::path::Path;

use maxl_core::arch::Architecture;
use maxl_core::config::{Method, TrainConfig};
use maxl_core::fsio::write_atomic;
use maxl_core::hierarchy::{Hierarchy, folder_safe_name};
use maxl_core::manifest::{
    self, ClassName, Manifest, ManifestInput, ManifestModels, ModelFile, TrainingSummary,
};
use maxl_onnx::{Array, ExportOptions, ModelMetadata, Weights};
use tch::{Device, Kind, Tensor};

use crate::TrainError;
use crate::net::{LabelGenerator, MultiTaskNet, ParamStore};
use crate::run_files::{CLASSES_FILE, GENERATOR_FILE, MULTITASK_FILE, STATE_FILE, TrainState};

/// File name of the exported multi-task network f(θ1): primary probabilities and logits, and the
/// auxiliary ones when the network has an auxiliary head.
pub const PRIMARY_FILE: &str = "primary.onnx";
/// File name of the exported label generator g(θ2) (methods with a generator only).
pub const LABEL_GENERATOR_FILE: &str = "label_generator.onnx";

/// What the manifest records beyond the networks themselves.
pub struct ExportInfo<'a> {
    /// The run's training config (method, schedule, model, dataset, seed).
    pub config: &'a TrainConfig,
    /// The resolved architecture (its input shape and normalisation go into the manifest).
    pub arch: &'a Architecture,
    /// ψ, which names the auxiliary slots.
    pub hierarchy: &'a Hierarchy,
    /// Display names of the primary classes.
    pub class_names: &'a [String],
    /// Epochs trained.
    pub epochs: usize,
    /// Primary test accuracy after `epochs`, if measured.
    pub primary_test_accuracy: Option<f64>,
}

/// A network's tensors as plain f32 arrays for the exporter.
pub fn weights(store: &ParamStore) -> Weights {
    store
        .named()
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let data = Vec::<f32>::try_from(&t.flatten(0, -1)).expect("f32 tensor");
            (name, Array { shape, data })
        })
        .collect()
}

fn model_file(
    dir: &Path,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
) -> Result<ModelFile, TrainError> {
    let path = dir.join(name);
    Ok(ModelFile {
        path: name.into(),
        sha256: manifest::sha256_file(&path).map_err(|e| TrainError::output(&path, e))?,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    })
}

/// Writes the ONNX files and the manifest into `out` (created if needed).
pub fn export(
    out: &Path,
    f: &MultiTaskNet,
    g: Option<&LabelGenerator>,
    info: &ExportInfo<'_>,
    opts: ExportOptions,
) -> Result<Manifest, TrainError> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::output(out, e))?;
    let metadata = model_metadata(info);
    let primary_file = export_primary(out, f, info, &metadata, opts)?;
    let generator_file = export_generator(out, g, info, &metadata, opts)?;
    let m = build_manifest(info, metadata, primary_file, generator_file);
    write_atomic(&out.join(manifest::MANIFEST_FILE), m.to_yaml().as_bytes())?;
    Ok(m)
}

/// An ONNX exporter's error as the trainer reports it.
fn export_error(e: maxl_onnx::ExportError) -> TrainError {
    TrainError::Invalid(format!("export: {e}"))
}

/// Writes `primary.onnx` for f into `out`; its manifest entry.
fn export_primary(
    out: &Path,
    f: &MultiTaskNet,
    info: &ExportInfo<'_>,
    metadata: &ModelMetadata,
    opts: ExportOptions,
) -> Result<ModelFile, TrainError> {
    let primary = maxl_onnx::primary_model(
        info.arch,
        f.num_primary,
        f.num_aux,
        &weights(&f.store),
        opts,
        metadata,
    )
    .map_err(export_error)?;
    write_atomic(&out.join(PRIMARY_FILE), &maxl_onnx::to_bytes(&primary))?;
    let mut outputs = vec![maxl_onnx::PRIMARY_PROBS];
    if f.num_aux > 0 {
        outputs.push(maxl_onnx::AUX_PROBS);
    }
    outputs.push(maxl_onnx::PRIMARY_LOGITS);
    if f.num_aux > 0 {
        outputs.push(maxl_onnx::AUX_LOGITS);
    }
    model_file(out, PRIMARY_FILE, &[maxl_onnx::IMAGE], &outputs)
}

/// Writes `label_generator.onnx` for g into `out`, or removes a stale one without g; its
/// manifest entry.
fn export_generator(
    out: &Path,
    g: Option<&LabelGenerator>,
    info: &ExportInfo<'_>,
    metadata: &ModelMetadata,
    opts: ExportOptions,
) -> Result<Option<ModelFile>, TrainError> {
    match g {
        Some(g) => {
            let model = maxl_onnx::label_generator_model(
                &g.arch,
                info.hierarchy,
                &weights(&g.store),
                opts,
                metadata,
            )
            .map_err(export_error)?;
            write_atomic(
                &out.join(LABEL_GENERATOR_FILE),
                &maxl_onnx::to_bytes(&model),
            )?;
            let mut outputs = vec![
                maxl_onnx::LABEL_PROBS,
                maxl_onnx::LABEL_SLOT,
                maxl_onnx::GENERATOR_LOGITS,
            ];
            if g.weighted {
                outputs.push(maxl_onnx::SAMPLE_WEIGHT);
            }
            Ok(Some(model_file(
                out,
                LABEL_GENERATOR_FILE,
                &[maxl_onnx::IMAGE, maxl_onnx::PRIMARY_LABEL],
                &outputs,
            )?))
        }
        None => {
            // A stale generator from an earlier export must not pass for this model's.
            let stale = out.join(LABEL_GENERATOR_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| TrainError::output(&stale, e))?;
            }
            Ok(None)
        }
    }
}

/// What the export says about the model — classes, ψ, slot names, input — once, for both ONNX
/// files' metadata and the manifest.
fn model_metadata(info: &ExportInfo<'_>) -> ModelMetadata {
    let classes: Vec<ClassName> = info
        .class_names
        .iter()
        .map(|d| ClassName {
            name: folder_safe_name(d),
            display: d.clone(),
        })
        .collect();
    let safe: Vec<String> = classes.iter().map(|c| c.name.clone()).collect();
    ModelMetadata {
        producer: format!("maxl-train {}", env!("CARGO_PKG_VERSION")),
        psi: info.hierarchy.psi().to_vec(),
        aux_slots: info.hierarchy.slot_names(&safe),
        classes,
        input: ManifestInput::of_spec(&info.arch.input),
    }
}

/// The manifest of an export with this metadata and these model files.
fn build_manifest(
    info: &ExportInfo<'_>,
    metadata: ModelMetadata,
    primary_file: ModelFile,
    generator_file: Option<ModelFile>,
) -> Manifest {
    let c = info.config;
    Manifest {
        format: manifest::FORMAT,
        producer: metadata.producer,
        opset: maxl_onnx::OPSET,
        psi: metadata.psi,
        aux_slots: metadata.aux_slots,
        classes: metadata.classes,
        input: metadata.input,
        models: ManifestModels {
            primary: primary_file,
            label_generator: generator_file,
        },
        training: TrainingSummary {
            method: c.method.name().into(),
            schedule: c.schedule.name().into(),
            architecture: c.model.describe(),
            generator_architecture: c.model.describe_generator(),
            dataset: c.dataset.kind.name().into(),
            epochs: info.epochs,
            seed: c.seed,
            primary_test_accuracy: info.primary_test_accuracy,
        },
    }
}

/// Exports a checkpoint directory of a run (`<run>/checkpoints/last` or `best`).
pub fn export_checkpoint(
    checkpoint: &Path,
    out: &Path,
    opts: ExportOptions,
) -> Result<Manifest, TrainError> {
    let run = checkpoint.parent().and_then(Path::parent).ok_or_else(|| {
        TrainError::output(
            checkpoint,
            "not a checkpoint directory of a run (<run>/checkpoints/<name>)",
        )
    })?;
    let config = TrainConfig::load(&run.join("config.yaml"))?;
    let arch = config
        .model
        .resolve()
        .map_err(|e| TrainError::Invalid(format!("model: {e}")))?;
    let classes_path = run.join(CLASSES_FILE);
    let text =
        std::fs::read_to_string(&classes_path).map_err(|e| TrainError::output(&classes_path, e))?;
    let class_names: Vec<String> =
        serde_yaml_ng::from_str(&text).map_err(|e| TrainError::output(&classes_path, e))?;
    let hierarchy = config
        .hierarchy
        .resolve(class_names.len())
        .map_err(|e| TrainError::output(&run.join("config.yaml"), e))?;
    let state_path = checkpoint.join(STATE_FILE);
    let state: TrainState = serde_yaml_ng::from_str(
        &std::fs::read_to_string(&state_path).map_err(|e| TrainError::output(&state_path, e))?,
    )
    .map_err(|e| TrainError::output(&state_path, e))?;
    let read = |file: &str| {
        let p = checkpoint.join(file);
        Tensor::read_safetensors(&p).map_err(|e| {
            TrainError::output(&p, e.to_string().lines().next().unwrap_or("").to_string())
        })
    };
    let num_aux = if config.method == Method::Single {
        0
    } else {
        hierarchy.num_aux()
    };
    let specs = arch.multitask_params(hierarchy.num_primary(), num_aux);
    let f_store = ParamStore::from_named(specs, &read(MULTITASK_FILE)?, Kind::Float, Device::Cpu)
        .map_err(|m| TrainError::output(&checkpoint.join(MULTITASK_FILE), m))?;
    let f = MultiTaskNet {
        arch: arch.clone(),
        num_primary: hierarchy.num_primary(),
        num_aux,
        store: f_store,
    };
    let g = if config.method.uses_generator() {
        let g_arch = config
            .model
            .resolve_generator()
            .map_err(|e| TrainError::Invalid(format!("model: {e}")))?;
        let store = ParamStore::from_named(
            g_arch.generator_params_for(hierarchy.num_aux(), config.method.weighted()),
            &read(GENERATOR_FILE)?,
            Kind::Float,
            Device::Cpu,
        )
        .map_err(|m| TrainError::output(&checkpoint.join(GENERATOR_FILE), m))?;
        Some(LabelGenerator::with_store(&g_arch, &hierarchy, store))
    } else {
        None
    };
    let test_acc = test_accuracy_at(&run.join("metrics.csv"), state.epochs_done);
    let info = ExportInfo {
        config: &config,
        arch: &arch,
        hierarchy: &hierarchy,
        class_names: &class_names,
        epochs: state.epochs_done,
        primary_test_accuracy: test_acc,
    };
    export(out, &f, g.as_ref(), &info, opts)
}

/// The test accuracy recorded for `epoch` in metrics.csv, if any.
fn test_accuracy_at(metrics: &Path, epoch: usize) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    let mut lines = text.lines();
    let col = lines.next()?.split(',').position(|h| h == "test_acc")?;
    lines
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols.first()?.parse::<usize>().ok()? == epoch).then(|| cols.get(col)?.parse().ok())?
        })
        .next()
}
