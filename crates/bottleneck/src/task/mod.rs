//! The jobs users run, each composed from data, model, training and scoring.

pub mod api;
pub mod audio_denoise;
pub mod denoise;
pub mod detect;
pub mod encode;
pub mod model;
pub mod search;
pub mod sound;
pub mod table;

pub use api::{AnomalyDetector, Encode, Transformer, Verdict};
pub use audio_denoise::{AudioDenoiseParams, AudioDenoiser, AudioNoise};
pub use denoise::{DenoiseParams, Denoiser};
pub use detect::{DetectParams, Detector, EvalReport};
pub use encode::encode_to_file;
pub use model::Model;
pub use search::{Catalogue, Hit};
pub use sound::{AudioDetector, AudioParams};
pub use table::{TableModel, TableParams};
