//! One shape of API for every model kind, in memory, in scikit-learn's and PyOD's words:
//! detectors are fitted on normal data (`fit_images`, `fit_table`, `fit_clips`; `fit` takes
//! a path), then [`AnomalyDetector::score`] gives a [`Verdict`] per sample and
//! [`Encode::encode`] the bottleneck codes; denoisers and the table imputer are
//! [`Transformer`]s. The CLI, the service and the Python package all call these.

use std::path::Path;

use image::DynamicImage;
use ndarray::Array2;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::audio::Audio;
use crate::data::planes::Planes;
use crate::data::table::Table;
use crate::error::{Error, Result};
use crate::model::file::TrainingSummary;
use crate::score::Calibration;
use crate::task::{AudioDenoiser, AudioDetector, Denoiser, Detector, TableModel};

/// The verdict on one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    /// Higher is more anomalous (PyOD's decision score).
    pub score: f32,
    /// Conformal p-value against the held-out normal samples: the share of them scoring at
    /// least as high, counting the sample itself (for a cross-conformal ensemble, each
    /// network's out-of-fold samples against its own score of this one).
    pub p_value: f64,
    /// Whether the p-value is at most the calibrated rate: for one network, whether the
    /// score is above the calibrated threshold.
    pub is_anomaly: bool,
}

impl Calibration {
    /// The verdict on `score`.
    pub fn verdict(&self, score: f32) -> Verdict {
        Verdict {
            score,
            p_value: self.p_value(score),
            is_anomaly: self.is_anomaly(score),
        }
    }

    /// The verdict on a sample scored `networks` (one score per network, see
    /// [`Calibration::members`]): the score is their mean, the p-value cross-conformal.
    pub fn verdict_of(&self, networks: &[f32]) -> Verdict {
        Verdict {
            score: networks.iter().sum::<f32>() / networks.len() as f32,
            p_value: self.p_value_of(networks),
            is_anomaly: self.is_anomaly_of(networks),
        }
    }
}

/// An anomaly detector trained on normal data.
pub trait AnomalyDetector {
    /// What one call scores: images, a table (owned or borrowed, hence the lifetime),
    /// recordings.
    type Input<'a>: ?Sized;

    /// The verdict on each sample of `input`, in order. Fails naming the sample when one
    /// cannot be scored (a row of missing cells, a silent recording).
    fn score(&self, input: &Self::Input<'_>) -> Result<Vec<Verdict>>;

    /// The calibrated threshold and the held-out scores behind the p-values.
    fn calibration(&self) -> &Calibration;

    /// What training did.
    fn training(&self) -> &TrainingSummary;

    /// Writes the model file, atomically; `bottleneck score` reads it.
    fn save(&self, path: &Path) -> Result<()>;
}

/// A model with a bottleneck: each sample's code, for search, clustering or features.
pub trait Encode {
    type Input<'a>: ?Sized;

    /// The codes of `input`'s samples, `samples x latent`.
    fn encode(&self, input: &Self::Input<'_>) -> Result<Array2<f32>>;
}

/// A model that maps data to data of the same kind: denoising, filling missing cells.
pub trait Transformer {
    type Input<'a>: ?Sized;
    type Output;

    fn transform(&self, input: &Self::Input<'_>) -> Result<Self::Output>;
}

/// Images per forward pass when scoring or encoding in memory.
const IMAGE_BATCH: usize = 32;
/// Table rows per forward pass.
const TABLE_ROWS: usize = 4096;

impl AnomalyDetector for Detector {
    type Input<'a> = [DynamicImage];

    fn score(&self, images: &[DynamicImage]) -> Result<Vec<Verdict>> {
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(IMAGE_BATCH) {
            out.extend(self.score_images(chunk).0);
        }
        Ok(out)
    }

    fn calibration(&self) -> &Calibration {
        &self.meta().calibration
    }

    fn training(&self) -> &TrainingSummary {
        &self.meta().training
    }

