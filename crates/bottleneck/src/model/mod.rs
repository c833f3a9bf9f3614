//! Model definitions and the model file.

pub mod conv;
pub mod file;
pub mod spec;

pub use conv::ConvAutoencoder;
pub use spec::ConvSpec;
