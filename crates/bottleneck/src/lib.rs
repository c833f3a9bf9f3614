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
