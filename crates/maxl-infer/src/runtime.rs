//! Loading the ONNX Runtime shared library.
//!
//! ort runs in `load-dynamic` mode: the library is found by [`maxl_core::discovery`] (option,
//! `ORT_DYLIB_PATH`, or the set-up env file) and loaded once per process. Loading failures —
//! a missing file, a file that is not a shared library, a too-old ONNX Runtime — are one-line
//! errors, never the panic that ort's implicit loading would give.

use std::path::Path;

use maxl_core::discovery::{self, DiscoveryError, Located};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    NotFound(#[from] DiscoveryError),
    #[error(
        "cannot load ONNX Runtime from {path} ({origin}): {message}; pass {} <libonnxruntime.so>, set {}, or run scripts/setup.sh",
        discovery::ORT_OPTION,
        discovery::ORT_ENV_VAR
    )]
    Load {
        path: String,
        origin: discovery::Source,
        message: String,
    },
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

/// A loaded ONNX Runtime: where it came from and the ort environment sessions are built in.
pub struct OrtRuntime {
    pub library: Located,
    pub build_info: String,
    pub environment: ort::environment::Environment,
}

impl std::fmt::Debug for OrtRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtRuntime")
            .field("library", &self.library)
            .field("build_info", &self.build_info)
            .finish_non_exhaustive()
    }
}

impl OrtRuntime {
    /// Finds and loads the library. `explicit` is the `--ort-lib` option, if given.
    pub fn load(explicit: Option<&Path>) -> Result<Self, RuntimeError> {
        let library = discovery::locate_ort_library(explicit)?;
        let load_err = |message: String| RuntimeError::Load {
            path: library.path.display().to_string(),
            origin: library.source.clone(),
            message: one_line(message),
        };
        let builder = ort::init_from(&library.path).map_err(|e| load_err(e.to_string()))?;
        let environment = builder
            .with_name("maxl")
            .build()
            .map_err(|e| RuntimeError::Ort(one_line(e)))?;
        let build_info = one_line(ort::info());
        Ok(Self {
            library,
            build_info,
            environment,
        })
    }
}

/// Collapses a multi-line library message into one line.
pub(crate) fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

static SHARED: std::sync::OnceLock<Result<OrtRuntime, String>> = std::sync::OnceLock::new();

/// The process-wide ONNX Runtime (ort allows one environment per process). The first call's
/// `explicit` library wins; a failure is remembered and reported to every caller.
pub fn shared(explicit: Option<&Path>) -> Result<&'static OrtRuntime, RuntimeError> {
    SHARED
        .get_or_init(|| OrtRuntime::load(explicit).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| RuntimeError::Ort(e.clone()))
}
