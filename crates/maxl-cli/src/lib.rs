//! What the three maxl command-line tools (`maxl-train`, `maxl-infer`, `maxl-label`) share, so
//! that each binary holds only its own commands:
//!
//! - [`logging`]: `tracing` on stderr, plain text unless stderr is a terminal, `NO_COLOR`
//!   honoured;
//! - [`choice()`]: the command-line parser of every named enumeration ([`maxl_core::Choice`]);
//! - [`progress`]: the progress bars the libraries' observers drive;
//! - [`bench`](mod@bench): the one benchmark harness — a process per case, interleaved
//!   repeats, one median definition, spread, peak RSS, a table or JSON lines.

#![warn(missing_docs)]

pub mod bench;
pub mod choice;
pub mod logging;
pub mod progress;

pub use choice::choice;