    fn save(&self, path: &Path) -> Result<()> {
        Detector::save(self, path)
    }
}

impl Encode for Detector {
    type Input<'a> = [DynamicImage];

    fn encode(&self, images: &[DynamicImage]) -> Result<Array2<f32>> {
        let latent = self.meta().spec.latent;
        self.check_codes()?;
        let mut codes = Vec::with_capacity(images.len() * latent);
        for chunk in images.chunks(IMAGE_BATCH) {
            codes.extend(self.encode_inputs(self.tensorize_images(chunk), chunk.len()));
        }
        Ok(Array2::from_shape_vec((images.len(), latent), codes).expect("latent codes per image"))
    }
}

impl Detector {
    /// The network inputs of `images`, concatenated.
    fn tensorize_images(&self, images: &[DynamicImage]) -> Vec<f32> {
        self.meta().prep.tensorize_all(images.par_iter())
    }
}

impl AnomalyDetector for TableModel {
    type Input<'a> = Table<'a>;

    fn score(&self, table: &Table<'_>) -> Result<Vec<Verdict>> {
        let values = table.features(&self.meta().prep.features)?;
        Ok(self.verdicts_chunked(values.as_slice().expect("row-major features")))
    }

    fn calibration(&self) -> &Calibration {
        &self.meta().calibration
    }

    fn training(&self) -> &TrainingSummary {
        &self.meta().training
    }

    fn save(&self, path: &Path) -> Result<()> {
        TableModel::save(self, path)
    }
}

impl Encode for TableModel {
    type Input<'a> = Table<'a>;

    fn encode(&self, table: &Table<'_>) -> Result<Array2<f32>> {
        let values = table.features(&self.meta().prep.features)?;
        let (d, latent) = (self.meta().spec.features, self.meta().spec.latent);
        let mut codes = Vec::with_capacity(values.nrows() * latent);
        for chunk in values
            .as_slice()
            .expect("row-major features")
            .chunks(TABLE_ROWS * d)
        {
            codes.extend(self.encode_values(chunk));
        }
        Ok(Array2::from_shape_vec((values.nrows(), latent), codes).expect("latent codes per row"))
    }
}

/// Filling missing cells: the table back with every missing cell of the model's features
/// filled (observed cells unchanged), `rows x features` in the model's column order.
impl Transformer for TableModel {
    type Input<'a> = Table<'a>;
    type Output = Array2<f32>;

    fn transform(&self, table: &Table<'_>) -> Result<Array2<f32>> {
        let values = table.features(&self.meta().prep.features)?;
        let d = self.meta().spec.features;
        let mut filled = Vec::with_capacity(values.len());
        for chunk in values
            .as_slice()
            .expect("row-major features")
            .chunks(TABLE_ROWS * d)
        {
            filled.extend(self.impute_values(chunk));
        }
        Ok(Array2::from_shape_vec((values.nrows(), d), filled).expect("features per row"))
    }
}

impl AnomalyDetector for AudioDetector {
    type Input<'a> = [Audio];

    fn score(&self, recordings: &[Audio]) -> Result<Vec<Verdict>> {
        recordings
            .iter()
            .enumerate()
            .map(|(i, audio)| {
                let scored = self.score_audio(Path::new("recording"), audio)?;
                match scored.result {
                    Ok(clip) => Ok(Verdict {
                        score: clip.score,
                        p_value: clip.p_value,
                        is_anomaly: clip.is_anomaly,
                    }),
                    Err(why) => Err(Error::Invalid(format!(
                        "recording {i}: {why}; it cannot be scored"
                    ))),
                }
            })
            .collect()
    }

    fn calibration(&self) -> &Calibration {
        &self.meta().calibration
    }

    fn training(&self) -> &TrainingSummary {
        &self.meta().training
    }

    fn save(&self, path: &Path) -> Result<()> {
        AudioDetector::save(self, path)
    }
}

/// Denoising images: each image cleaned at its own size, in its own channels.
impl Transformer for Denoiser {
    type Input<'a> = [DynamicImage];
    type Output = Vec<DynamicImage>;

