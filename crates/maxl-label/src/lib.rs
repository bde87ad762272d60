//! Labelling a dataset with an exported label generator: every image gets the auxiliary
//! sub-class MAXL's label generator assigns it among its primary class's ψ slots. This is the
//! library behind the `maxl-label` command (crate `maxl-label-cli`) for scripts and services;
//! it holds no command-line, logging or progress-bar code.
//!
//! - [`label`] with a [`LabelRequest`]: the streaming, resumable, shardable labelling run,
//!   reporting to an [`Observer`]; [`input`]: its work list, sorted by relative path, problems
//!   included; [`run`]: its files and crash safety; [`state`]: the job file.
//! - [`output`]: the label and errors CSV columns.
//! - [`report`]: counts read back from a finished CSV; [`gallery`]: contact sheets of them.
//! - [`merge`](mod@merge): shards back into one file; [`synthetic`]: generated datasets (the
//!   benchmark's, and this example's).
//!
//! Errors are [`LabelError`]s, one line each naming the file; no input makes the run panic.
//!
//! ```
//! use maxl_infer::{Backend, MaxlModel};
//! use maxl_label::synthetic::{self, Case};
//! use maxl_label::{LabelRequest, label};
//!
//! let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models");
//! let model = MaxlModel::builder(models).with_backend(Backend::Tract).build()?;
//! let classes: Vec<String> = model.manifest().classes.iter().map(|c| c.name.clone()).collect();
//! let tmp = tempfile::tempdir()?;
//! // 20 small grey PNGs in class folders, two per class.
//! let images = synthetic::generate(tmp.path(), Case::Png28, 20, &classes)?;
//! let out = tmp.path().join("labels.csv");
//! let request = LabelRequest { jobs: 2, probs: true, ..LabelRequest::new(&images, &out) };
//! let outcome = label(&model, &request, &mut ())?;
//! assert_eq!(outcome.job.counts.labelled, 20);
//! assert_eq!(outcome.job.counts.skipped, 0);
//! let csv = std::fs::read_to_string(&out)?;
//! assert!(csv.starts_with("path,class,class_source,class_probability,aux_slot,aux_label,aux_probability,aux_distribution\n"));
//! assert_eq!(csv.lines().count(), 21);
//!
//! // The same request again is refused: the CSV exists.
//! assert!(matches!(label(&model, &request, &mut ()), Err(maxl_label::LabelError::Exists { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use std::path::PathBuf;

use maxl_infer::InferError;

pub mod gallery;
pub mod input;
pub mod merge;
pub mod output;
mod partial;
pub mod report;
mod request;
pub mod run;
pub mod state;
pub mod synthetic;

pub use input::{Input, Primary};
pub use merge::{MergeRequest, Merged, merge};
pub use request::{LabelRequest, MAX_JOBS, label};
pub use run::{Observer, Outcome};
pub use state::Shard;

/// Why a labelling run (or a merge, a report, a gallery) stopped. One line each, naming the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file is not what it should be (an input without images, a shard of another job…).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An interrupted run cannot be resumed (or is in the way of a new one).
    #[error("{}: cannot resume: {message}", path.display())]
    Resume {
        /// The job file.
        path: PathBuf,
        /// Why not.
        message: String,
    },
    /// An output exists and the request does not allow replacing it.
    #[error(
        "{}: exists; pass --force to replace it (or --resume to continue an interrupted run)",
        path.display()
    )]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// A request or a model that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The model failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The input could not be listed.
    #[error(transparent)]
    Data(#[from] maxl_data::DataError),
    /// An output could not be written whole.
    #[error(transparent)]
    Write(#[from] maxl_core::fsio::WriteError),
}
