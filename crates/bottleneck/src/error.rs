//! The library's one error type: every variant names the file (and where it helps, the field)
//! so a user can act on the message without a backtrace.

use std::path::PathBuf;

/// Errors from loading data, training, scoring and model files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded.
    #[error("{}: cannot decode image: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A folder that should hold images holds none.
    #[error("{}: no images found (looked for .png, .jpg, .jpeg, .bmp, .tif, .tiff)", path.display())]
    NoImages { path: PathBuf },
    /// A path given by the user does not exist.
    #[error("{}: no such file or folder", path.display())]
    Missing { path: PathBuf },
    /// A file that is not a bottleneck model, or is damaged.
    #[error("{}: not a bottleneck model file: {reason}", path.display())]
    ModelFile { path: PathBuf, reason: String },
    /// A model file written by another format version.
    #[error(
        "{}: model file format version {found}, this build reads version {expected}; retrain the model with this version",
        path.display()
    )]
    FormatVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// A model file of another kind than the job needs (a denoiser given to `score`).
    #[error("{}: {found}{hint}, this needs {expected}", path.display())]
    WrongKind {
        path: PathBuf,
        found: crate::model::file::ModelKind,
        expected: crate::model::file::ModelKind,
        hint: &'static str,
    },
    /// A setting that cannot work, named by its field in the params struct (the CLI names
    /// its flag instead).
    #[error("{field} {reason}")]
    Param { field: &'static str, reason: String },
    /// A setting or argument that cannot work.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn param(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Param {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with the library's error type.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs `f`, turning a panic inside it into `Err` without the panic message on stderr: for
/// dependencies that panic on bad input or missing hardware (hnsw_rs on a damaged graph,
/// the Vulkan backend without an adapter), whose panics become our errors. The panic hook
/// is process-wide, so other threads' panic messages are muted meanwhile too.
pub(crate) fn catch_quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    outcome
}
