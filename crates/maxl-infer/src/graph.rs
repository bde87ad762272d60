//! One ONNX graph on one backend, run through `&self`: ONNX Runtime sessions are checked out of
//! a pool (a session runs one call at a time), tract runs one shared, immutable plan. Outputs
//! are looked up by name on both backends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD};
use tract_onnx::prelude::*;

use crate::error::InferError;
use crate::pool::Pool;
use crate::providers::{self, Backend, ProviderOptions, ThreadOptions};
use crate::runtime::{OrtRuntime, one_line};

/// An input tensor, in standard (row-major) layout.
pub(crate) enum Input<'a> {
    F32(ArrayViewD<'a, f32>),
    I64(ArrayViewD<'a, i64>),
}

/// An output tensor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

enum Engine {
    Ort(Pool<ort::session::Session>),
    Tract(Arc<TypedRunnableModel>),
}

pub(crate) struct Graph {
    engine: Engine,
    backend: Backend,
    path: PathBuf,
    inputs: Vec<String>,
    outputs: Vec<String>,
    providers: Vec<String>,
}

/// How to build a graph.
pub(crate) struct GraphSpec<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    pub image_dims: [usize; 3],
}

impl Graph {
    pub(crate) fn load(
        spec: GraphSpec<'_>,
        backend: Backend,
        runtime: Option<&OrtRuntime>,
        providers: &ProviderOptions,
        threads: &ThreadOptions,
    ) -> Result<Self, InferError> {
        let model_err = |m: String| InferError::Model {
            path: spec.path.to_path_buf(),
            message: m,
        };
        let (engine, registered) = match backend {
            Backend::Tract => {
                let plan = tract_onnx::onnx()
                    .model_for_read(&mut std::io::Cursor::new(spec.bytes))
                    .and_then(|m| m.with_input_names(spec.inputs))
                    .and_then(|m| m.with_outputs_by_name(spec.outputs))
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .map_err(|e| model_err(format!("tract cannot load it: {}", one_line(e))))?;
                (Engine::Tract(plan), vec!["tract".to_string()])
            }
            _ => {
                let rt = runtime.ok_or_else(|| InferError::Run {
                    backend: backend.name(),
                    message: "ONNX Runtime is not loaded".into(),
                })?;
                let label_input = spec.inputs.iter().any(|i| i == maxl_onnx::PRIMARY_LABEL);
                let n = threads.sessions.max(1);
                let mut sessions = Vec::with_capacity(n);
                let mut registered = Vec::new();
                for _ in 0..n {
                    let (s, r) = ort_session(
                        &spec,
                        backend,
                        rt,
                        providers,
                        threads,
                        label_input,
                        registered.is_empty(),
                    )?;
                    sessions.push(s);
                    registered = r;
                }
                (Engine::Ort(Pool::new(sessions)), registered)
            }
        };
        Ok(Self {
            engine,
            backend,
            path: spec.path.to_path_buf(),
            inputs: spec.inputs.to_vec(),
            outputs: spec.outputs.to_vec(),
            providers: registered,
        })
    }

    pub(crate) fn providers(&self) -> &[String] {
        &self.providers
    }

    pub(crate) fn sessions(&self) -> usize {
        match &self.engine {
            Engine::Ort(p) => p.size(),
            Engine::Tract(_) => 1,
        }
    }

