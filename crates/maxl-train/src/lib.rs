//! maxl-train: trains MAXL's multi-task network f(θ1) and label generator g(θ2) with the exact
//! second-order meta-gradient, and the baselines MAXL is judged against, on libtorch via tch.

pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod data;
pub mod export;
pub mod forward_ad;
pub mod loss;
pub mod meta;
pub mod net;
pub mod optim;
pub mod plots;
pub mod results;
pub mod run;
pub mod runner;
pub mod train;

pub use train::{EpochMetrics, Trainer};

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
