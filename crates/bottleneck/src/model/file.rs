//! The model file: safetensors weights plus, under the metadata key `bottleneck`, everything
//! scoring needs (spec, preprocessing, scoring settings, calibration, training summary).
//! Its `kind` says what the model reads: `images` (a [`ModelMeta`] or [`DenoiseMeta`]),
//! `table` (a [`TableMeta`]) or `audio` (an [`AudioMeta`] or [`AudioDenoiseMeta`]).

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::data::images::ImagePrep;
use crate::data::scaling::{Scaling, TablePrep};
use crate::data::spectral::MelSpec;
use crate::error::{Error, Result};
use crate::model::check::CheckMeta;
use crate::model::{
    ConvAutoencoder, ConvSpec, DenoiseNet, DenoiseSpec, DenseAutoencoder, DenseSpec, SegmentNet,
    SegmentSpec,
};
use crate::score::{Calibration, Loss, Reduction};

/// Version of the metadata layout; a file with another version is refused with a message.
pub const FORMAT_VERSION: u32 = 1;
/// Format version of image detectors that read in tiles (`prep.tiles`): binaries from
/// before tiles refuse them by version instead of scoring whole images with tile statistics.
pub const TILED_FORMAT_VERSION: u32 = 2;
/// Format version of whole-image detectors whose nearest-neighbour part joins the map score
/// by [`KnnJoin::LogSumExp`]: binaries that only know the larger-of-the-two join refuse
/// them by version instead of scoring them against calibration scores of another join.
pub const KNN_JOIN_FORMAT_VERSION: u32 = 3;
/// Metadata key holding [`ModelMeta`] as JSON.
pub const META_KEY: &str = "bottleneck";
/// Metadata key holding the CRC-32 of the bottleneck metadata, the tensor layout and the
/// weights, written on save and checked on load (files without it are only validated), so
/// that a file changed after it was written is named as such.
pub const CHECKSUM_KEY: &str = "bottleneck_crc32";

/// How maps become scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSettings {
    pub loss: Loss,
    /// Gaussian smoothing of the map, in pixels of the model's input.
    pub smoothing_sigma: f32,
    pub reduction: Reduction,
    /// Map value drawn at full red in heatmaps (the largest value seen on calibration images).
    pub map_scale: f32,
    /// The first (or only) network's statistics.
    #[serde(flatten)]
    pub network: NetworkScoring,
    /// The statistics of each further network of a cross-conformal ensemble, in fold order
    /// after `network`'s; empty for one network (and in files from before ensembles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<NetworkScoring>,
}

impl ScoreSettings {
    /// Every network's statistics, in fold order.
    pub fn networks(&self) -> impl Iterator<Item = &NetworkScoring> {
        std::iter::once(&self.network).chain(&self.ensemble)
    }

    /// Network `j`'s statistics (fold order); panics past the last network.
    pub fn network_at(&self, j: usize) -> &NetworkScoring {
        match j {
            0 => &self.network,
            _ => &self.ensemble[j - 1],
        }
    }

    /// Network `j`'s statistics, to fill in while fitting.
    pub(crate) fn network_mut(&mut self, j: usize) -> &mut NetworkScoring {
        match j {
            0 => &mut self.network,
            _ => &mut self.ensemble[j - 1],
        }
    }
}

/// What one network of an image detector scores with, measured on the images it trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkScoring {
    /// Per-pixel mean and spread of the smoothed error on the training images: maps are
    /// standardised with them, so pixels that are always hard to rebuild (edges, texture)
    /// do not drown a real defect elsewhere. Empty when standardisation is off.
    #[serde(default)]
    pub pixel_mean: Vec<f32>,
    #[serde(default)]
    pub pixel_std: Vec<f32>,
    /// Distance to the training images in the bottleneck, added to the map score.
    #[serde(default)]
    pub knn: Option<KnnScore>,
    /// How a discriminative head's map joins the reconstruction error's, when the model has
    /// a head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadJoin>,
    /// A tiled model's statistics over positions in the image, when its training images
    /// share one size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<PositionStats>,
}

/// Where in the image a tiled model's map runs high on good images. `pixel_mean` and
/// `pixel_std` standardise by position in a tile; on registered images (a fixed camera
/// over one product) the same feature sits at the same place in every image, so the spots
/// that are always hard to rebuild are places in the image, not in a tile. The image is cut
/// into a grid of cells (`width x height`, mapped in proportion to the image's size); each
/// cell has the mean and spread of its largest map value over the training images, and a
/// map is standardised cell by cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionStats {
    pub width: usize,
    pub height: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl PositionStats {
    /// The cell of pixel `(x, y)` in a `w x h` map.
    fn cell(&self, x: usize, y: usize, w: usize, h: usize) -> usize {
        let cx = (x * self.width / w).min(self.width - 1);
        let cy = (y * self.height / h).min(self.height - 1);
        cy * self.width + cx
    }

    /// Each cell's largest value of the `w x h` `map`.
    pub fn cell_max(&self, map: &[f32], w: usize, h: usize) -> Vec<f32> {
        let mut out = vec![f32::MIN; self.width * self.height];
        for y in 0..h {
            for x in 0..w {
                let c = self.cell(x, y, w, h);
                out[c] = out[c].max(map[y * w + x]);
            }
        }
        out
    }

    /// Standardises the `w x h` `map` in place, each pixel by its cell's statistics.
    pub fn standardise(&self, map: &mut [f32], w: usize, h: usize) {
        for y in 0..h {
            for x in 0..w {
                let c = self.cell(x, y, w, h);
                let v = &mut map[y * w + x];
                *v = (*v - self.mean[c]) / self.std[c];
            }
        }
    }
}

