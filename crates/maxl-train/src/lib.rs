//! maxl-train: trains MAXL's multi-task network f(θ1) and label generator g(θ2) with the exact
//! second-order meta-gradient, and the baselines MAXL is judged against, on libtorch via tch.

pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod export;
pub mod files;
pub mod forward_ad;
pub mod loss;
pub mod meta;
pub mod net;
pub mod optim;
pub mod plots;
pub mod resident;
pub mod results;
pub mod run;
pub mod runner;
mod shim;
pub mod train;

pub use train::{EpochMetrics, Trainer};

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
    #[error(transparent)]
    Config(#[from] maxl_core::ConfigError),
    #[error(transparent)]
    Data(#[from] maxl_data::DataError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    Output { path: String, message: String },
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
        TrainError::Torch(e.to_string().lines().next().unwrap_or("").to_string())
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
