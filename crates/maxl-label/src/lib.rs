//! Labelling a dataset with an exported label generator: every image gets the auxiliary
//! sub-class MAXL's label generator assigns it among its primary class's ψ slots.
//!
//! - [`input`]: the work list (class folders, `<coarse>/<fine>` folders, any folder with the
//!   class predicted, or a CSV list), sorted by relative path, problems included.
//! - [`run`]: the streaming, resumable, shardable labelling run.
//! - [`output`]: the label and errors CSV columns.
//! - [`report`]: counts read back from a finished CSV; [`gallery`]: contact sheets of them.
//! - [`merge`]: shards back into one file; [`bench`]: the end-to-end benchmark.

use std::path::PathBuf;

use maxl_infer::InferError;

pub mod bench;
pub mod gallery;
pub mod input;
pub mod merge;
pub mod output;
pub mod report;
pub mod run;
pub mod state;

/// Why a labelling run stopped. One line each, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{}: cannot resume: {message}", path.display())]
    Resume { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error(transparent)]
    Data(#[from] maxl_data::DataError),
    #[error(transparent)]
    Write(#[from] maxl_core::fsio::WriteError),
}
