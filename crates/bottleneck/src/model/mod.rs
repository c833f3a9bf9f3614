//! Model definitions and the model file.

pub mod bf16;
pub mod check;
pub mod conv;
pub mod denoise;
pub mod dense;
pub mod dense_kernels;
pub mod file;
pub mod kernels;
pub mod segment;
pub mod spec;

pub use conv::ConvAutoencoder;
pub use denoise::{DenoiseNet, DenoiseSpec};
pub use dense::{DenseAutoencoder, DenseSpec};
pub use segment::{Head, SegmentNet, SegmentSpec};
pub use spec::ConvSpec;
