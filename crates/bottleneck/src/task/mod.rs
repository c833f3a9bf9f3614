//! The jobs users run, each composed from data, model, training and scoring.

pub mod detect;

pub use detect::{DetectParams, Detector, EvalReport};
