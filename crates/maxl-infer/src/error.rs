//! One error type for everything the library can refuse, with [`InferError::fault`] telling a
//! service whose fault it was: the caller's (a bad image, a label out of range — answer 400), the
//! model's (a manifest that disagrees with its graphs, a corrupt file), or the runtime's (ONNX
//! Runtime missing, a provider that cannot register, a failed run — answer 500).

use std::path::PathBuf;

use maxl_core::manifest::ManifestError;
use maxl_preprocess::ImageError;

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

/// Everything loading or running a model can refuse, as one line. [`InferError::fault`] says
/// whose fault it was; each variant's documentation says the same.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// An image that could not be turned into model pixels (the caller's fault).
    #[error("{what}: {source}")]
    Image {
        /// Which image: a path, `image 3` of a batch, or a name the caller gave.
        what: String,
        /// Why it could not be read, decoded or converted.
        #[source]
        source: ImageError,
    },
    /// An input array or label list the model cannot take (the caller's fault).
    #[error("{0}")]
    Input(String),
    /// A class name the model does not know (the caller's fault).
    #[error("unknown class `{name}` (the model's classes: {known})")]
    UnknownClass {
        /// The name asked for.
        name: String,
        /// The model's class names, comma-separated.
        known: String,
    },
    /// Auxiliary labels asked of a model without a label generator (the caller's fault); holds
    /// the training method the model was trained with.
    #[error("this model has no label generator (it was trained with method `{0}`)")]
    NoGenerator(String),
    /// The manifest (`maxl.yaml`) cannot be read, or a model file does not match its hash (the
    /// model's fault).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest and a graph disagree (the model's fault).
    #[error("{}: {field}: {message}", manifest.display())]
    Mismatch {
        /// The manifest file.
        manifest: PathBuf,
        /// The manifest field that disagrees (`classes`, `psi`, `input`, …).
        field: &'static str,
        /// What each side says.
        message: String,
    },
    /// A model file's own metadata (`maxl.*` in its `metadata_props`) says something else than
    /// the manifest (the model's fault).
    #[error("{}: {message}", path.display())]
    Metadata {
        /// The ONNX file.
        path: PathBuf,
        /// The manifest field that differs (`classes`, `psi`, `aux_slots`, `input`).
        field: &'static str,
        /// What each side says.
        message: String,
    },
    /// A model file a backend cannot load (the model's fault).
    #[error("{}: {message}", path.display())]
    Model {
        /// The ONNX file.
        path: PathBuf,
        /// The backend's reason, on one line.
        message: String,
    },
    /// ONNX Runtime cannot be found or loaded (the runtime's fault).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A requested execution provider cannot register, and no fall-back was asked for (the
    /// runtime's fault).
    #[error("{backend}: cannot register the {provider} execution provider: {message}")]
    Provider {
        /// The backend's name (`ort-cuda`, …).
        backend: &'static str,
        /// The provider, as users name it (`CUDA`, `TensorRT`).
        provider: &'static str,
        /// ONNX Runtime's reason, on one line.
        message: String,
    },
    /// A graph failed to run or returned something unexpected (the runtime's fault).
    #[error("{backend}: {message}")]
    Run {
        /// The backend's name.
        backend: &'static str,
        /// The engine's reason, on one line.
        message: String,
    },
}

impl InferError {
    /// Whose fault the error is: the caller's, the model's or the runtime's.
    pub fn fault(&self) -> Fault {
        match self {
            InferError::Image { .. }
            | InferError::Input(_)
            | InferError::UnknownClass { .. }
            | InferError::NoGenerator(_) => Fault::Caller,
            InferError::Manifest(_)
            | InferError::Mismatch { .. }
            | InferError::Metadata { .. }
            | InferError::Model { .. } => Fault::Model,
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
