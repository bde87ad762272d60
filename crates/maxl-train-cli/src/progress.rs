//! The training loop's observer drawn as a progress bar per epoch.

use indicatif::ProgressBar;
use maxl_train::Observer;

/// A bar of each epoch's stage-1 steps (nothing when quiet or stderr is not a terminal).
pub struct EpochBar {
    quiet: bool,
    bar: std::cell::RefCell<ProgressBar>,
}

impl EpochBar {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: std::cell::RefCell::new(ProgressBar::hidden()),
        }
    }
}

impl Observer for EpochBar {
    fn epoch_started(&self, epoch: usize, epochs: usize) {
        let bar = maxl_cli::progress::bar(
            0,
            "epoch {msg} [{bar:30}] {pos}/{len} steps {elapsed_precise} eta {eta}",
            self.quiet,
        );
        bar.set_message(format!("{epoch}/{epochs}"));
        *self.bar.borrow_mut() = bar;
    }

    fn steps(&self, done: usize, total: usize) {
        let bar = self.bar.borrow();
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    /// Cleared before the epoch's log line and checkpoints, so nothing is written over it.
    fn epoch_trained(&self) {
        self.bar.borrow().finish_and_clear();
    }
}
