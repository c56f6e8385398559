//! Progress for long operations (a large import, the reachability matrix, the lab), drawn on
//! stderr only when stderr is a terminal: indicatif hides its bars on anything else, so piped
//! and redirected output, and every test, see exactly the answer and nothing more.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Runs `work` under a spinner that names it and counts the seconds; cleared when it ends.
pub fn spin<T>(message: impl Into<String>, work: impl FnOnce() -> T) -> T {
    let bar = ProgressBar::new_spinner().with_message(message.into());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let out = work();
    bar.finish_and_clear();
    out
}

/// A bar counting `total` steps of `message`; the caller advances it and it clears on drop.
pub struct Steps(ProgressBar);

impl Steps {
    pub fn new(total: usize, message: impl Into<String>) -> Steps {
        let bar = ProgressBar::new(total as u64).with_message(message.into());
        if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({elapsed})")
        {
            bar.set_style(style);
        }
        Steps(bar)
    }

    pub fn set(&self, done: usize) {
        self.0.set_position(done as u64);
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
