//! One error type for everything the library can refuse, with [`InferError::fault`] telling a
//! service whose fault it was: the caller's (a bad image, a label out of range — answer 400), the
//! model's (a manifest that disagrees with its graphs, a corrupt file), or the runtime's (ONNX
//! Runtime missing, a provider that cannot register, a failed run — answer 500).

use std::path::PathBuf;

use maxl_core::manifest::ManifestError;
use maxl_data::preprocess::ImageError;

use crate::runtime::RuntimeError;

/// Whose fault an [`InferError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request: a bad image or array, an unknown class, a label out of range.
    Caller,
    /// The model directory: its manifest, its files or its graphs.
    Model,
    /// ONNX Runtime or tract, or the execution provider.
    Runtime,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// An image that could not be turned into model pixels; `what` names it (a path, a request).
    #[error("{what}: {source}")]
    Image {
        what: String,
        #[source]
        source: ImageError,
    },
    /// An input array or label list the model cannot take.
    #[error("{0}")]
    Input(String),
    #[error("unknown class `{name}` (the model's classes: {known})")]
    UnknownClass { name: String, known: String },
    #[error("this model has no label generator (it was trained with method `{0}`)")]
    NoGenerator(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest and a graph disagree; `field` is the manifest field.
    #[error("{}: {field}: {message}", manifest.display())]
    Mismatch {
        manifest: PathBuf,
        field: &'static str,
        message: String,
    },
    /// A model file a backend cannot load.
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{backend}: cannot register the {provider} execution provider: {message}")]
    Provider {
        backend: &'static str,
        provider: &'static str,
        message: String,
    },
    #[error("{backend}: {message}")]
    Run {
        backend: &'static str,
        message: String,
    },
}

impl InferError {
    pub fn fault(&self) -> Fault {
        match self {
            InferError::Image { .. }
            | InferError::Input(_)
            | InferError::UnknownClass { .. }
            | InferError::NoGenerator(_) => Fault::Caller,
            InferError::Manifest(_) | InferError::Mismatch { .. } | InferError::Model { .. } => {
                Fault::Model
            }
            InferError::Runtime(_) | InferError::Provider { .. } | InferError::Run { .. } => {
                Fault::Runtime
            }
        }
    }

    /// True when the request was at fault (a service answers 400), false for the model's or the
    /// runtime's fault (500).
    pub fn is_caller_fault(&self) -> bool {
        self.fault() == Fault::Caller
    }
}