    /// Runs with inputs in the graph's input order; returns every output by name.
    pub(crate) fn run(&self, inputs: &[Input<'_>]) -> Result<BTreeMap<String, Output>, InferError> {
        let backend = self.backend.name();
        let run_err = |e: String| InferError::Run {
            backend,
            message: format!("{}: {e}", self.path.display()),
        };
        match &self.engine {
            Engine::Ort(pool) => {
                let mut feed: Vec<(
                    std::borrow::Cow<'_, str>,
                    ort::session::SessionInputValue<'_>,
                )> = Vec::with_capacity(inputs.len());
                for (name, v) in self.inputs.iter().zip(inputs) {
                    let value: ort::session::SessionInputValue<'_> = match v {
                        Input::F32(a) => ort::value::TensorRef::from_array_view(a.view())
                            .map_err(|e| run_err(one_line(e)))?
                            .into(),
                        Input::I64(a) => ort::value::TensorRef::from_array_view(a.view())
                            .map_err(|e| run_err(one_line(e)))?
                            .into(),
                    };
                    feed.push((name.as_str().into(), value));
                }
                pool.with(|session| {
                    let out = session.run(feed).map_err(|e| run_err(one_line(e)))?;
                    self.outputs
                        .iter()
                        .map(|name| {
                            let v = out.get(name.as_str()).ok_or_else(|| {
                                run_err(format!("the graph has no output `{name}`"))
                            })?;
                            let value = if let Ok(a) = v.try_extract_array::<f32>() {
                                Output::F32(a.to_owned())
                            } else {
                                Output::I64(
                                    v.try_extract_array::<i64>()
                                        .map_err(|e| run_err(one_line(e)))?
                                        .to_owned(),
                                )
                            };
                            Ok((name.clone(), value))
                        })
                        .collect()
                })
            }
            Engine::Tract(plan) => {
                let feed: TVec<TValue> = inputs
                    .iter()
                    .map(|v| match v {
                        Input::F32(a) => Tensor::from(a.to_owned()).into(),
                        Input::I64(a) => Tensor::from(a.to_owned()).into(),
                    })
                    .collect();
                let out = plan.run(feed).map_err(|e| run_err(one_line(e)))?;
                // The plan's outputs were selected by name, in `self.outputs` order.
                self.outputs
                    .iter()
                    .zip(out)
                    .map(|(name, t)| {
                        // The plan's output is ours alone: moved out, not copied.
                        let t = t.into_tensor();
                        let value = if t.datum_type() == f32::datum_type() {
                            t.into_plain_array::<f32>().map(Output::F32)
                        } else {
                            t.into_plain_array::<i64>().map(Output::I64)
                        };
                        Ok((name.clone(), value.map_err(|e| run_err(one_line(e)))?))
                    })
                    .collect()
            }
        }
    }
}

/// One ONNX Runtime session with the requested providers, and the providers it registered.
fn ort_session(
    spec: &GraphSpec<'_>,
    backend: Backend,
    rt: &OrtRuntime,
    options: &ProviderOptions,
    threads: &ThreadOptions,
    label_input: bool,
    log: bool,
) -> Result<(ort::session::Session, Vec<String>), InferError> {
    let model_err = |m: String| InferError::Model {
        path: spec.path.to_path_buf(),
        message: m,
    };
    let ort_err = |e: String| InferError::Run {
        backend: backend.name(),
        message: e,
    };
    let mut builder =
        ort::session::Session::builder(&rt.environment).map_err(|e| ort_err(one_line(e)))?;
    if rt.global_threads.is_none()
        && let Some(n) = threads.intra_threads
    {
        builder = builder
            .with_intra_threads(n)
            .map_err(|e| ort_err(one_line(e)))?;
    }
    if !threads.spin {
        builder = builder
            .with_intra_op_spinning(false)
            .map_err(|e| ort_err(one_line(e)))?;
    }
    if !options.cpu_fallback && backend != Backend::OrtCpu {
        builder = builder
            .with_disable_cpu_fallback()
            .map_err(|e| ort_err(one_line(e)))?;
    }
    let candidates = providers::candidates(backend, options, spec.image_dims, label_input);
    let requested = candidates.len();
    let mut registered = Vec::new();
    let mut failures = Vec::new();
    for c in candidates {
        match builder.with_execution_providers([c.dispatch]) {
            Ok(b) => {
                builder = b;
                registered.push(c.name.to_string());
            }
            Err(e) => {
                failures.push((c.name, one_line(&e)));
                builder = e.recover();
            }
        }
    }
    if requested > 0 && registered.is_empty() && !options.fallback_to_cpu {
        return Err(InferError::Provider {
            backend: backend.name(),
            provider: providers::short_name(failures[0].0),
            message: failures
                .iter()
                .map(|(n, m)| format!("{n}: {m}"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if log {
        let next = registered.first().map_or("the CPU", String::as_str);
        for (name, message) in &failures {
            tracing::warn!(
                "{}: the {name} execution provider cannot register ({message}); falling back to {next}",
                spec.path.display()
            );
        }
    }
    let session = builder
        .commit_from_memory(spec.bytes)
        .map_err(|e| model_err(format!("ONNX Runtime cannot load it: {}", one_line(e))))?;
    if !(backend != Backend::OrtCpu && !options.cpu_fallback && !registered.is_empty()) {
        registered.push(providers::CPU.to_string());
    }
    Ok((session, registered))
}
