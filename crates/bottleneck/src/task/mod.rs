//! The jobs users run, each composed from data, model, training and scoring.

pub mod audio_denoise;
pub mod denoise;
pub mod detect;
pub mod encode;
pub mod search;
pub mod sound;
pub mod table;

pub use audio_denoise::{AudioDenoiseParams, AudioDenoiser, AudioNoise};
pub use denoise::{DenoiseParams, Denoiser};
pub use detect::{DetectParams, Detector, EvalReport};
pub use encode::encode_to_file;
pub use search::{Catalogue, Hit};
pub use sound::{AudioDetector, AudioParams};
pub use table::{TableModel, TableParams};
