//! bottleneck: autoencoders trained on normal data and put to work.

pub mod data;
pub mod device;
pub mod error;
pub mod io;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod report;
pub mod score;
pub mod task;
pub mod train;

pub use error::{Error, Result};

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// An empty folder for one test, `bn-<name>-<pid>` in the temporary folder. Unit tests
    /// run at once in one process: each names its folder after its module and itself.
    pub fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
