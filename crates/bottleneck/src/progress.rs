//! Progress reporting from long work, without tying the library to a terminal. The binary
//! draws bars; tests and the service pass [`Silent`].

/// Receives progress from long-running work. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// A new stage of `total` units begins.
    fn stage(&self, _label: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A status line for the current stage (e.g. epoch and loss).
    fn status(&self, _message: &str) {}
    /// The current stage is over.
    fn finish(&self) {}
    /// Something the user should know that does not stop the work.
    fn warn(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// The progress of one of several runs that share a stage (an ensemble's networks trained
/// side by side): the caller opens the stage with every run's steps and closes it; each
/// run's own stages only count into it, its status lines name the run, and a run that ends
/// before its last step (stopping early) counts its remaining steps as done, so the shared
/// bar ends full.
pub(crate) struct Member<'a> {
    outer: &'a dyn Progress,
    /// Which run this is (from 0) and of how many.
    index: usize,
    of: usize,
    /// Steps of the run's current stage, and those done.
    total: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
}

impl<'a> Member<'a> {
    pub(crate) fn new(outer: &'a dyn Progress, index: usize, of: usize) -> Self {
        Self {
            outer,
            index,
            of,
            total: 0.into(),
            done: 0.into(),
        }
    }

    fn named(&self, message: &str) -> String {
        format!("network {}/{}: {message}", self.index + 1, self.of)
    }
}

impl Progress for Member<'_> {
    fn stage(&self, _label: &str, total: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.total.store(total, Relaxed);
        self.done.store(0, Relaxed);
    }

    fn advance(&self, n: u64) {
        self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.outer.advance(n);
    }

    fn status(&self, message: &str) {
        self.outer.status(&self.named(message));
    }

    fn finish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let left = self
            .total
            .swap(0, Relaxed)
            .saturating_sub(self.done.swap(0, Relaxed));
        if left > 0 {
            self.outer.advance(left);
        }
    }

    fn warn(&self, message: &str) {
        self.outer.warn(&self.named(message));
    }
}
