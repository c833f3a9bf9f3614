//! Progress on stderr, silenced by `--quiet`: bars (indicatif) on a terminal, and plain
//! timestamped lines where stderr is a log (a file, CI, cron), where a bar would show
//! nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottleneck::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Least time between two plain progress lines of one stage.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// One bar per stage; warnings and notes printed above it.
pub struct Bars {
    quiet: bool,
    stage: Mutex<Option<Stage>>,
}

/// The stage in progress: its bar (hidden off a terminal, where it still holds its label
/// and status, counts steps and estimates the time left) and, for plain lines, when the
/// last line was written.
struct Stage {
    bar: ProgressBar,
    printed: Instant,
}

impl Stage {
    /// The plain line for this stage: `label: pos/len`, then the time taken when it is done
    /// or the time so far and the estimate left once it has started, then its status.
    fn line(&self, done: bool) -> String {
        let elapsed = self.bar.elapsed().as_secs_f64();
        let pos = self.bar.position();
        let len = self.bar.length().unwrap_or(pos);
        let mut line = format!("{}: {pos}/{len}", self.bar.prefix());
        if done || pos >= len {
            line += &format!(", done in {elapsed:.1} s");
        } else if pos > 0 {
            let eta = indicatif::HumanDuration(self.bar.eta());
            line += &format!(", {elapsed:.0} s, eta {eta}");
        }
        let status = self.bar.message();
        if !status.is_empty() {
            line += &format!(", {status}");
        }
        line
    }

    /// Writes the plain line when stderr is not a terminal and the last one is old enough.
    fn log(&mut self, force: bool) {
        if self.bar.is_hidden() && (force || self.printed.elapsed() >= LINE_EVERY) {
            eprintln!("{}", self.line(false));
            self.printed = Instant::now();
        }
    }
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            stage: Mutex::new(None),
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
        let mut stage = Stage {
            bar,
            printed: Instant::now(),
        };
        stage.log(true);
        *self.stage.lock().expect("bar lock") = Some(stage);
    }

    fn advance(&self, n: u64) {
        if let Some(s) = self.stage.lock().expect("bar lock").as_mut() {
            s.bar.inc(n);
            s.log(false);
        }
    }

    fn status(&self, message: &str) {
        if self.quiet {
            return;
        }
        match self.stage.lock().expect("bar lock").as_mut() {
            Some(s) => {
                s.bar.set_message(message.to_string());
                s.log(false);
            }
            // Between stages (which network of several comes next) it is a line of its own.
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(s) = self.stage.lock().expect("bar lock").take() {
            s.bar.finish();
            if s.bar.is_hidden() {
                eprintln!("{}", s.line(true));
            }
        }
    }

    fn warn(&self, message: &str) {
        if self.quiet {
            return;
        }
        match self.stage.lock().expect("bar lock").as_ref() {
            // A hidden bar (stderr not a terminal: logs, CI, cron) prints nothing, so the
            // warning goes straight to stderr there.
            Some(s) if !s.bar.is_hidden() => s.bar.println(format!("warning: {message}")),
            _ => eprintln!("warning: {message}"),
        }
    }
}
