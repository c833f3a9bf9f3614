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