/// A model with a discriminative head draws two maps: the (standardised) reconstruction
/// error and the head's anomaly probability. Each is put on the scale of its image scores
/// over the training images (centre and spread), and the map is their larger value at each
/// pixel: the head finds what it was trained to (additions, small bridges), the error what
/// it was not (missing parts, faint stains).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadJoin {
    pub error_center: f32,
    pub error_spread: f32,
    pub head_center: f32,
    pub head_spread: f32,
}

/// The latent nearest-neighbour part of the score: the mean distance from an image's code
/// to its `k` nearest training codes. Both parts are put on one scale by their centre and
/// spread over the training images, and `join` makes one score of the two: small local
/// defects show in the map, images unlike any training image in the bottleneck.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnScore {
    pub k: usize,
    /// Number of training codes stored in the file (tensor `train_codes`).
    pub codes: usize,
    pub map_center: f32,
    pub map_spread: f32,
    pub knn_center: f32,
    pub knn_spread: f32,
    /// Files from before the field joined by the larger of the two parts.
    #[serde(default = "KnnJoin::before_field")]
    pub join: KnnJoin,
}

/// How the standardised map score and nearest-neighbour distance become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnnJoin {
    /// The larger of the two.
    Max,
    /// `ln(e^map + e^knn)`: the larger of the two when they are far apart (a defect only
    /// one part sees keeps its score), up to `ln 2` above it when they agree, so an image
    /// both parts find somewhat unusual ranks above one that only one part does.
    LogSumExp,
}

impl KnnJoin {
    fn before_field() -> Self {
        Self::Max
    }

    /// The score of standardised parts `map` and `knn`.
    pub fn of(self, map: f32, knn: f32) -> f32 {
        let larger = map.max(knn);
        match self {
            Self::Max => larger,
            // Written around the larger part so that nothing overflows.
            Self::LogSumExp => larger + (-(map - knn).abs()).exp().ln_1p(),
        }
    }
}

impl ModelMeta {
    /// The format version a detector with this metadata is written as, from what it holds:
    /// tiles ([`TILED_FORMAT_VERSION`]), a log-sum-exp join of its latent part
    /// ([`KNN_JOIN_FORMAT_VERSION`]) or neither ([`FORMAT_VERSION`]). Training sets it and
    /// loading checks it with this one rule.
    pub fn required_format_version(&self) -> u32 {
        let join = self
            .scoring
            .networks()
            .find_map(|n| n.knn.as_ref())
            .map(|k| k.join);
        match (&self.prep.tiles, join) {
            (Some(_), _) => TILED_FORMAT_VERSION,
            (None, Some(KnnJoin::LogSumExp)) => KNN_JOIN_FORMAT_VERSION,
            (None, _) => FORMAT_VERSION,
        }
    }
}

/// What the weights part of the file holds: the network and, when the score uses them, the
/// bottleneck codes of the training images.
#[derive(Module, Debug)]
pub struct DetectorWeights {
    pub autoencoder: ConvAutoencoder,
    pub train_codes: Option<Param<Tensor<2>>>,
    /// The other networks of a cross-conformal ensemble, in fold order after the first;
    /// empty for one network (and in files from before ensembles).
    pub ensemble: Vec<NetworkWeights>,
    /// The first network's discriminative head, when the model has one.
    pub head: Option<SegmentNet>,
}

/// One further network of an image detector's ensemble and its training codes.
#[derive(Module, Debug)]
pub struct NetworkWeights {
    pub autoencoder: ConvAutoencoder,
    pub train_codes: Option<Param<Tensor<2>>>,
    pub head: Option<SegmentNet>,
}

/// What training did, for reports and `GET /v1/model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Images or rows trained on.
    #[serde(alias = "train_images")]
    pub train_samples: usize,
    /// Images or rows held out to calibrate the threshold.
    #[serde(alias = "calibration_images")]
    pub calibration_samples: usize,
    /// Unreadable images or bad rows left out under `--skip-bad`.
    #[serde(alias = "skipped_images")]
    pub skipped_samples: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Mean training loss per epoch.
    pub loss_curve: Vec<f32>,
    pub seconds: f64,
    /// Samples held out of training to stop it when their loss stopped improving (0: the
    /// run took all its epochs).
    #[serde(default)]
    pub validation_samples: usize,
    /// Their loss after each epoch.
    #[serde(default)]
    pub validation_curve: Vec<f32>,
    /// The epoch whose weights were kept (0 in files written before early stopping).
    #[serde(default)]
    pub best_epoch: usize,
    /// Whether the latent nearest-neighbour part was kept, and the measurement that
    /// decided it (image detectors given no `knn`; absent otherwise and in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_check: Option<LatentCheck>,
}

