//! maxl-train: trains MAXL's multi-task network f(θ1) and label generator g(θ2) with the exact
//! second-order meta-gradient, and the baselines MAXL is judged against, on libtorch via tch.
//!
//! The entry points are [`train`], [`resume`], [`Outcome::export`] / [`export_checkpoint`],
//! [`compare()`] and [`results()`] ([`api`]); progress reaches the caller through an
//! [`Observer`]. Where things live: [`trainer`] (one epoch of the five methods), [`meta`] (the
//! two MAXL stages and the exact meta-gradient), [`epoch_loop`] (a run from start or checkpoint
//! to its summary), [`run_dir`] (the run directory), [`checkpoint`] and [`run_files`] (what
//! checkpoints hold on disk), [`export`] (ONNX), [`compare`](mod@compare) and
//! [`results`](mod@results) (experiments).
//!
//! ```
//! use maxl_core::TrainConfig;
//! use maxl_train::{RunOptions, TrainError};
//!
//! // A config a user can write but that cannot run: a CIFAR-10 run needs its files.
//! let config: TrainConfig = serde_yaml_ng::from_str("dataset: { kind: cifar10 }").unwrap();
//! let out = std::env::temp_dir().join(format!("maxl-doc-refused-run-{}", std::process::id()));
//! let Err(err) = maxl_train::train(&config, &out, &RunOptions::default()) else {
//!     panic!("a CIFAR-10 config without its files must be refused");
//! };
//! assert!(matches!(err, TrainError::Invalid(_)), "{err}");
//! assert!(!out.exists(), "nothing is written for a refused config");
//! ```

//!
//! A program that links this library links libtorch: like this crate's own `build.rs`, its build
//! script should embed libtorch's library directory as an rpath (torch-sys exports it as
//! `DEP_TCH_LIBTORCH_LIB`) and, for CUDA, keep `libtorch_cuda` linked with `-Wl,--no-as-needed
//! -ltorch_cuda -ltorch -Wl,--as-needed` — without it libtorch sees no GPU. `crates/maxl-train-cli/build.rs`
//! is such a script.

#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod dist;
pub mod epoch_loop;
pub mod export;
pub mod forward_ad;
pub mod init_from;
pub mod loss;
pub mod meta;
pub mod net;
pub mod optim;
pub mod plots;
pub mod resident;
pub mod results;
pub mod run_dir;
pub mod run_files;
mod shim;
pub mod trainer;

pub use api::{
    DeviceRequest, RunOptions, compare, default_experiment_dir, export_checkpoint, results, resume,
    train,
};
pub use epoch_loop::{Observer, Outcome, Silent, Start};
pub use trainer::{EpochMetrics, Trainer};

/// The first line of an error message (libtorch's carry a backtrace after it).
pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Keeps the memory libtorch frees inside the process. A training step allocates and frees the
/// same large activation and gradient buffers every iteration; with glibc's defaults those above
/// its (adaptive) mmap threshold are mapped and unmapped each time, and freed heap tops are
/// trimmed, so every step pays page faults to get zeroed pages back from the kernel (5–8 % of the
/// cycles of a MAXL iteration in a profile of the small preset on the CPU). Blocks up to 32 MiB
/// now come from the heap, and up to 1 GiB of freed heap stays mapped. Call once, at the start
/// of a process that trains. Whether the allocator took both settings (false off glibc).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Why training could not run. One line each.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config file could not be read or does not parse.
    #[error(transparent)]
    Config(#[from] maxl_core::ConfigError),
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] maxl_data::DataError),
    /// A config, experiment or request that cannot run, and why.
    #[error("{0}")]
    Invalid(String),
    /// A file or directory the run reads or writes.
    #[error("{path}: {message}")]
    Output {
        /// The file or directory.
        path: String,
        /// What went wrong with it.
        message: String,
    },
    /// A data-parallel run lost a rank, timed out, or its ranks disagree.
    #[error("{0}")]
    Distributed(String),
    /// libtorch refused an operation (its message's first line).
    #[error("libtorch: {0}")]
    Torch(String),
}

impl TrainError {
    /// An error about a file or directory the run reads or writes: `<path>: <message>`.
    pub fn output(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        TrainError::Output {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl From<maxl_core::fsio::WriteError> for TrainError {
    fn from(e: maxl_core::fsio::WriteError) -> Self {
        TrainError::output(&e.path, format!("cannot write: {}", e.source))
    }
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(first_line(&e.to_string()).to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_allocator_settings() {
        assert!(super::keep_freed_memory());
    }
}
