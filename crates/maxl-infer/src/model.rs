//! A loaded MAXL model: the manifest, the primary network and (when exported) the label
//! generator, each running on one backend.
//!
//! Backends: ONNX Runtime (`ort`) with the CPU, CUDA or TensorRT execution provider, or pure-Rust
//! `tract` on the CPU. The fallback policy is explicit: a requested provider that cannot be
//! registered is an error (`error_on_failure`), never a silent fall-back to the CPU.
//!
//! `MaxlModel` runs one request at a time (`&mut self`, as ort's `Session::run`); to serve several
//! threads, keep one `MaxlModel` per worker (a pool) or put it behind a `Mutex`.

use std::path::{Path, PathBuf};

use maxl_core::manifest::{Manifest, ManifestError};
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView4, Ix1, Ix2};
use tract_onnx::prelude::*;

use crate::runtime::{OrtRuntime, RuntimeError, one_line};

/// Which engine runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// ONNX Runtime, CPU execution provider.
    OrtCpu,
    /// ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu; an error if it cannot register).
    OrtCuda,
    /// ONNX Runtime, TensorRT execution provider (needs TensorRT 10; an error if it cannot register).
    #[value(name = "ort-tensorrt")]
    OrtTensorRt,
    /// tract, pure Rust, CPU.
    Tract,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::OrtCpu => "ort-cpu",
            Backend::OrtCuda => "ort-cuda",
            Backend::OrtTensorRt => "ort-tensorrt",
            Backend::Tract => "tract",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    #[error("{0}")]
    Input(String),
    #[error("{backend}: {message}")]
    Run {
        backend: &'static str,
        message: String,
    },
    #[error("this model has no label generator (it was trained with method `{0}`)")]
    NoGenerator(String),
}

/// An input or output tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

enum Engine {
    Ort(Box<ort::session::Session>),
    Tract(std::sync::Arc<TypedRunnableModel>),
}

/// One ONNX graph on one backend.
struct Graph {
    engine: Engine,
    backend: Backend,
    outputs: Vec<String>,
}

impl Graph {
    fn load(
        path: &Path,
        backend: Backend,
        ort_runtime: Option<&OrtRuntime>,
        outputs: &[String],
    ) -> Result<Self, InferError> {
        let model_err = |m: String| InferError::Model {
            path: path.to_path_buf(),
            message: m,
        };
        let engine = match backend {
            Backend::Tract => {
                let model = tract_onnx::onnx()
                    .model_for_path(path)
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| model_err(format!("tract cannot load it: {}", one_line(e))))?;
                Engine::Tract(model)
            }
            _ => {
                let rt = ort_runtime.expect("ort backends load the runtime first");
                let mut builder = ort::session::Session::builder(&rt.environment)
                    .map_err(|e| model_err(one_line(e)))?;
                let ep = match backend {
                    Backend::OrtCuda => Some(ort::ep::CUDA::default().build().error_on_failure()),
                    Backend::OrtTensorRt => {
                        Some(ort::ep::TensorRT::default().build().error_on_failure())
                    }
                    _ => None,
                };
                if let Some(ep) = ep {
                    builder =
                        builder
                            .with_execution_providers([ep])
                            .map_err(|e| InferError::Run {
                                backend: backend.name(),
                                message: format!(
                                    "cannot register the execution provider: {}",
                                    one_line(e)
                                ),
                            })?;
                }
                let session = builder.commit_from_file(path).map_err(|e| {
                    model_err(format!("ONNX Runtime cannot load it: {}", one_line(e)))
                })?;
                Engine::Ort(Box::new(session))
            }
        };
        Ok(Self {
            engine,
            backend,
            outputs: outputs.to_vec(),
        })
    }

    /// Runs with named inputs (in the graph's input order); returns outputs in the manifest's order.
    fn run(&mut self, inputs: &[(&str, Value)]) -> Result<Vec<Value>, InferError> {
        let backend = self.backend.name();
        let run_err = |e: String| InferError::Run {
            backend,
            message: e,
        };
        match &mut self.engine {
            Engine::Ort(session) => {
                let mut feed: Vec<(
                    std::borrow::Cow<'_, str>,
                    ort::session::SessionInputValue<'_>,
                )> = Vec::new();
                for (name, v) in inputs {
                    let value: ort::session::SessionInputValue<'_> = match v {
                        Value::F32(a) => ort::value::TensorRef::from_array_view(a.view())
                            .map_err(|e| run_err(one_line(e)))?
                            .into(),
                        Value::I64(a) => ort::value::TensorRef::from_array_view(a.view())
                            .map_err(|e| run_err(one_line(e)))?
                            .into(),
                    };
                    feed.push(((*name).into(), value));
                }
                let out = session.run(feed).map_err(|e| run_err(one_line(e)))?;
                self.outputs
                    .iter()
                    .map(|name| {
                        let v = &out[name.as_str()];
                        if let Ok(a) = v.try_extract_array::<f32>() {
                            Ok(Value::F32(a.to_owned()))
                        } else {
                            v.try_extract_array::<i64>()
                                .map(|a| Value::I64(a.to_owned()))
                                .map_err(|e| run_err(one_line(e)))
                        }
                    })
                    .collect()
            }
            Engine::Tract(model) => {
                let feed: TVec<TValue> = inputs
                    .iter()
                    .map(|(_, v)| match v {
                        Value::F32(a) => Tensor::from(a.clone()).into(),
                        Value::I64(a) => Tensor::from(a.clone()).into(),
                    })
                    .collect();
                let out = model.run(feed).map_err(|e| run_err(one_line(e)))?;
                out.into_iter()
                    .map(|t| {
                        let t = t.into_tensor();
                        if let Ok(a) = t.to_plain_array_view::<f32>() {
                            Ok(Value::F32(a.to_owned()))
                        } else {
                            t.to_plain_array_view::<i64>()
                                .map(|a| Value::I64(a.to_owned()))
                                .map_err(|e| run_err(one_line(e)))
                        }
                    })
                    .collect()
            }
        }
    }
}

