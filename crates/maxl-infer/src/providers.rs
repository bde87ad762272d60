//! Which engine and execution providers run the graphs, and with which options.
//!
//! Policy: a requested provider that cannot register is an error, unless the caller asked for a
//! fallback ([`ProviderOptions::fallback_to_cpu`], or TensorRT's [`TensorRtOptions::cuda_fallback`]),
//! and then the fall-back is logged as a warning. [`ProviderOptions::cpu_fallback`] is a different
//! thing: whether single nodes the provider cannot run may run on the CPU (ONNX Runtime's
//! default) or must make the session fail to load (`session.disable_cpu_ep_fallback`).

use std::path::PathBuf;

/// Which engine runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// ONNX Runtime, CPU execution provider.
    OrtCpu,
    /// ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu).
    OrtCuda,
    /// ONNX Runtime, TensorRT execution provider (needs onnxruntime-gpu and TensorRT 10).
    OrtTensorRt,
    /// tract, pure Rust, CPU.
    Tract,
}

impl Backend {
    /// Every backend, in the order they are listed to users.
    pub const ALL: [Backend; 4] = [
        Backend::OrtCpu,
        Backend::OrtCuda,
        Backend::OrtTensorRt,
        Backend::Tract,
    ];

    /// The name users give on the command line (`ort-cpu`, `ort-cuda`, `ort-tensorrt`, `tract`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::OrtCpu => "ort-cpu",
            Backend::OrtCuda => "ort-cuda",
            Backend::OrtTensorRt => "ort-tensorrt",
            Backend::Tract => "tract",
        }
    }

    /// Whether the backend is ONNX Runtime (and so needs the library loaded).
    pub fn is_ort(self) -> bool {
        self != Backend::Tract
    }
}

impl maxl_core::Choice for Backend {
    const ALL: &'static [Self] = &Backend::ALL;

    fn name(self) -> &'static str {
        Backend::name(self)
    }

    fn help(self) -> &'static str {
        match self {
            Backend::OrtCpu => "ONNX Runtime, CPU execution provider",
            Backend::OrtCuda => {
                "ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu; an error if it cannot register)"
            }
            Backend::OrtTensorRt => {
                "ONNX Runtime, TensorRT execution provider (needs TensorRT 10; an error if it cannot register)"
            }
            Backend::Tract => "tract, pure Rust, CPU",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown backend `{s}` (one of: {})",
                    Backend::ALL.map(Backend::name).join(", ")
                )
            })
    }
}

/// CUDA execution provider options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// The GPU to run on (CUDA device index).
    pub device_id: i32,
}

/// A TensorRT optimisation profile over the batch size (the image's C×H×W come from the model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProfile {
    /// The smallest batch size the engine accepts.
    pub min: usize,
    /// The batch size the engine is tuned for.
    pub opt: usize,
    /// The largest batch size the engine accepts.
    pub max: usize,
}

/// TensorRT options. Built and passed to ONNX Runtime as documented by it; no TensorRT was
/// available where this was written, so these paths are untested beyond their error path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorRtOptions {
    /// The GPU to run on (CUDA device index).
    pub device_id: i32,
    /// Where built engines are cached (enables the engine cache).
    pub engine_cache: Option<PathBuf>,
    /// Let TensorRT run layers in half precision.
    pub fp16: bool,
    /// Batch sizes the engines are built for; ONNX Runtime's default without it.
    pub profile: Option<BatchProfile>,
    /// Register CUDA behind TensorRT: it runs what TensorRT cannot, and everything when
    /// TensorRT cannot register (logged).
    pub cuda_fallback: bool,
}

/// How an ONNX Runtime backend builds its sessions. Ignored by tract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderOptions {
    /// Options of the CUDA provider ([`Backend::OrtCuda`]).
    pub cuda: CudaOptions,
    /// Options of the TensorRT provider ([`Backend::OrtTensorRt`]).
    pub tensorrt: TensorRtOptions,
    /// Nodes the requested provider cannot run may run on the CPU (ONNX Runtime's default).
    /// `false`: every node must run on the requested provider, or loading fails.
    pub cpu_fallback: bool,
    /// When the requested provider cannot register at all, run on the CPU instead of failing
    /// (logged as a warning).
    pub fallback_to_cpu: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            cuda: CudaOptions::default(),
            tensorrt: TensorRtOptions::default(),
            cpu_fallback: true,
            fallback_to_cpu: false,
        }
    }
}

