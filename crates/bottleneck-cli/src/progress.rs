//! Progress bars on stderr (indicatif), silenced by `--quiet`.

use std::sync::Mutex;

use bottleneck::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar per stage; warnings and notes printed above it.
pub struct Bars {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: Mutex::new(None),
        }
    }

    /// A line for the user on stderr (kept off stdout so JSON output stays clean).
    pub fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}

impl Progress for Bars {
    fn stage(&self, label: &str, total: u64) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        *self.bar.lock().expect("bar lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().expect("bar lock").as_ref() {
            b.inc(n);
        }
    }

    fn status(&self, message: &str) {
        if let Some(b) = self.bar.lock().expect("bar lock").as_ref() {
            b.set_message(message.to_string());
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("bar lock").take() {
            b.finish();
        }
    }

    fn warn(&self, message: &str) {
        if self.quiet {
            return;
        }
        match self.bar.lock().expect("bar lock").as_ref() {
            // A hidden bar (stderr not a terminal: logs, CI, cron) prints nothing, so the
            // warning goes straight to stderr there.
            Some(b) if !b.is_hidden() => b.println(format!("warning: {message}")),
            _ => eprintln!("warning: {message}"),
        }
    }
}