/// Does the latent distance see defects? Training images are scored clean (each left out
/// of its own neighbours) and with a synthetic defect drawn in (the same generator as the
/// discriminative head's); the part is kept when the distance ranks the defective
/// versions above the clean ones better than chance, by a one-sided test at 1%.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentCheck {
    /// Clean training images scored.
    pub clean: usize,
    /// Versions of them with a synthetic defect.
    pub defective: usize,
    /// AUROC of the latent distance, defective against clean.
    pub auroc: f64,
    /// The AUROC that keeps the part: 0.5 plus 2.326 standard errors of the AUROC of a
    /// part that sees nothing (Mann-Whitney, `sqrt((n1 + n2 + 1) / (12 n1 n2))`).
    pub bar: f64,
    pub kept: bool,
}

impl LatentCheck {
    /// One-sided normal quantile at 1%.
    const Z: f64 = 2.326;

    /// The verdict on an AUROC measured over `clean` and `defective` samples.
    pub fn new(clean: usize, defective: usize, auroc: f64) -> Self {
        let bar = Self::bar(clean, defective);
        Self {
            clean,
            defective,
            auroc,
            bar,
            kept: auroc >= bar,
        }
    }

    /// One sentence for people: what was measured and what it decided.
    pub fn describe(&self) -> String {
        let measured = format!(
            "the latent distance ranks {} training images with a synthetic defect against \
             {} clean at AUROC {:.3} (chance 0.5, {:.3} needed)",
            self.defective, self.clean, self.auroc, self.bar
        );
        match self.kept {
            true => format!("{measured}: kept in the score"),
            false => format!("{measured}: left out, the map alone scores"),
        }
    }

    /// The AUROC a part must reach over these counts to be kept (1 when either is 0).
    pub fn bar(clean: usize, defective: usize) -> f64 {
        if clean == 0 || defective == 0 {
            return 1.0;
        }
        let (a, b) = (clean as f64, defective as f64);
        (0.5 + Self::Z * ((a + b + 1.0) / (12.0 * a * b)).sqrt()).min(1.0)
    }
}

impl TrainingSummary {
    /// The summary of a run logged as `log` with these settings; `seconds` is set by the
    /// caller once the whole fit is done.
    pub fn from_log(
        log: crate::train::TrainLog,
        calibration_samples: usize,
        skipped_samples: usize,
        batch_size: usize,
        learning_rate: f64,
        seed: u64,
    ) -> Self {
        Self {
            train_samples: log.train_samples,
            calibration_samples,
            skipped_samples,
            epochs: log.epochs_run,
            batch_size,
            learning_rate,
            seed,
            loss_curve: log.loss_curve,
            seconds: 0.0,
            validation_samples: log.validation_samples,
            validation_curve: log.validation_curve,
            best_epoch: log.best_epoch,
            latent_check: None,
        }
    }
}

/// Everything in the model file besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub format_version: u32,
    /// What the model reads: `images` (files from before tables had no `kind`).
    #[serde(default = "images_kind")]
    pub kind: DataKind,
    /// What the model is for: `detect`.
    pub task: Task,
    pub spec: ConvSpec,
    /// Each network's discriminative head, when its map joins the reconstruction error's
    /// (absent in files from before heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<SegmentSpec>,
    pub prep: ImagePrep,
    pub scoring: ScoreSettings,
    pub calibration: Calibration,
    pub training: TrainingSummary,
}

fn images_kind() -> DataKind {
    DataKind::Images
}

/// What a model reads: the file's `kind`, written as `images`, `table` or `audio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Images,
    Table,
    Audio,
}

/// What a model is for: the file's `task`, written as `detect` or `denoise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Detect,
    Denoise,
}

impl DataKind {
    /// The name written in model files.
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Images => "images",
            DataKind::Table => "table",
            DataKind::Audio => "audio",
        }
    }
}

impl Task {
    /// The name written in model files.
    pub fn name(self) -> &'static str {
        match self {
            Task::Detect => "detect",
            Task::Denoise => "denoise",
        }
    }
}

/// Every kind of model a file can hold. Code that handles models matches this exhaustively,
/// so a new kind is a compile error wherever it must be handled, never a string that falls
/// into another kind's branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    ImageDetector,
    ImageDenoiser,
    TableDetector,
    AudioDetector,
    AudioDenoiser,
}