/// How an ONNX Runtime backend uses threads. Ignored by tract, which runs on the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadOptions {
    /// Sessions per graph: up to this many calls run at once. Default 1.
    pub sessions: usize,
    /// Intra-op threads of each session's own pool (ONNX Runtime's default: one per core).
    pub intra_threads: Option<usize>,
    /// One intra-op pool of this many threads shared by all sessions of the process instead of
    /// a pool per session (0: one per core). Process-wide: the first model loaded decides.
    pub global_threads: Option<usize>,
    /// Whether idle intra-op threads spin-wait for work (ONNX Runtime's default: yes). Spinning
    /// lowers latency when inference has the cores to itself; turn it off when other work
    /// (image decoding, say) shares them.
    pub spin: bool,
}

impl Default for ThreadOptions {
    fn default() -> Self {
        Self {
            sessions: 1,
            intra_threads: None,
            global_threads: None,
            spin: true,
        }
    }
}

/// The execution providers registered for each graph, in priority order (ONNX Runtime names;
/// tract reports `tract`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Providers {
    /// The multi-task network's providers.
    pub primary: Vec<String>,
    /// The label generator's providers; `None` when the model has no generator.
    pub label_generator: Option<Vec<String>>,
}

/// One provider to try, with its ort registration.
pub(crate) struct Candidate {
    pub name: &'static str,
    pub dispatch: ort::ep::ExecutionProviderDispatch,
}

pub(crate) const CPU: &str = "CPUExecutionProvider";
pub(crate) const CUDA: &str = "CUDAExecutionProvider";
pub(crate) const TENSORRT: &str = "TensorrtExecutionProvider";

/// "CUDA" for CUDAExecutionProvider, as users name providers.
pub(crate) fn short_name(ort_name: &'static str) -> &'static str {
    match ort_name {
        CUDA => "CUDA",
        TENSORRT => "TensorRT",
        CPU => "CPU",
        other => other,
    }
}

fn cuda(o: &CudaOptions) -> Candidate {
    Candidate {
        name: CUDA,
        dispatch: ort::ep::CUDA::default()
            .with_device_id(o.device_id)
            .build()
            .error_on_failure(),
    }
}

/// The providers to register for `backend`, most preferred first (the CPU provider is always
/// ONNX Runtime's last resort and is not listed). `image_dims` is C×H×W for the TensorRT
/// profile's shapes; `label_input`: the graph also takes `primary_label` [N].
pub(crate) fn candidates(
    backend: Backend,
    o: &ProviderOptions,
    image_dims: [usize; 3],
    label_input: bool,
) -> Vec<Candidate> {
    match backend {
        Backend::OrtCpu | Backend::Tract => Vec::new(),
        Backend::OrtCuda => vec![cuda(&o.cuda)],
        Backend::OrtTensorRt => {
            let t = &o.tensorrt;
            let mut ep = ort::ep::TensorRT::default()
                .with_device_id(t.device_id)
                .with_fp16(t.fp16);
            if let Some(dir) = &t.engine_cache {
                ep = ep
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display());
            }
            if let Some(p) = t.profile {
                let [c, h, w] = image_dims;
                let shape = |n: usize| {
                    let mut s = format!("{}:{n}x{c}x{h}x{w}", maxl_onnx::IMAGE);
                    if label_input {
                        s.push_str(&format!(",{}:{n}", maxl_onnx::PRIMARY_LABEL));
                    }
                    s
                };
                ep = ep
                    .with_profile_min_shapes(shape(p.min))
                    .with_profile_opt_shapes(shape(p.opt))
                    .with_profile_max_shapes(shape(p.max));
            }
            let mut v = vec![Candidate {
                name: TENSORRT,
                dispatch: ep.build().error_on_failure(),
            }];
            if t.cuda_fallback {
                v.push(cuda(&CudaOptions {
                    device_id: t.device_id,
                }));
            }
            v
        }
    }
}
