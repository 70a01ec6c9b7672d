//! The first scan's progress bar on the terminal.

use crate::cli::logging;
use crate::library::scan::ScanProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A progress bar on stderr (files done / found, files/s, ETA).
///
/// It draws only when stderr is a terminal: under systemd, in CI or with
/// stderr redirected to a file, indicatif's draw target is hidden and the
/// bar costs an atomic add per file, so logs stay free of bar fragments.
#[derive(Debug)]
pub struct TerminalProgress {
    bar: ProgressBar,
}

impl TerminalProgress {
    /// A bar on stderr, hidden unless stderr is a terminal. Log lines go
    /// above it while it is shown ([`logging::set_progress_bar`]).
    pub fn new() -> TerminalProgress {
        let progress = TerminalProgress::with_target(ProgressDrawTarget::stderr());
        logging::set_progress_bar(&progress.bar);
        progress
    }

    /// A bar drawing to `target` (tests use a hidden one).
    pub fn with_target(target: ProgressDrawTarget) -> TerminalProgress {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let style = ProgressStyle::with_template(
            "{spinner} scanning {human_pos}/{human_len} files  {rate}  ETA {eta}  {wide_bar}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                // indicatif's own {per_sec} prints four decimals.
                let _ = write!(w, "{:.0} files/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        bar.set_style(style);
        TerminalProgress { bar }
    }
}

impl Default for TerminalProgress {
    fn default() -> TerminalProgress {
        TerminalProgress::new()
    }
}

impl ScanProgress for TerminalProgress {
    fn discovered(&self, n: u64) {
        self.bar.inc_length(n);
    }
    fn scanned(&self, n: u64) {
        self.bar.inc(n);
    }
    fn finish(&self) {
        logging::clear_progress_bar();
        self.bar.finish_and_clear();
    }
}