impl ModelKind {
    /// Every kind, in the order the manual lists them.
    pub const ALL: [ModelKind; 5] = [
        ModelKind::ImageDetector,
        ModelKind::ImageDenoiser,
        ModelKind::TableDetector,
        ModelKind::AudioDetector,
        ModelKind::AudioDenoiser,
    ];

    /// The kind made of what a file says it reads and is for; `None` for a pair no model
    /// has (a table denoiser).
    pub fn from_parts(data: DataKind, task: Task) -> Option<Self> {
        match (data, task) {
            (DataKind::Images, Task::Detect) => Some(ModelKind::ImageDetector),
            (DataKind::Images, Task::Denoise) => Some(ModelKind::ImageDenoiser),
            (DataKind::Table, Task::Detect) => Some(ModelKind::TableDetector),
            (DataKind::Table, Task::Denoise) => None,
            (DataKind::Audio, Task::Detect) => Some(ModelKind::AudioDetector),
            (DataKind::Audio, Task::Denoise) => Some(ModelKind::AudioDenoiser),
        }
    }

    /// What the model reads.
    pub fn data(self) -> DataKind {
        match self {
            ModelKind::ImageDetector | ModelKind::ImageDenoiser => DataKind::Images,
            ModelKind::TableDetector => DataKind::Table,
            ModelKind::AudioDetector | ModelKind::AudioDenoiser => DataKind::Audio,
        }
    }

    /// What the model is for.
    pub fn task(self) -> Task {
        match self {
            ModelKind::ImageDetector | ModelKind::TableDetector | ModelKind::AudioDetector => {
                Task::Detect
            }
            ModelKind::ImageDenoiser | ModelKind::AudioDenoiser => Task::Denoise,
        }
    }

    /// What the model is, in words (`an image anomaly detector`).
    pub fn describe(self) -> &'static str {
        match self {
            ModelKind::ImageDetector => "an image anomaly detector",
            ModelKind::ImageDenoiser => "an image denoiser",
            ModelKind::TableDetector => "a table model",
            ModelKind::AudioDetector => "an audio anomaly detector",
            ModelKind::AudioDenoiser => "an audio denoiser",
        }
    }

    /// The kind of the model file at `path`.
    pub fn of_file(path: &Path) -> Result<Self> {
        Self::of_bytes(path, &read_bytes(path)?)
    }

    /// The kind of model file `bytes` (named `path` in errors). A file that names a kind or
    /// task this build does not know is refused by name.
    pub fn of_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        kind_in(path, &header_of(path, bytes)?)
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// How a recording becomes the network's inputs: log-mel frames at the model's rate (mono),
/// standardised per band, `context` consecutive frames stacked into one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFeatures {
    pub mel: MelSpec,
    pub context: usize,
    /// Mean and spread of each band's log-mel level (dB) over the training recordings.
    pub band_mean: Vec<f32>,
    pub band_std: Vec<f32>,
}

/// How an audio detector turns frame errors into a recording's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioScoring {
    /// From the errors of the recording's stacked inputs (DCASE: their mean).
    pub reduction: Reduction,
    /// Map value drawn at full red in error images (the largest on calibration recordings).
    pub map_scale: f32,
    /// The second part of the score, when the model has one: errors divided by each band's
    /// mean error on the training recordings, joined with the plain error.
    #[serde(default)]
    pub band_normalized: Option<BandNormalized>,
}

/// A recording's score from two views of its error map: the plain mean error (broadband
/// changes, DCASE's score) and the error of each band divided by that band's mean error on
/// the training recordings (a change where the machine is otherwise predictable, which the
/// noisy bands drown in the plain mean). Each is put on one scale by its centre and spread
/// over the training recordings; the score is the larger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandNormalized {
    pub band_error: Vec<f32>,
    pub plain_center: f32,
    pub plain_spread: f32,
    pub normalized_center: f32,
    pub normalized_spread: f32,
}

/// Everything in an audio anomaly detector's file besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioMeta {
    pub format_version: u32,
    /// `audio`.
    pub kind: DataKind,
    /// `detect`.
    pub task: Task,
    pub spec: DenseSpec,
    pub features: AudioFeatures,
    pub scoring: AudioScoring,
    pub calibration: Calibration,
    pub training: TrainingSummary,
}

/// How an audio denoiser sees a recording: magnitude spectra at the model's rate, each
/// channel on its own, `context` frames stacked per input, log power standardised per bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumFeatures {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop: usize,
    pub context: usize,
    pub bin_mean: Vec<f32>,
    pub bin_std: Vec<f32>,
}

/// How an audio denoiser did on held-out recordings mixed with its training noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioDenoiseValidation {
    pub recordings: usize,
    /// Mean signal-to-noise ratio (dB) of the noisy input and of the output.
    pub snr_noisy: f64,
    pub snr_denoised: f64,
}

