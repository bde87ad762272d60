//! Progress bars, drawn on stderr only when it is a terminal and the user did not ask for
//! quiet: a redirected run's log holds no bar frames.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps with the indicatif `template` (bar characters `=> `), hidden when
/// `quiet` or when stderr is not a terminal.
pub fn bar(len: u64, template: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
