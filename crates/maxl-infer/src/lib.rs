//! Inference for exported MAXL models through ONNX Runtime (`ort`, loaded dynamically) or
//! pure-Rust `tract`, behind one API ([`MaxlModel`]) that a service shares across threads
//! (`Send + Sync`, every call through `&self`). This crate never links libtorch and compiles no
//! command-line, logging-subscriber or web-server code: those live in `maxl-infer-cli`. Images go
//! through `maxl-preprocess`, the preprocessing training uses.
//!
//! Load the model directory `maxl-train export` wrote (its `maxl.yaml` and ONNX files) and
//! classify an encoded image:
//!
//! ```
//! use std::sync::Arc;
//! use maxl_infer::{Backend, Classify, MaxlModel};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models");
//! let model = Arc::new(MaxlModel::builder(dir).with_backend(Backend::Tract).build()?);
//!
//! // A PNG, as an upload would bring it: 28×28 grey, a bright square on black.
//! let img = image::GrayImage::from_fn(28, 28, |x, y| {
//!     image::Luma([if (8..20).contains(&x) && (4..24).contains(&y) { 220 } else { 0 }])
//! });
//! let mut png = std::io::Cursor::new(Vec::new());
//! img.write_to(&mut png, image::ImageFormat::Png)?;
//!
//! let results = model.classify_encoded(&[png.get_ref()], &Classify::default())?;
//! let class = &results[0].class;
//! assert!(model.manifest().classes.iter().any(|c| c.name == class.name));
//! assert!((0.0..=1.0).contains(&class.probability));
//! // The label generator's auxiliary sub-class of the predicted class, `<class>.<k>`.
//! let aux = results[0].aux.as_ref().expect("the committed model has a label generator");
//! assert!(aux.label.starts_with(&format!("{}.", class.name)));
//! println!("{} ({:.2}), {}", class.name, class.probability, aux.label);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Errors are one type, [`InferError`], whose [`InferError::fault`] tells a service whether to
//! answer 4xx (the caller's input) or 5xx (the model or the runtime).

#![warn(missing_docs)]

mod error;
mod graph;
pub mod model;
mod pool;
pub mod providers;
pub mod runtime;
mod validate;

pub use error::{Fault, InferError};
pub use maxl_preprocess::{DecodeLimits, ImageError, ImageShape};
pub use model::{
    AuxFor, AuxLabel, ClassProbability, Classification, Classify, GeneratedLabels, MaxlModel,
    MaxlModelBuilder, Prediction,
};
pub use providers::{
    Backend, BatchProfile, CudaOptions, ProviderOptions, Providers, TensorRtOptions, ThreadOptions,
};
pub use runtime::{OrtRuntime, RuntimeError};