/// Everything in an audio denoiser's file besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioDenoiseMeta {
    pub format_version: u32,
    /// `audio`.
    pub kind: DataKind,
    /// `denoise`.
    pub task: Task,
    /// The network: noisy stacked spectra in, a gain (0 to 1) per bin of each frame out.
    pub spec: DenseSpec,
    pub features: SpectrumFeatures,
    /// The noise trained on (`white:0.05`, `mix:DIR`).
    pub noise: String,
    pub validation: Option<AudioDenoiseValidation>,
    pub training: TrainingSummary,
}

/// How a table row's score is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableScore {
    /// Mean squared reconstruction error over the observed cells, in standardised units.
    Reconstruction,
    /// Negative evidence lower bound of a variational model (at the mean code).
    Elbo,
}

/// Scoring settings of a table model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableScoring {
    pub score: TableScore,
    /// Refinement passes of `impute` after the first fill.
    pub impute_iterations: usize,
    /// Share of observed cells hidden from the network during training.
    pub mask_rate: f32,
}

/// Everything in a table model's file besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    pub format_version: u32,
    /// `table`.
    pub kind: DataKind,
    /// What the model is for: `detect`.
    pub task: Task,
    pub spec: DenseSpec,
    /// The columns, and the standardisation of the first (or only) network, fitted on
    /// the rows it trained on.
    pub prep: TablePrep,
    /// The standardisation of each further network of a cross-conformal ensemble, fitted
    /// on the rows it trained on, in fold order after `prep`'s (empty for one network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble_scaling: Vec<Scaling>,
    pub scoring: TableScoring,
    pub calibration: Calibration,
    pub training: TrainingSummary,
}

/// What the weights part of a table or audio model's file holds.
#[derive(Module, Debug)]
pub struct DenseWeights {
    pub autoencoder: DenseAutoencoder,
    /// The other networks of a cross-conformal ensemble, in fold order after
    /// `autoencoder` (fold 0); empty for one network (and in files from before ensembles).
    pub ensemble: Vec<DenseAutoencoder>,
}

impl DenseWeights {
    /// The weights of one network.
    pub fn single(autoencoder: DenseAutoencoder) -> Self {
        Self {
            autoencoder,
            ensemble: Vec::new(),
        }
    }
}

/// How a denoiser did on held-out images (noisy input and its output against the clean
/// image), measured at the end of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiseValidation {
    pub images: usize,
    pub psnr_noisy: f64,
    pub psnr_denoised: f64,
}

/// Everything in a denoiser's file besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiseMeta {
    pub format_version: u32,
    /// `images`.
    pub kind: DataKind,
    /// `denoise`.
    pub task: Task,
    pub spec: DenoiseSpec,
    /// The noise trained on (`gaussian:0.1`, ..., or `pairs` for real noisy/clean pairs).
    pub noise: String,
    pub validation: Option<DenoiseValidation>,
    pub training: TrainingSummary,
}

/// What the weights part of a denoiser's file holds.
#[derive(Module, Debug)]
pub struct DenoiseWeights {
    pub denoiser: DenoiseNet,
}

/// Saves weights and metadata to `path`. The file appears whole or not at all (burn-store
/// writes a scratch sibling and renames it).
pub fn save(path: &Path, weights: &DetectorWeights, meta: &ModelMeta) -> Result<()> {
    save_module(path, weights, meta)
}

/// Saves a table model's weights and metadata to `path`, atomically.
pub fn save_table(path: &Path, weights: &DenseWeights, meta: &TableMeta) -> Result<()> {
    save_module(path, weights, meta)
}

/// Saves a denoiser's weights and metadata to `path`, atomically.
pub fn save_denoiser(path: &Path, weights: &DenoiseWeights, meta: &DenoiseMeta) -> Result<()> {
    save_module(path, weights, meta)
}

/// Saves a dense model's (table or audio) weights and metadata to `path`, atomically.
pub fn save_dense(path: &Path, weights: &DenseWeights, meta: &impl Serialize) -> Result<()> {
    save_module(path, weights, meta)
}

fn save_module<M: Module>(path: &Path, weights: &M, meta: &impl Serialize) -> Result<()> {
    let cannot = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("cannot write: {reason}"),
    };
    let json = serde_json::to_string(meta).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut store = SafetensorsStore::from_bytes(None).metadata(META_KEY, json);
    weights
        .save_into(&mut store)
        .map_err(|e| cannot(e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| cannot(e.to_string()))?;
    let sealed = seal(&bytes, META_KEY).map_err(|e| cannot(e.to_string()))?;
    crate::io::write_bytes_atomic(path, &sealed)
}

/// `bytes` (a safetensors file with JSON metadata under `meta_key`) again with the checksum
/// of that metadata and its tensors under [`CHECKSUM_KEY`].
pub(crate) fn seal(
    bytes: &[u8],
    meta_key: &str,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    let st = safetensors::SafeTensors::deserialize(bytes)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    seal_tensors(st.tensors(), metadata, meta_key)
}