/// The multi-task network's outputs for a batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub primary_probs: Array2<f32>,
    pub primary_logits: Array2<f32>,
    /// None for a single-task model.
    pub aux_probs: Option<Array2<f32>>,
    pub aux_logits: Option<Array2<f32>>,
}

/// The label generator's outputs for a batch.
#[derive(Debug, Clone)]
pub struct GeneratedLabels {
    /// [N, A]: a distribution over the slots of each image's primary class, exact zeros elsewhere.
    pub probs: Array2<f32>,
    /// [N]: the most likely auxiliary slot.
    pub slots: Array1<i64>,
    /// [N, A]: pre-mask logits.
    pub logits: Array2<f32>,
}

/// The command-line options that choose and load a model, shared by the binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Exported model directory (maxl.yaml and its ONNX files).
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub model: PathBuf,
    /// Inference engine.
    #[arg(long, value_enum, default_value = "ort-cpu")]
    pub backend: Backend,
    /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
    #[arg(long = "ort-lib", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
}

impl ModelArgs {
    pub fn load(&self) -> Result<MaxlModel, InferError> {
        MaxlModel::builder(&self.model)
            .with_backend(self.backend)
            .with_ort_library(self.ort_lib.clone())
            .build()
    }
}

pub struct MaxlModelBuilder {
    dir: PathBuf,
    backend: Backend,
    ort_library: Option<PathBuf>,
}

impl MaxlModelBuilder {
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The ONNX Runtime library (`--ort-lib`); otherwise `ORT_DYLIB_PATH` or the set-up env file.
    pub fn with_ort_library(mut self, path: Option<PathBuf>) -> Self {
        self.ort_library = path;
        self
    }

    /// Verifies the manifest's hashes and loads the graphs.
    pub fn build(self) -> Result<MaxlModel, InferError> {
        let manifest = Manifest::load(&self.dir)?;
        let runtime = match self.backend {
            Backend::Tract => None,
            _ => Some(crate::runtime::shared(self.ort_library.as_deref())?),
        };
        let m = &manifest.models;
        let primary = Graph::load(
            &self.dir.join(&m.primary.path),
            self.backend,
            runtime,
            &m.primary.outputs,
        )?;
        let generator = match &m.label_generator {
            Some(g) => Some(Graph::load(
                &self.dir.join(&g.path),
                self.backend,
                runtime,
                &g.outputs,
            )?),
            None => None,
        };
        Ok(MaxlModel {
            manifest,
            dir: self.dir,
            primary,
            generator,
        })
    }
}

pub struct MaxlModel {
    pub manifest: Manifest,
    pub dir: PathBuf,
    primary: Graph,
    generator: Option<Graph>,
}