    fn transform(&self, images: &[DynamicImage]) -> Result<Vec<DynamicImage>> {
        Ok(images
            .iter()
            .map(|img| {
                let planes = Planes::from_image(img);
                planes.to_image(&self.denoise_planes(&planes))
            })
            .collect())
    }
}

/// Denoising recordings: each cleaned at its own rate and length, channel by channel.
impl Transformer for AudioDenoiser {
    type Input<'a> = [Audio];
    type Output = Vec<Audio>;

    fn transform(&self, recordings: &[Audio]) -> Result<Vec<Audio>> {
        recordings.iter().map(|a| self.denoise_audio(a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SENSORS, sensor_rows};
    use crate::model::file::ModelKind;
    use crate::progress::Silent;
    use crate::task::{DetectParams, Model, TableParams};
    use crate::testing::scratch;
    use burn::prelude::Device;
    use image::{GrayImage, Luma};

    fn sensor_table(n: usize, faulty: bool, seed: u64) -> Table<'static> {
        let rows = sensor_rows(n, faulty, seed);
        let values: Vec<f32> = rows.iter().flat_map(|(r, _)| r.iter().copied()).collect();
        Table::new(
            SENSORS.iter().map(|s| s.to_string()).collect(),
            Array2::from_shape_vec((n, SENSORS.len()), values).unwrap(),
        )
        .unwrap()
    }

    /// The same rows as CSV, shortest round-trip text so they parse to the same `f32`s.
    fn write_csv(path: &Path, table: &Table<'_>) {
        let mut text = table.columns().join(",");
        text.push('\n');
        for row in table.values().rows() {
            let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_table_in_memory_trains_the_model_its_file_trains_and_scores_it_alike() {
        let dir = scratch("api-table");
        let normal = sensor_table(300, false, 1);
        let csv = dir.join("normal.csv");
        write_csv(&csv, &normal);
        let params = TableParams {
            epochs: Some(40),
            ..TableParams::default()
        };
        let device = Device::flex();
        let from_memory = TableModel::fit_table(&normal, &params, &device, &Silent).unwrap();
        let from_file = TableModel::fit(&csv, &params, &device, &Silent).unwrap();
        let (mut a, mut b) = (from_memory.meta().clone(), from_file.meta().clone());
        a.training.seconds = 0.0;
        b.training.seconds = 0.0;
        assert_eq!(a, b, "fit in memory and fit on the file differ");

        // Scores in memory are the scores `score` writes for the same rows, and the columns
        // are found by name whatever their order.
        let test = sensor_table(40, true, 2);
        let verdicts = from_memory.score(&test).unwrap();
        let test_csv = dir.join("test.csv");
        write_csv(&test_csv, &test);
        let out = dir.join("scores.csv");
        from_file
            .score_file(&test_csv, &out, 0, false, &Silent, |_| Ok(()))
            .unwrap();
        let written: Vec<(f32, f64, bool)> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3] == "1")
            })
            .collect();
        let in_memory: Vec<(f32, f64, bool)> = verdicts
            .iter()
            .map(|v| (v.score, v.p_value, v.is_anomaly))
            .collect();
        assert_eq!(in_memory, written);
        let reversed: Vec<String> = test.columns().iter().rev().cloned().collect();
        let mut values = test.values().to_owned();
        values.invert_axis(ndarray::Axis(1));
        let shuffled = Table::new(reversed, values).unwrap();
        assert_eq!(from_memory.score(&shuffled).unwrap(), verdicts);
        // Faulty rows rank above normal ones, and p-values follow the calibration.
        let normal_scores = from_memory.score(&sensor_table(40, false, 3)).unwrap();
        let all: Vec<f32> = normal_scores
            .iter()
            .chain(&verdicts)
            .map(|v| v.score)
            .collect();
        let labels: Vec<bool> = (0..80).map(|i| i >= 40).collect();
        let auroc = crate::metrics::auroc(&all, &labels).unwrap();
        assert!(auroc > 0.9, "AUROC {auroc}");
        // (300 rows: a cross-conformal ensemble, which flags by p-value.)
        let cal = from_memory.calibration();
        assert_eq!(cal.members(), crate::task::table::DEFAULT_FOLDS);
        for v in &verdicts {
            assert_eq!(v.is_anomaly, v.p_value <= cal.effective_fpr, "{v:?}");
        }

