//! Core types of maxl shared by training, export, inference and labelling.
//!
//! Nothing here links a native library: the hierarchy ψ, the YAML configuration, the one
//! architecture description from which every network is built (by tch for training and by the
//! ONNX exporter for deployment), and the logic that finds the ONNX Runtime library.

#![warn(missing_docs)]

pub mod arch;
pub mod choice;
pub mod config;
pub mod csv;
pub mod discovery;
pub mod fsio;
pub mod hierarchy;
pub mod manifest;

pub use arch::{Architecture, ConvBlock, InputSpec, ParamKind, ParamSpec};
pub use choice::Choice;
pub use config::{ConfigError, Method, Schedule, TrainConfig};
pub use hierarchy::{Hierarchy, HierarchyError};