fn two_d(v: Value, what: &str) -> Result<Array2<f32>, InferError> {
    match v {
        Value::F32(a) => a
            .into_dimensionality::<Ix2>()
            .map_err(|e| InferError::Input(format!("{what}: {e}"))),
        Value::I64(_) => Err(InferError::Input(format!("{what}: expected f32 output"))),
    }
}

impl MaxlModel {
    /// Starts loading the model exported into `dir` (its `maxl.yaml` and ONNX files).
    pub fn builder(dir: impl Into<PathBuf>) -> MaxlModelBuilder {
        MaxlModelBuilder {
            dir: dir.into(),
            backend: Backend::OrtCpu,
            ort_library: None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.primary.backend
    }

    pub fn has_generator(&self) -> bool {
        self.generator.is_some()
    }

    fn check_images(&self, images: &ArrayView4<'_, f32>) -> Result<(), InferError> {
        let i = &self.manifest.input;
        let s = images.shape();
        if s[1..] != [i.channels, i.height, i.width] {
            return Err(InferError::Input(format!(
                "images are {}×{}×{}, the model expects {}×{}×{}",
                s[1], s[2], s[3], i.channels, i.height, i.width
            )));
        }
        Ok(())
    }

    /// Runs the multi-task network on images scaled to [0, 1], [N, C, H, W].
    pub fn predict(&mut self, images: ArrayView4<'_, f32>) -> Result<Prediction, InferError> {
        self.check_images(&images)?;
        let out = self
            .primary
            .run(&[(maxl_onnx::IMAGE, Value::F32(images.to_owned().into_dyn()))])?;
        let names = self.manifest.models.primary.outputs.clone();
        let mut by_name: std::collections::BTreeMap<String, Value> =
            names.into_iter().zip(out).collect();
        let mut take = |n: &str| by_name.remove(n).map(|v| two_d(v, n)).transpose();
        Ok(Prediction {
            primary_probs: take(maxl_onnx::PRIMARY_PROBS)?
                .ok_or_else(|| InferError::Input("no primary_probs output".into()))?,
            primary_logits: take(maxl_onnx::PRIMARY_LOGITS)?
                .ok_or_else(|| InferError::Input("no primary_logits output".into()))?,
            aux_probs: take(maxl_onnx::AUX_PROBS)?,
            aux_logits: take(maxl_onnx::AUX_LOGITS)?,
        })
    }

    /// Runs the label generator on images in [0, 1] with their primary labels. Labels outside
    /// [0, K) are refused before anything runs.
    pub fn generate_labels(
        &mut self,
        images: ArrayView4<'_, f32>,
        labels: ArrayView1<'_, i64>,
    ) -> Result<GeneratedLabels, InferError> {
        self.check_images(&images)?;
        if labels.len() != images.shape()[0] {
            return Err(InferError::Input(format!(
                "{} labels for {} images",
                labels.len(),
                images.shape()[0]
            )));
        }
        let h = self.manifest.hierarchy().map_err(InferError::Input)?;
        for &l in labels {
            h.check_label(l)
                .map_err(|e| InferError::Input(e.to_string()))?;
        }
        let method = self.manifest.training.method.clone();
        let g = self
            .generator
            .as_mut()
            .ok_or(InferError::NoGenerator(method))?;
        let out = g.run(&[
            (maxl_onnx::IMAGE, Value::F32(images.to_owned().into_dyn())),
            (
                maxl_onnx::PRIMARY_LABEL,
                Value::I64(labels.to_owned().into_dyn()),
            ),
        ])?;
        let mut it = out.into_iter();
        let probs = two_d(
            it.next()
                .ok_or_else(|| InferError::Input("missing output".into()))?,
            "aux_label_probs",
        )?;
        let slots = match it.next() {
            Some(Value::I64(a)) => a
                .into_dimensionality::<Ix1>()
                .map_err(|e| InferError::Input(e.to_string()))?,
            _ => {
                return Err(InferError::Input(
                    "aux_slot: expected an int64 output".into(),
                ));
            }
        };
        let logits = two_d(
            it.next()
                .ok_or_else(|| InferError::Input("missing output".into()))?,
            "generator_logits",
        )?;
        Ok(GeneratedLabels {
            probs,
            slots,
            logits,
        })
    }
}