/// The safetensors file of `tensors` and `metadata` with the checksum of the metadata under
/// `meta_key` and the tensors added under [`CHECKSUM_KEY`], serialised once.
fn seal_tensors(
    tensors: Vec<(String, safetensors::tensor::TensorView<'_>)>,
    mut metadata: std::collections::HashMap<String, String>,
    meta_key: &str,
) -> std::result::Result<Vec<u8>, safetensors::SafeTensorError> {
    metadata.remove(CHECKSUM_KEY);
    let json = metadata.get(meta_key).map_or("", String::as_str);
    let views = tensors.iter().map(|(name, v)| (name.as_str(), v));
    let sum = checksum(json, views);
    metadata.insert(CHECKSUM_KEY.to_string(), sum);
    safetensors::serialize(tensors, Some(metadata))
}

/// Fails, saying why, when safetensors file `bytes` has a checksum under [`CHECKSUM_KEY`]
/// that its metadata under `meta_key` and tensors do not give.
pub(crate) fn verify(bytes: &[u8], meta_key: &str) -> std::result::Result<(), String> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let Some(stored) = header.metadata().as_ref().and_then(|m| m.get(CHECKSUM_KEY)) else {
        return Ok(());
    };
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(meta_key))
        .map_or("", String::as_str);
    let actual = checksum(json, st.iter());
    if actual == *stored {
        return Ok(());
    }
    Err(format!(
        "checksum mismatch (stored {stored}, contents give {actual}): the file was damaged \
         or edited after it was written; restore it or make it again"
    ))
}

/// Model file `bytes` with its bottleneck metadata changed by `edit` and sealed again with a
/// fresh checksum: a hand edit that also fixed the checksum. For tests of what loading
/// refuses; a file changed without it fails its checksum.
#[doc(hidden)]
pub fn rewrite_metadata(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<Vec<u8>> {
    let bad = |e: String| Error::Invalid(format!("cannot rewrite model metadata: {e}"));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let mut metadata = header.metadata().clone().unwrap_or_default();
    let json = metadata
        .get(META_KEY)
        .ok_or_else(|| bad("no bottleneck metadata".into()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    edit(&mut value);
    metadata.insert(META_KEY.to_string(), value.to_string());
    seal_tensors(st.tensors(), metadata, META_KEY).map_err(|e| bad(e.to_string()))
}

/// The checksum (CRC-32, hex) of metadata JSON `json` and `tensors`: each one's name,
/// dtype, shape and data, in name order, whatever their layout in the file.
fn checksum<'a, V: safetensors::View + 'a>(
    json: &str,
    tensors: impl Iterator<Item = (&'a str, V)>,
) -> String {
    let mut crc = crc32fast::Hasher::new();
    crc.update(json.as_bytes());
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, view) in tensors {
        crc.update(format!("\n{name}:{:?}:{:?}\n", view.dtype(), view.shape()).as_bytes());
        crc.update(&view.data());
    }
    format!("{:08x}", crc.finalize())
}

/// Reads the metadata of an image model file at `path`; other models are refused by name.
pub fn read_meta(path: &Path) -> Result<(ModelMeta, Vec<u8>)> {
    read_meta_of(path, ModelKind::ImageDetector)
}

/// Reads the metadata of an image denoiser's file at `path`; other models are refused by
/// name.
pub fn read_denoise_meta(path: &Path) -> Result<(DenoiseMeta, Vec<u8>)> {
    read_meta_of(path, ModelKind::ImageDenoiser)
}

/// Reads the metadata of a table model file at `path`; an image model is refused by name.
pub fn read_table_meta(path: &Path) -> Result<(TableMeta, Vec<u8>)> {
    read_meta_of(path, ModelKind::TableDetector)
}

/// Reads the metadata of a model file of `kind` at `path`.
fn read_meta_of<M: serde::de::DeserializeOwned + CheckMeta>(
    path: &Path,
    kind: ModelKind,
) -> Result<(M, Vec<u8>)> {
    parse(path, read_bytes(path)?, kind)
}

/// The kind named by a file's metadata `value`. Files written before tables existed have no
/// `kind` (they are image models) and files written before denoisers no `task` (detectors).
fn kind_in(path: &Path, value: &serde_json::Value) -> Result<ModelKind> {
    let field = |name: &str, default: &str| -> Result<String> {
        match value.get(name) {
            None => Ok(default.to_string()),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(Error::ModelFile {
                path: path.to_path_buf(),
                reason: format!("metadata field '{name}' is {other}, not a name"),
            }),
        }
    };
    let (kind, task) = (field("kind", "images")?, field("task", "detect")?);
    let unknown = |name: &str, text: &str, known: &str| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("unknown model {name} '{text}' (this build knows {known})"),
    };
    let data: DataKind = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .map_err(|_| unknown("kind", &kind, "images, table, audio"))?;
    let t: Task = serde_json::from_value(serde_json::Value::String(task.clone()))
        .map_err(|_| unknown("task", &task, "detect, denoise"))?;
    ModelKind::from_parts(data, t).ok_or_else(|| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("no model reads {kind} for '{task}'"),
    })
}

/// Fails, naming both, unless the file's metadata `value` is of `kind`.
fn check_kind(path: &Path, value: &serde_json::Value, kind: ModelKind) -> Result<()> {
    let found = kind_in(path, value)?;
    if found != kind {
        return Err(wrong_kind(path, found, kind));
    }
    Ok(())
}

/// The error for a model file at `path` of kind `found` given to a job that needs
/// `expected`; a denoiser's message says where it belongs.
pub fn wrong_kind(path: &Path, found: ModelKind, expected: ModelKind) -> Error {
    let hint = match found {
        ModelKind::ImageDenoiser | ModelKind::AudioDenoiser => {
            " (use `bottleneck denoise` with it)"
        }
        ModelKind::ImageDetector | ModelKind::TableDetector | ModelKind::AudioDetector => "",
    };
    Error::WrongKind {
        path: path.to_path_buf(),
        found,
        expected,
        hint,
    }
}

/// The bytes of the file at `path`; a missing file is named as such.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    if !path.exists() {
        return Err(Error::Missing {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The metadata JSON of model file `bytes` (named `path` in errors), after checking its
/// version.
fn header_of(path: &Path, bytes: &[u8]) -> Result<serde_json::Value> {
    let bad = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("safetensors file without bottleneck metadata".into()))?;
    verify(bytes, META_KEY).map_err(bad)?;
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("metadata is not JSON ({e})")))?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("metadata has no format_version".into()))? as u32;
    if ![
        FORMAT_VERSION,
        TILED_FORMAT_VERSION,
        KNN_JOIN_FORMAT_VERSION,
    ]
    .contains(&found)
    {
        return Err(Error::FormatVersion {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        });
    }
    Ok(value)
}

