//! The command-line and server side of maxl inference: the model arguments `maxl-infer` and
//! `maxl-label` share ([`args::ModelArgs`]), the output records and their CSV/JSON form
//! ([`record`]), batched prediction over files ([`predict`]), the HTTP model server
//! ([`server`]), the benchmark ([`bench`]) and the ONNX Runtime report ([`runtime`]). The
//! inference library itself is `maxl-infer`, which a service embeds without any of this.
//!
//! Each `maxl-infer` command's clap arguments and driver (`run`) live in the module named for
//! it: `predict`, `server` (for `serve`), `bench` and `runtime`.

pub mod args;
pub mod bench;
pub mod predict;
pub mod record;
pub mod runtime;
pub mod server;
