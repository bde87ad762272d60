//! Inference for exported MAXL models through ONNX Runtime (`ort`, loaded dynamically) or
//! pure-Rust `tract`. This crate never links libtorch.

pub mod runtime;

pub use runtime::{OrtRuntime, RuntimeError};
