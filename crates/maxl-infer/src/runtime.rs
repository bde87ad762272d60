//! Loading the ONNX Runtime shared library.
//!
//! ort runs in `load-dynamic` mode: the library is found by [`maxl_core::discovery`] (option,
//! `ORT_DYLIB_PATH`, or the set-up env file) and loaded once per process. Loading failures —
//! a missing file, a file that is not a shared library, a too-old ONNX Runtime — are one-line
//! errors, never the panic that ort's implicit loading would give.
//!
//! ONNX Runtime allows one environment per process, so what is set here is process-wide: the
//! library that is loaded and whether sessions share one global intra-op thread pool. The first
//! model loaded in a process decides both; later loads that ask for something else get the
//! environment that exists (and a warning in the log).

use std::path::Path;

use maxl_core::discovery::{self, DiscoveryError, Located};

/// Why ONNX Runtime could not be loaded. One line, saying how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No library was found, or the one named does not exist.
    #[error(transparent)]
    NotFound(#[from] DiscoveryError),
    /// The library exists but cannot be loaded (not a shared library, too old an ONNX Runtime).
    #[error(
        "cannot load ONNX Runtime from {path} ({origin}): {message}; pass {} <libonnxruntime.so>, set {}, or run scripts/setup.sh",
        discovery::ORT_OPTION,
        discovery::ORT_ENV_VAR
    )]
    Load {
        /// The library file.
        path: String,
        /// Where its path came from (the option, the variable or the set-up env file).
        origin: discovery::Source,
        /// The loader's reason, on one line.
        message: String,
    },
    /// ONNX Runtime loaded but its environment could not be built.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

/// A loaded ONNX Runtime: where it came from and the ort environment sessions are built in.
pub struct OrtRuntime {
    /// The library loaded, and how it was found.
    pub library: Located,
    /// ONNX Runtime's build information (version, git commit), on one line.
    pub build_info: String,
    /// The process-wide ort environment.
    pub environment: ort::environment::Environment,
    /// The global intra-op pool's size, when sessions share one.
    pub global_threads: Option<usize>,
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
    /// Finds and loads the library. `explicit` is the `--ort-lib` option, if given;
    /// `global_threads`, when given, makes every session share one intra-op pool of that many
    /// threads (0: ONNX Runtime's default, one per core) instead of one pool per session.
    pub fn load(
        explicit: Option<&Path>,
        global_threads: Option<usize>,
    ) -> Result<Self, RuntimeError> {
        let library = discovery::locate_ort_library(explicit)?;
        let load_err = |message: String| RuntimeError::Load {
            path: library.path.display().to_string(),
            origin: library.source.clone(),
            message: one_line(message),
        };
        let builder = ort::init_from(&library.path).map_err(|e| load_err(e.to_string()))?;
        let mut builder = builder.with_name("maxl");
        if let Some(n) = global_threads {
            let pool = ort::environment::GlobalThreadPoolOptions::default()
                .with_intra_threads(n)
                .and_then(|p| p.with_spin_control(false))
                .map_err(|e| RuntimeError::Ort(one_line(e)))?;
            builder = builder.with_global_thread_pool(pool);
        }
        let environment = builder
            .build()
            .map_err(|e| RuntimeError::Ort(one_line(e)))?;
        let build_info = one_line(ort::info());
        Ok(Self {
            library,
            build_info,
            environment,
            global_threads,
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
/// library and thread-pool choice win; a failure is remembered and reported to every caller.
pub fn shared(
    explicit: Option<&Path>,
    global_threads: Option<usize>,
) -> Result<&'static OrtRuntime, RuntimeError> {
    let rt = SHARED
        .get_or_init(|| OrtRuntime::load(explicit, global_threads).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| RuntimeError::Ort(e.clone()))?;
    if let Some(p) = explicit
        && p != rt.library.path
    {
        tracing::warn!(
            "ONNX Runtime is already loaded from {}; {} is not loaded (one library per process)",
            rt.library.path.display(),
            p.display()
        );
    }
    if rt.global_threads != global_threads {
        tracing::warn!(
            "the ONNX Runtime environment exists with global thread pool {:?}; {:?} is ignored (process-wide)",
            rt.global_threads,
            global_threads
        );
    }
    Ok(rt)
}
