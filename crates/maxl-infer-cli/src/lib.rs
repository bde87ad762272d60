//! The command-line and server side of maxl inference: the model arguments `maxl-infer` and
//! `maxl-label` share ([`args::ModelArgs`]), the output records and their CSV/JSON form
//! ([`record`]), batched prediction over files ([`predict`]), the HTTP model server
//! ([`server`]) and the benchmark ([`bench`]). The inference library itself is `maxl-infer`,
//! which a service embeds without any of this.

pub mod args;
pub mod bench;
pub mod predict;
pub mod record;
pub mod server;
