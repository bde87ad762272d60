//! Command-line options that choose and load a model, shared by `maxl-infer` and `maxl-label`.

use std::path::PathBuf;

use clap::Args;
use maxl_cli::choice;
use maxl_infer::{
    Backend, BatchProfile, CudaOptions, InferError, MaxlModel, MaxlModelBuilder, ProviderOptions,
    TensorRtOptions, ThreadOptions,
};

fn parse_profile(s: &str) -> Result<BatchProfile, String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}`: expected MIN,OPT,MAX batch sizes, e.g. 1,32,64"))?;
    match v[..] {
        [min, opt, max] if 1 <= min && min <= opt && opt <= max => {
            Ok(BatchProfile { min, opt, max })
        }
        _ => Err(format!(
            "`{s}`: expected MIN,OPT,MAX with 1 ≤ MIN ≤ OPT ≤ MAX"
        )),
    }
}

/// The options that choose and load a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Exported model directory (maxl.yaml and its ONNX files).
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub model: PathBuf,
    /// Inference engine.
    #[arg(long, value_parser = choice::<Backend>(), default_value = "ort-cpu")]
    pub backend: Backend,
    /// Path to libonnxruntime.so; overrides ORT_DYLIB_PATH and the library recorded by scripts/setup.sh.
    #[arg(long = "ort-lib", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// ONNX Runtime sessions per graph: how many inference calls run at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub sessions: u16,
    /// Intra-op threads of each session (default: ONNX Runtime's, one per core).
    #[arg(long, value_name = "N")]
    pub intra_threads: Option<usize>,
    /// Share one process-wide ONNX Runtime intra-op pool of N threads (0: one per core) between
    /// all sessions instead of a pool per session.
    #[arg(long, value_name = "N", conflicts_with = "intra_threads")]
    pub global_threads: Option<usize>,
    /// Idle ONNX Runtime threads sleep instead of spin-waiting for work: less CPU burnt between
    /// calls, a little more latency. maxl-label always does this (its decoding threads need the
    /// cores).
    #[arg(long)]
    pub no_spin: bool,
    /// GPU for ort-cuda and ort-tensorrt.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub device_id: i32,
    /// ort-tensorrt: cache built engines in DIR.
    #[arg(long, value_name = "DIR")]
    pub trt_engine_cache: Option<PathBuf>,
    /// ort-tensorrt: allow FP16 kernels.
    #[arg(long)]
    pub trt_fp16: bool,
    /// ort-tensorrt: optimisation profile over the batch size, MIN,OPT,MAX (e.g. 1,32,64).
    #[arg(long, value_name = "MIN,OPT,MAX", value_parser = parse_profile)]
    pub trt_profile: Option<BatchProfile>,
    /// ort-tensorrt: register CUDA behind TensorRT, for what TensorRT cannot run or when it
    /// cannot register (logged).
    #[arg(long)]
    pub trt_cuda_fallback: bool,
    /// ort-cuda/ort-tensorrt: every node must run on the requested provider (no node on the CPU);
    /// loading fails otherwise.
    #[arg(long)]
    pub no_cpu_fallback: bool,
    /// When the requested provider cannot register, run on the CPU instead of failing (logged).
    #[arg(long)]
    pub fallback_to_cpu: bool,
}

impl ModelArgs {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn threads(&self) -> ThreadOptions {
        ThreadOptions {
            sessions: self.sessions as usize,
            intra_threads: self.intra_threads,
            global_threads: self.global_threads,
            spin: !self.no_spin,
        }
    }

    pub fn providers(&self) -> ProviderOptions {
        ProviderOptions {
            cuda: CudaOptions {
                device_id: self.device_id,
            },
            tensorrt: TensorRtOptions {
                device_id: self.device_id,
                engine_cache: self.trt_engine_cache.clone(),
                fp16: self.trt_fp16,
                profile: self.trt_profile,
                cuda_fallback: self.trt_cuda_fallback,
            },
            cpu_fallback: !self.no_cpu_fallback,
            fallback_to_cpu: self.fallback_to_cpu,
        }
    }

    /// A builder with every option given; callers may override some before `build()`.
    pub fn builder(&self) -> MaxlModelBuilder {
        MaxlModel::builder(&self.model)
            .with_backend(self.backend())
            .with_ort_library(self.ort_lib.clone())
            .with_providers(self.providers())
            .with_threads(self.threads())
    }

    pub fn load(&self) -> Result<MaxlModel, InferError> {
        self.builder().build()
    }
}