/// Loads the model file at `path` onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<(DetectorWeights, ModelMeta)> {
    load_bytes(path, read_bytes(path)?, device)
}

/// Loads an image detector from the bytes of its model file (named `path` in errors).
pub fn load_bytes(
    path: &Path,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<(DetectorWeights, ModelMeta)> {
    let (meta, bytes): (ModelMeta, _) = parse(path, bytes, ModelKind::ImageDetector)?;
    // `parse` held the weights the networks need to what the file holds.
    let codes = |s: &NetworkScoring| {
        s.knn
            .as_ref()
            .map(|k| Param::from_tensor(Tensor::zeros([k.codes, meta.spec.latent], device)))
    };
    let head = || meta.head.as_ref().map(|h| SegmentNet::new(h, device));
    let model = DetectorWeights {
        autoencoder: ConvAutoencoder::new(&meta.spec, device),
        train_codes: codes(&meta.scoring.network),
        head: head(),
        ensemble: meta
            .scoring
            .ensemble
            .iter()
            .map(|s| NetworkWeights {
                autoencoder: ConvAutoencoder::new(&meta.spec, device),
                train_codes: codes(s),
                head: head(),
            })
            .collect(),
    };
    Ok((fill(path, model, bytes)?, meta))
}

/// Loads a table model file at `path` onto `device`.
pub fn load_table(path: &Path, device: &Device) -> Result<(DenseWeights, TableMeta)> {
    load_table_bytes(path, read_bytes(path)?, device)
}

/// Loads a table model from the bytes of its model file (named `path` in errors).
pub fn load_table_bytes(
    path: &Path,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<(DenseWeights, TableMeta)> {
    load_dense_bytes(
        path,
        bytes,
        ModelKind::TableDetector,
        |m: &TableMeta| &m.spec,
        |m| {
            let d = m.prep.features.len();
            if m.spec.features != d || m.prep.center.len() != d || m.prep.scale.len() != d {
                return Err(format!("{d} features but a network of {}", m.spec.features));
            }
            Ok(())
        },
        |m| m.calibration.members(),
        device,
    )
}

/// Loads a dense model of `kind` from its file's `bytes` (named `path` in errors) onto
/// `device`; `spec` finds the network's shape in the metadata, and `check`
/// says what in the metadata cannot work (a damaged or hand-edited file) before anything
/// is built from it.
pub fn load_dense_bytes<M: serde::de::DeserializeOwned + CheckMeta>(
    path: &Path,
    bytes: Vec<u8>,
    kind: ModelKind,
    spec: impl Fn(&M) -> &DenseSpec,
    check: impl Fn(&M) -> std::result::Result<(), String>,
    members: impl Fn(&M) -> usize,
    device: &Device,
) -> Result<(DenseWeights, M)> {
    let (meta, bytes): (M, _) = parse(path, bytes, kind)?;
    let s = spec(&meta);
    let problem = if s.features == 0 || s.latent == 0 || s.hidden.contains(&0) {
        Err("a layer of width 0".to_string())
    } else {
        check(&meta)
    };
    if let Err(reason) = problem {
        return Err(Error::ModelFile {
            path: path.to_path_buf(),
            reason: format!("inconsistent metadata: {reason}"),
        });
    }
    // `parse` held the weights the members need to what the file holds.
    let model = DenseWeights {
        autoencoder: DenseAutoencoder::new(spec(&meta), device),
        ensemble: (1..members(&meta))
            .map(|_| DenseAutoencoder::new(spec(&meta), device))
            .collect(),
    };
    Ok((fill(path, model, bytes)?, meta))
}

/// The bytes of the model file at `path`; a missing file is named as such.
pub fn read_model_bytes(path: &Path) -> Result<Vec<u8>> {
    read_bytes(path)
}

/// Loads a denoiser's file at `path` onto `device`.
pub fn load_denoiser(path: &Path, device: &Device) -> Result<(DenoiseWeights, DenoiseMeta)> {
    load_denoiser_bytes(path, read_bytes(path)?, device)
}

/// Loads a denoiser from its file's `bytes` (named `path` in errors) onto `device`.
pub fn load_denoiser_bytes(
    path: &Path,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<(DenoiseWeights, DenoiseMeta)> {
    let (meta, bytes): (DenoiseMeta, _) = parse(path, bytes, ModelKind::ImageDenoiser)?;
    let model = DenoiseWeights {
        denoiser: DenoiseNet::new(&meta.spec, device),
    };
    Ok((fill(path, model, bytes)?, meta))
}

/// The metadata of model file `bytes` of `kind`, checked ([`CheckMeta`]) and held to the
/// weights the file has, and the bytes back. Nothing is allocated from the metadata before
/// this.
fn parse<M: serde::de::DeserializeOwned + CheckMeta>(
    path: &Path,
    bytes: Vec<u8>,
    kind: ModelKind,
) -> Result<(M, Vec<u8>)> {
    let bad = |reason: String| Error::ModelFile {
        path: path.to_path_buf(),
        reason,
    };
    let value = header_of(path, &bytes)?;
    check_kind(path, &value, kind)?;
    let meta: M = serde_json::from_value(value).map_err(|e| bad(format!("bad metadata ({e})")))?;
    meta.check()
        .map_err(|p| bad(format!("bad metadata: {p}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let held: u64 = header
        .tensors()
        .values()
        .map(|t| t.shape.iter().map(|&d| d as u64).product::<u64>())
        .sum();
    match meta.weight_values() {
        Some(needed) if needed == held => Ok((meta, bytes)),
        needed => Err(bad(format!(
            "weights do not match the metadata: its network needs {} values, the file holds \
             {held}",
            needed.map_or("more than 2^64".to_string(), |n| n.to_string())
        ))),
    }
}

/// `model` (freshly built from the spec) with its weights read from model file `bytes`.
fn fill<M: Module>(path: &Path, mut model: M, bytes: Vec<u8>) -> Result<M> {
    let mut store = SafetensorsStore::from_bytes(Some(bytes));
    model.load_from(&mut store).map_err(|e| Error::ModelFile {
        path: path.to_path_buf(),
        reason: format!("weights do not match the spec ({e})"),
    })?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_safetensors(path: &Path, metadata: Option<HashMap<String, String>>) {
        let data = vec![0u8; 8];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
        let bytes = safetensors::serialize([("w", view)], metadata).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn log_sum_exp_join_is_the_larger_part_when_apart_and_ln2_above_it_when_equal() {
        let lse = |a: f32, b: f32| KnnJoin::LogSumExp.of(a, b);
        assert_eq!(KnnJoin::Max.of(-1.5, 2.0), 2.0);
        assert!((lse(1.0, 1.0) - (1.0 + 2f32.ln())).abs() < 1e-6);
        // Far apart (a defect only the map sees), the join is the larger part.
        assert_eq!(lse(40.0, -3.0), 40.0);
        // No overflow where e^x would: the join is written around the larger part.
        assert!((lse(200.0, 199.0) - (200.0 + (-1f32).exp().ln_1p())).abs() < 1e-4);
        for (a, b) in [(0.3f32, -0.7f32), (-2.0, 2.5), (4.0, 3.9)] {
            let exact = ((a as f64).exp() + (b as f64).exp()).ln();
            assert!((lse(a, b) as f64 - exact).abs() < 1e-6, "{a} {b}");
            assert_eq!(lse(a, b), lse(b, a));
            // It rises with either part.
            assert!(lse(a + 0.1, b) > lse(a, b) && lse(a, b + 0.1) > lse(a, b));
        }
    }

    #[test]
    fn other_format_versions_and_foreign_files_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("bn-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let future = dir.join("future.safetensors");
        let meta = HashMap::from([(
            META_KEY.to_string(),
            r#"{"format_version": 99}"#.to_string(),
        )]);
        write_safetensors(&future, Some(meta));
        let err = read_meta(&future).unwrap_err();
        assert!(
            matches!(err, Error::FormatVersion { found: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("future.safetensors"));

        let foreign = dir.join("foreign.safetensors");
        write_safetensors(&foreign, None);
        let err = read_meta(&foreign).unwrap_err();
        assert!(
            err.to_string().contains("without bottleneck metadata"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
