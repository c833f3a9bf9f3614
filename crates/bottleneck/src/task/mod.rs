//! The jobs users run, each composed from data, model, training and scoring.

pub mod detect;
pub mod encode;
pub mod table;

pub use detect::{DetectParams, Detector, EvalReport};
pub use encode::encode_to_file;
pub use table::{TableModel, TableParams};