        // Codes and filled cells come back one row per row.
        assert_eq!(
            from_memory.encode(&test).unwrap().dim(),
            (40, from_memory.meta().spec.latent)
        );
        let mut gappy = test.values().to_owned();
        gappy[[3, 2]] = f32::NAN;
        let filled = from_memory
            .transform(&Table::new(test.columns().to_vec(), gappy.clone()).unwrap())
            .unwrap();
        assert!(filled[[3, 2]].is_finite());
        assert_eq!(filled[[3, 1]], gappy[[3, 1]]);

        // A bad row is named by its number and column, a missing column by its name.
        gappy[[5, 4]] = f32::INFINITY;
        let err = from_memory
            .score(&Table::new(test.columns().to_vec(), gappy).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 6") && err.contains(SENSORS[4]), "{err}");
        let narrow = Table::new(
            test.columns()[1..].to_vec(),
            test.values().slice(ndarray::s![.., 1..]).to_owned(),
        )
        .unwrap();
        let err = from_memory.score(&narrow).unwrap_err().to_string();
        assert!(err.contains(SENSORS[0]), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn part(phase: u32, defect: bool) -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(16, 16, |x, y| {
            let v = 128.0 + 80.0 * ((x + phase) as f32 * 0.6).sin();
            let spot = defect && (6..10).contains(&x) && (6..10).contains(&y);
            Luma([if spot { 255 } else { v as u8 }])
        }))
    }

    #[test]
    fn images_in_memory_train_the_model_their_files_train_and_load_as_any_model() {
        let dir = scratch("api-images");
        let good: Vec<DynamicImage> = (0..24).map(|i| part(i % 7, false)).collect();
        for (i, img) in good.iter().enumerate() {
            img.save(dir.join(format!("{i:02}.png"))).unwrap();
        }
        let params = DetectParams {
            epochs: Some(2),
            width: Some(8),
            knn: Some(3),
            ..DetectParams::default()
        };
        let device = Device::flex();
        let from_memory = Detector::fit_images(&good, &params, &device, &Silent).unwrap();
        let from_files = Detector::fit(&dir, &params, &device, &Silent).unwrap();
        let (mut a, mut b) = (from_memory.meta().clone(), from_files.meta().clone());
        a.training.seconds = 0.0;
        b.training.seconds = 0.0;
        assert_eq!(a, b, "fit in memory and fit on the files differ");

        let file = dir.join("m.safetensors");
        from_memory.save(&file).unwrap();
        let model = Model::load(&file, &device).unwrap();
        assert_eq!(model.kind(), ModelKind::ImageDetector);
        let Model::ImageDetector(loaded) = model else {
            unreachable!()
        };
        let new = [part(3, false), part(3, true)];
        let verdicts = loaded.score(&new).unwrap();
        assert_eq!(verdicts, from_memory.score(&new).unwrap());
        assert_eq!(loaded.encode(&new).unwrap().dim(), (2, a.spec.latent));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_of_an_unknown_kind_is_refused_by_name() {
        let dir = scratch("api-kinds");
        let path = dir.join("video.safetensors");
        let data = vec![0u8; 8];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
        let meta = std::collections::HashMap::from([(
            crate::model::file::META_KEY.to_string(),
            r#"{"format_version": 1, "kind": "video", "task": "detect"}"#.to_string(),
        )]);
        std::fs::write(
            &path,
            safetensors::serialize([("w", view)], Some(meta)).unwrap(),
        )
        .unwrap();
        let err = Model::load(&path, &Device::flex())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown model kind 'video'"), "{err}");
        assert!(err.contains("video.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
