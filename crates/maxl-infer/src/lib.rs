//! Inference for exported MAXL models through ONNX Runtime (`ort`, loaded dynamically) or
//! pure-Rust `tract`, behind one API ([`MaxlModel`]) that a service shares across threads
//! (`Send + Sync`, every call through `&self`). This crate never links libtorch and compiles no
//! command-line, logging-subscriber or web-server code: those live in `maxl-infer-cli`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use maxl_infer::{Backend, Classify, MaxlModel};
//!
//! let model = Arc::new(MaxlModel::builder("models").with_backend(Backend::Tract).build()?);
//! let bytes = std::fs::read("shoe.png")?;
//! let result = model.classify_encoded(&[&bytes], &Classify::default())?;
//! println!("{} {:?}", result[0].class.name, result[0].aux);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod graph;
pub mod model;
mod pool;
pub mod providers;
pub mod runtime;
mod validate;

pub use error::{Fault, InferError};
pub use maxl_data::preprocess::{DecodeLimits, ImageError, ImageShape};
pub use model::{
    AuxFor, AuxLabel, ClassProbability, Classification, Classify, GeneratedLabels, MaxlModel,
    MaxlModelBuilder, Prediction,
};
pub use providers::{
    Backend, BatchProfile, CudaOptions, ProviderOptions, Providers, TensorRtOptions, ThreadOptions,
};
pub use runtime::{OrtRuntime, RuntimeError};
