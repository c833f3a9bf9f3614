//! Any model, loaded from its file in one read: the one place that turns a file's kind into
//! the type that serves it. Everything that takes "a model file" (the CLI's subcommands,
//! the service, reports, catalogues, the Python package) starts here and matches
//! [`Model`] exhaustively.

use std::path::Path;

use burn::prelude::Device;

use crate::error::{Error, Result};
use crate::model::file::{self, ModelKind, TrainingSummary};
use crate::task::{AudioDenoiser, AudioDetector, Denoiser, Detector, TableModel};

/// A trained model of any kind.
pub enum Model {
    ImageDetector(Box<Detector>),
    ImageDenoiser(Box<Denoiser>),
    TableDetector(Box<TableModel>),
    AudioDetector(Box<AudioDetector>),
    AudioDenoiser(Box<AudioDenoiser>),
}

impl Model {
    /// Loads the model file at `path` onto `device`, whatever its kind. The file is read
    /// once. Fails naming the file when it is missing, not a model, of a format version
    /// this build does not read, of a kind it does not know, or inconsistent.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_bytes(path, file::read_model_bytes(path)?, device)
    }

    /// Loads a model from its file's `bytes` (named `path` in errors) onto `device`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        Ok(match ModelKind::of_bytes(path, &bytes)? {
            ModelKind::ImageDetector => {
                Model::ImageDetector(Box::new(Detector::from_bytes(path, bytes, device)?))
            }
            ModelKind::ImageDenoiser => {
                Model::ImageDenoiser(Box::new(Denoiser::from_bytes(path, bytes, device)?))
            }
            ModelKind::TableDetector => {
                Model::TableDetector(Box::new(TableModel::from_bytes(path, bytes, device)?))
            }
            ModelKind::AudioDetector => {
                Model::AudioDetector(Box::new(AudioDetector::from_bytes(path, bytes, device)?))
            }
            ModelKind::AudioDenoiser => {
                Model::AudioDenoiser(Box::new(AudioDenoiser::from_bytes(path, bytes, device)?))
            }
        })
    }

    /// What kind of model this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            Model::ImageDetector(_) => ModelKind::ImageDetector,
            Model::ImageDenoiser(_) => ModelKind::ImageDenoiser,
            Model::TableDetector(_) => ModelKind::TableDetector,
            Model::AudioDetector(_) => ModelKind::AudioDetector,
            Model::AudioDenoiser(_) => ModelKind::AudioDenoiser,
        }
    }

    /// Writes the model file to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        match self {
            Model::ImageDetector(m) => m.save(path),
            Model::ImageDenoiser(m) => m.save(path),
            Model::TableDetector(m) => m.save(path),
            Model::AudioDetector(m) => m.save(path),
            Model::AudioDenoiser(m) => m.save(path),
        }
    }

    /// What training did.
    pub fn training(&self) -> &TrainingSummary {
        match self {
            Model::ImageDetector(m) => &m.meta().training,
            Model::ImageDenoiser(m) => &m.meta().training,
            Model::TableDetector(m) => &m.meta().training,
            Model::AudioDetector(m) => &m.meta().training,
            Model::AudioDenoiser(m) => &m.meta().training,
        }
    }

    /// The model's metadata as the file stores it (JSON), for `GET /v1/model` and reports.
    pub fn meta_json(&self) -> serde_json::Value {
        let value = match self {
            Model::ImageDetector(m) => serde_json::to_value(m.meta()),
            Model::ImageDenoiser(m) => serde_json::to_value(m.meta()),
            Model::TableDetector(m) => serde_json::to_value(m.meta()),
            Model::AudioDetector(m) => serde_json::to_value(m.meta()),
            Model::AudioDenoiser(m) => serde_json::to_value(m.meta()),
        };
        value.expect("model metadata is plain data")
    }

    /// The error to give when this model is handed to a job that needs `expected`.
    pub fn wrong_kind(&self, path: &Path, expected: ModelKind) -> Error {
        file::wrong_kind(path, self.kind(), expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::file::{DataKind, Task};

    #[test]
    fn every_kind_is_its_parts_and_back() {
        for kind in ModelKind::ALL {
            assert_eq!(ModelKind::from_parts(kind.data(), kind.task()), Some(kind));
        }
        assert_eq!(ModelKind::from_parts(DataKind::Table, Task::Denoise), None);
    }
}
