//! Inference for exported MAXL models through ONNX Runtime (`ort`, loaded dynamically) or
//! pure-Rust `tract`, behind one API ([`MaxlModel`]). This crate never links libtorch.

pub mod model;
pub mod runtime;

pub use model::{Backend, GeneratedLabels, InferError, MaxlModel, ModelArgs, Prediction};
pub use runtime::{OrtRuntime, RuntimeError};
