//! Logging set-up of the command-line tools: `tracing` events on stderr at a default level
//! unless `RUST_LOG` says otherwise, coloured only when stderr is a terminal and `NO_COLOR` is
//! unset (a redirected log is plain text).

use std::io::IsTerminal;

/// Whether log lines get ANSI colours: stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>).
pub fn use_colour() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// Logs to stderr through `tracing`, at `default` (e.g. `info`, `error`) unless `RUST_LOG` is
/// set.
pub fn init(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(use_colour())
        .with_target(false)
        .init();
}
