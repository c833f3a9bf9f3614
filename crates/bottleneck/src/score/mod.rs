//! From reconstructions to decisions: anomaly maps, image scores and calibrated thresholds.

pub mod calibration;
pub mod maps;

pub use calibration::{Calibration, ThresholdRule};
pub use maps::{Loss, Reduction};
