//! Anomaly detection on images: fit on good images, calibrate a threshold on held-out good
//! images, score new images with maps, evaluate on a labelled MVTec-layout root.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::DynamicImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::images::{
    ImagePrep, ImageSet, batches_by_bytes, channels_of, decode, detect_channels, find_images,
    native_size, training_folder,
};
use crate::data::mvtec::test_images;
use crate::data::tiles::{self, ScaledImage, Stitch, Tiles};
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::file::{
    self, FORMAT_VERSION, ModelMeta, NetworkScoring, ScoreSettings, TrainingSummary,
};
use crate::model::{ConvAutoencoder, ConvSpec, Head, SegmentNet, SegmentSpec};
use crate::progress::Progress;
use crate::score::calibration::{CalibrationPlan, check_folds, networks_for};
use crate::score::maps::{self, Loss, Reduction};
use crate::task::api::Verdict;
use crate::train::{
    TrainLog, TrainOptions, default_epochs, side_by_side, train_autoencoder, train_discriminative,
};
use burn::module::Param;

/// Everything `fit` can be told; [`Default`] works without tuning. As JSON (the Python
/// package's form), any field left out keeps its default and an unknown one is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectParams {
    /// Side of the square network input the whole image is shrunk to. Default: images up
    /// to [`TILE_ABOVE`] px are read whole at their own size; larger ones in tiles.
    pub image_size: Option<usize>,
    /// Read the images in square tiles of this side at their own resolution (times
    /// `scale`) instead of shrinking each to one input: trains on random crops, scores
    /// overlapping tiles and gives maps at the image's size, so defects a few pixels wide
    /// on large images stay visible. Tiled models have no nearest-neighbour part and no
    /// per-image code. Default: [`DEFAULT_TILE`] for images over [`TILE_ABOVE`] px when
    /// `image_size` is not given.
    pub tile: Option<usize>,
    /// Scale the images are read at before tiling, above 0 and at most 1. Default: 1, or
    /// down to a longer side of [`DEFAULT_TILED_SIDE`] px for larger images.
    pub scale: Option<f32>,
    /// Bottleneck size; default from the image size.
    pub latent: Option<usize>,
    /// Channels of the first convolution (doubling per level up to 4x); default 32.
    pub width: Option<usize>,
    /// Passes over the training images; default: about 2,000 optimizer steps (a single
    /// network on inputs under 64 px: up to 4,000, the same pixels processed), stopping
    /// early when held-out loss stops improving.
    pub epochs: Option<usize>,
    /// Networks of a cross-conformal ensemble, each trained without one fold of the
    /// images and calibrated on it; 1 trains one network and holds out
    /// `calibration_fraction`. Default: [`DEFAULT_IMAGE_FOLDS`] up to
    /// [`CROSS_CONFORMAL_IMAGES`] images of at most [`CROSS_CONFORMAL_SIDE`] pixels a side,
    /// else 1.
    pub folds: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Target false-alarm rate of the conformal threshold.
    pub fpr: f64,
    /// Use a contamination quantile instead of the conformal rule.
    pub contamination: Option<f64>,
    /// Share of the good images held out for calibration.
    pub calibration_fraction: f64,
    pub loss: Loss,
    pub reduction: Reduction,
    /// Map smoothing in input pixels; default image_size / 32.
    pub smoothing_sigma: Option<f32>,
    /// Standardise maps per pixel by the training images' error statistics.
    pub normalize_maps: bool,
    /// Join the map score with the mean distance to the `knn` nearest training codes
    /// (0: map score only). Default: [`DEFAULT_KNN`] when the distance sees synthetic
    /// defects on the training images ([`file::LatentCheck`]), else the map score only.
    pub knn: Option<usize>,
    /// Skip unreadable images with a warning instead of stopping.
    pub skip_bad: bool,
    /// Score with a discriminative head trained on synthetic anomalies
    /// ([`Head::Segment`]) beside the reconstruction error ([`file::HeadJoin`]).
    pub head: Head,
}

impl Default for DetectParams {
    fn default() -> Self {
        Self {
            image_size: None,
            tile: None,
            scale: None,
            latent: None,
            width: None,
            epochs: None,
            folds: None,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 42,
            fpr: 0.01,
            contamination: None,
            calibration_fraction: 0.15,
            loss: Loss::Ssim,
            reduction: Reduction::Max,
            smoothing_sigma: None,
            normalize_maps: true,
            knn: None,
            skip_bad: false,
            head: Head::None,
        }
    }
}

impl DetectParams {
    /// Checks the settings that do not depend on the data, before any work, so a typo never
    /// costs a training run; returns the calibration plan. Errors name the field.
    pub fn check(&self) -> Result<CalibrationPlan> {
        let plan = CalibrationPlan::new(self.fpr, self.contamination, self.calibration_fraction)?;
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        if self.epochs == Some(0) {
            return Err(Error::param("epochs", "must be at least 1"));
        }
        check_folds(self.folds)?;
        if let Some(scale) = self.scale {
            if self.tile.is_none() && self.image_size.is_some() {
                return Err(Error::param(
                    "scale",
                    "applies to tiles, not to a whole image shrunk to image_size",
                ));
            }
            if !(scale.is_finite() && scale > 0.0 && scale <= 1.0) {
                return Err(Error::param(
                    "scale",
                    format!("{scale} must be above 0 and at most 1"),
                ));
            }
        }
        if let (Some(tile), Some(size)) = (self.tile, self.image_size)
            && tile != size
        {
            return Err(Error::param(
                "tile",
                format!(
                    "{tile} differs from image_size {size}: a tile is the network input, give one of them"
                ),
            ));
        }
        if let Some(sigma) = self.smoothing_sigma {
            let side = self
                .tile
                .or(self.image_size)
                .unwrap_or(crate::model::check::MAX_IMAGE_SIZE) as f32;
            if !(sigma.is_finite() && (0.0..=side).contains(&sigma)) {
                return Err(Error::param(
                    "smoothing_sigma",
                    format!("{sigma} must be at least 0 and at most the image size {side}"),
                ));
            }
        }
        if let Reduction::TopK { fraction } = self.reduction
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return Err(Error::param(
                "reduction",
                format!("top-k fraction {fraction} must be above 0 and at most 1"),
            ));
        }
        Ok(plan)
    }
}

impl DetectParams {
    /// The network input's side and, for a tiled model, how it reads its images, for
    /// images whose longer side is `native` px. Fails when `scale` is given for images that
    /// are read whole.
    fn reading(&self, native: impl FnOnce() -> Result<usize>) -> Result<(usize, Option<Tiles>)> {
        let (side, tiles) = match (self.tile, self.image_size) {
            (Some(tile), _) => (
                tile,
                Some(Tiles {
                    scale: self.scale.unwrap_or(1.0),
                }),
            ),
            (None, Some(size)) => (size, None),
            (None, None) => {
                let native = native()?;
                match native > TILE_ABOVE {
                    true => (
                        DEFAULT_TILE,
                        Some(Tiles {
                            scale: self
                                .scale
                                .unwrap_or((DEFAULT_TILED_SIDE as f32 / native as f32).min(1.0)),
                        }),
                    ),
                    false => (default_image_size(native), None),
                }
            }
        };
        if tiles.is_none() && self.scale.is_some() {
            return Err(Error::param(
                "scale",
                format!(
                    "applies to tiles; these images are read whole (up to {TILE_ABOVE} px): \
                     give tile too"
                ),
            ));
        }
        Ok((side, tiles))
    }
}

/// Why a tiled model gives no code per image (encode, search, the service's /encode).
pub const TILED_CODES: &str = "this model reads images in tiles and has a code per tile, \
not per image: encode and search need a whole-image model (train with --image-size, e.g. \
128; images over 128 px are read in tiles by default)";

/// Longest image side read whole by default: larger images are read in tiles at their own
/// resolution. On 300 px texture crops with small defects, 64 px tiles ranked images at
/// 0.83 AUROC where the whole image shrunk to 128 px was at chance (0.42); on 1,024 px
/// boards with 3-8 px defects, 0.76 against 0.44 (bench/RESULTS.md, "Native-resolution
/// tiles").
pub const TILE_ABOVE: usize = 128;
/// Tile side by default: a few times the small defects it must see, and cheap to train
/// (2,000 steps of 64 px crops take about 6 minutes on 2 cores).
pub const DEFAULT_TILE: usize = 64;
/// Longer side larger images are scaled down to by default before tiling, so scoring
/// stays under about a thousand 64 px tiles (2.5 s on 2 cores) per image.
pub const DEFAULT_TILED_SIDE: usize = 1024;

/// Default optimizer steps when `epochs` is not given, for inputs of [`BUDGET_SIDE`] px and
/// up (and for each network of an ensemble).
const TARGET_STEPS: usize = 2000;
/// A single network on smaller inputs gets the steps that cost about what
/// [`TARGET_STEPS`] at this side cost (steps times pixels), up to [`MAX_TARGET_STEPS`].
const BUDGET_SIDE: usize = 64;
/// Most default steps: on Fashion-MNIST (28 px, 4,590 training images) 4,000 steps instead
/// of 2,000 raised the image AUROC on each of classes 0, 2, 4 and 6 (+0.001 to +0.006)
/// for ~50 s more a class on 2 cores; no class stopped early at 2,000.
const MAX_TARGET_STEPS: usize = 4000;

/// Default optimizer steps of one of `networks` networks on `side`-pixel inputs: the same
/// compute as [`TARGET_STEPS`] at [`BUDGET_SIDE`] px for a single network (small images
/// train more steps in the same time), [`TARGET_STEPS`] for each network of an ensemble
/// (which already trains `networks` of them).
fn default_steps(side: usize, networks: usize) -> usize {
    match networks {
        0 | 1 => (TARGET_STEPS * BUDGET_SIDE * BUDGET_SIDE / (side * side).max(1))
            .clamp(TARGET_STEPS, MAX_TARGET_STEPS),
        _ => TARGET_STEPS,
    }
}
/// A tiled model's random crops per pass are at most this share of the default steps'
/// samples, so early stopping looks at the held-out loss about ten times.
const TILED_PASSES: usize = 10;
/// Training crops a tiled model's map statistics and head scale are measured on: enough
/// for per-pixel means over tile positions, a fraction of a pass to compute.
const TILED_STATISTICS_CROPS: usize = 2048;
/// Cells along the longer side of a tiled model's position statistics
/// ([`file::PositionStats`]): 8 px cells at 1,024 px, as fine as a whole-image model's
/// per-pixel statistics at its 128 px input.
pub const POSITION_CELLS: usize = 128;
/// Training images a tiled model's position statistics are measured on (evenly spread).
const POSITION_IMAGES: usize = 64;
/// Largest image set calibrated cross-conformally by default: above it a single split
/// holds out enough images (150 of 1,000 at 15%).
pub const CROSS_CONFORMAL_IMAGES: usize = 1000;
/// Largest input side calibrated cross-conformally by default. Each network trains one
/// network's schedule (sharing it among five cost Fashion-MNIST 0.012 AUROC with 300
/// images over 3 seeds, bench/calibration.sh), so K networks take about K times the work,
/// trained side by side: 20-45 s at 28 px on 2 cores for the default two, but over an
/// hour at 128 px.
pub const CROSS_CONFORMAL_SIDE: usize = 32;
/// Networks of the default cross-conformal ensemble for images (tables have
/// [`DEFAULT_FOLDS`](crate::score::calibration::DEFAULT_FOLDS)). Measured with
/// bench/calibration.sh on Fashion-MNIST class 0 at 28 px, 2 cores: two networks, each on
/// half the images and trained side by side, take 1.2x one network's time and less than
/// the single network as issue 17 was filed (300 images: 22 s against 18 s and 28 s); they
/// keep issue 17's false-alarm target (20 draws: 0.043 realised at 0.05, p90 0.060, where
/// one network's split reaches 0.097) and rank at least as one network does (AUROC over
/// 20 draws at 100, 300 and 1,000 images: 0.9071, 0.9102 and 0.9268 against 0.8980,
/// 0.9099 and 0.9263). Five networks rank higher (0.9155 at 300) in 4x one network's
/// time; three, or five of half width, rank between in about 2.2x (bench/RESULTS.md).
pub const DEFAULT_IMAGE_FOLDS: usize = 2;
/// Images per forward pass when scoring.
const SCORE_BATCH: usize = 32;
/// Neighbours of the latent part when `knn` is not given.
pub const DEFAULT_KNN: usize = 5;
/// Most training images [`Detector::check_latent`] scores clean and with a defect.
const LATENT_CHECK_IMAGES: usize = 1024;
/// Draws of a synthetic defect before an image is checked clean only.
const LATENT_CHECK_DRAWS: usize = 4;
/// Most pixels pixel AUROC ranks: above it good pixels are thinned evenly (16M is 1,000
/// test maps of 128 px, so whole-image models keep every pixel).
const PIXEL_AUROC_PIXELS: usize = 16 << 20;
/// False-positive rate up to which AUPRO integrates (MVTec AD's 0.3).
pub const AUPRO_MAX_FPR: f64 = 0.3;
/// Bytes the decoded images of one scoring batch may take at their peak: large images
/// come in smaller batches (down to one), so memory is bounded by bytes, not image count.
const BATCH_BYTES: u64 = 1 << 30;

/// A trained detector: its networks and its model-file metadata.
pub struct Detector {
    /// Every network in fold order: one, or the K of a cross-conformal ensemble. Network
    /// `j`'s statistics are `meta.scoring`'s `j`-th ([`ScoreSettings::networks`]).
    networks: Vec<Network>,
    meta: ModelMeta,
    device: Device,
}

/// One network of a detector.
pub(crate) struct Network {
    pub(crate) model: ConvAutoencoder,
    /// The discriminative head whose map joins the reconstruction error's, when the model
    /// has one.
    pub(crate) head: Option<SegmentNet>,
    /// Codes `[n, latent]` of the images it trained on, when the score has a
    /// nearest-neighbour part.
    pub(crate) codes: Option<Tensor<2>>,
}

/// One scored image, handed out in input order.
pub struct ScoredImage {
    pub index: usize,
    pub path: PathBuf,
    pub score: f32,
    /// Map score and latent distance on their common scale, when the score has both.
    pub knn_parts: Option<(f32, f32)>,
    /// Error and head scores on their join's scales (the map score is the larger with the
    /// max reduction), when the model has a head.
    pub head_parts: Option<(f32, f32)>,
    pub p_value: f64,
    pub is_anomaly: bool,
    /// Smoothed anomaly map at [`ImagePrep::map_size`] of the image: the model's input
    /// size (`image_size^2`), or a tiled model's image size at its scale.
    pub map: Vec<f32>,
    /// The decoded input, for drawing heatmaps at its own size.
    pub image: DynamicImage,
}

/// A network's smoothed maps of a batch (float64), and its codes.
struct SmoothedMaps {
    /// The reconstruction error's.
    errors: Vec<Vec<f64>>,
    /// The head's anomaly probabilities, when the network has a head.
    head: Option<Vec<Vec<f64>>>,
    codes: Tensor<2>,
}

/// The map of a network with a head: at each pixel the larger of the error and the head's
/// probability, each on the scale of its image scores ([`file::HeadJoin`]).
fn join_maps(errors: &[f64], head: &[f64], join: &file::HeadJoin) -> Vec<f64> {
    let (ec, es) = (join.error_center as f64, join.error_spread as f64);
    let (hc, hs) = (join.head_center as f64, join.head_spread as f64);
    errors
        .iter()
        .zip(head)
        .map(|(&e, &h)| ((e - ec) / es).max((h - hc) / hs))
        .collect()
}

/// A network's map scores of a batch, its maps and codes, and with a head each image's
/// error and head scores on their join's scales.
struct MapScores {
    scores: Vec<f32>,
    maps: Vec<Vec<f32>>,
    codes: Tensor<2>,
    head_parts: Option<Vec<(f32, f32)>>,
}

/// An image score and its parts.
#[derive(Debug, Clone, Copy)]
struct ScoreParts {
    score: f32,
    /// Map score and latent distance on their common scale, when the score has both.
    knn_parts: Option<(f32, f32)>,
    /// Error and head scores on their join's scales, when the network has a head.
    head_parts: Option<(f32, f32)>,
}

/// An image's verdict from every network, and the parts of their mean score.
struct Scored {
    verdict: Verdict,
    /// The networks' mean map score and latent distance, when the score has both.
    knn_parts: Option<(f32, f32)>,
    /// The networks' mean error and head scores, when they have heads.
    head_parts: Option<(f32, f32)>,
}

/// The input side used when none is given: the images' own size up to 128, rounded down so
/// the encoder can halve it several times (a multiple of 16 from 32 px, of 4 below: 28 stays
/// 28, 100 becomes 96).
fn default_image_size(native: usize) -> usize {
    match native {
        128.. => 128,
        32..=127 => native / 16 * 16,
        _ => (native / 4 * 4).max(16),
    }
}

impl Detector {
    /// Trains on the good images of `data` (a folder, or an MVTec root whose `train/good`
    /// is used), holds out `calibration_fraction` of them, and calibrates the threshold.
    /// Settings that cannot work fail before any image is read.
    pub fn fit(
        data: &Path,
        params: &DetectParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        let folder = training_folder(data);
        let paths = find_images(&folder)?;
        let (image_size, tiles) = params.reading(|| native_size(&paths, params.skip_bad))?;
        let channels = detect_channels(&paths, params.skip_bad)?;
        let prep = ImagePrep {
            channels,
            image_size,
            tiles,
        };
        ConvSpec::for_image(channels, image_size, params.latent, params.width)?;
        progress.stage("reading images", paths.len() as u64);
        let (set, skipped) =
            ImageSet::open(paths, prep, params.skip_bad, &|_| progress.advance(1))?;
        let set = set.with_crop_seed(params.seed);
        progress.finish();
        for e in &skipped {
            progress.warn(&format!("skipped: {e}"));
        }
        let mut detector = Self::fit_set(
            &set,
            &folder.display().to_string(),
            params,
            &plan,
            device,
            progress,
        )?;
        detector.meta.training.skipped_samples = skipped.len();
        detector.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(detector)
    }

    /// Trains on good images already in memory, as [`Detector::fit`] does on a folder; the
    /// channels and the input size come from the images as they would from files.
    pub fn fit_images(
        images: &[DynamicImage],
        params: &DetectParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        let Some(first) = images.first() else {
            return Err(Error::Invalid("no images to train on".into()));
        };
        let (image_size, tiles) =
            params.reading(|| Ok(first.width().max(first.height()) as usize))?;
        let prep = ImagePrep {
            channels: channels_of(images),
            image_size,
            tiles,
        };
        ConvSpec::for_image(prep.channels, prep.image_size, params.latent, params.width)?;
        let set = ImageSet::from_images(images, prep).with_crop_seed(params.seed);
        let mut detector = Self::fit_set(&set, "the images", params, &plan, device, progress)?;
        detector.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(detector)
    }

    /// Trains on `set` (named `source` in errors), holds out the plan's share of it and
    /// calibrates.
    fn fit_set(
        set: &ImageSet,
        source: &str,
        params: &DetectParams,
        plan: &CalibrationPlan,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let prep = set.prep().clone();
        let spec =
            ConvSpec::for_image(prep.channels, prep.image_size, params.latent, params.width)?;
        let n = set.len();
        if n < 2 {
            return Err(Error::Invalid(format!(
                "{source}: {n} usable image; need at least 2 (one to train on, one to calibrate)"
            )));
        }
        let tiled = prep.tiles.is_some();
        if let Some(sigma) = params.smoothing_sigma
            && sigma > prep.image_size as f32
        {
            return Err(Error::param(
                "smoothing_sigma",
                format!(
                    "{sigma} is above the network input's side {}",
                    prep.image_size
                ),
            ));
        }
        let up_to = match prep.image_size <= CROSS_CONFORMAL_SIDE && !tiled {
            true => CROSS_CONFORMAL_IMAGES,
            false => 0,
        };
        let k = networks_for(n, params.folds, DEFAULT_IMAGE_FOLDS, up_to);
        let splits = plan.networks(n, k, params.seed, source, "images")?;
        let image_size = prep.image_size;
        let scoring = ScoreSettings {
            loss: params.loss,
            smoothing_sigma: params
                .smoothing_sigma
                .unwrap_or((image_size as f32 / 32.0).max(1.0)),
            reduction: params.reduction,
            map_scale: 1.0,
            network: NetworkScoring::default(),
            ensemble: Vec::new(),
        };
        let summary = |log, calibration_samples| {
            TrainingSummary::from_log(
                log,
                calibration_samples,
                0,
                params.batch_size,
                params.learning_rate,
                params.seed,
            )
        };
        let mut detector = Self {
            networks: Vec::with_capacity(k),
            meta: ModelMeta {
                // Set from what the model holds once it is trained (below).
                format_version: FORMAT_VERSION,
                kind: file::ModelKind::ImageDetector.data(),
                task: file::ModelKind::ImageDetector.task(),
                spec: spec.clone(),
                head: match params.head {
                    Head::None => None,
                    Head::Segment => Some(SegmentSpec::for_image(prep.channels, prep.image_size)),
                },
                prep,
                scoring,
                calibration: plan.placeholder(),
                training: summary(TrainLog::default(), 0),
            },
            device: device.clone(),
        };
        let mut folds = Vec::with_capacity(k);
        let mut map_scale = 0.0f32;
        let mut first_log = None;
        // The latent part, until the first network's check drops it (for every network:
        // an ensemble's scores are means, so its networks score alike). By default no more
        // neighbours than the smallest training split has besides the image itself: two
        // networks on 8 images train on 4 each.
        let fewest = splits.iter().map(|s| s.training.len()).min().unwrap_or(0);
        let mut knn = match (tiled, params.knn) {
            (true, _) => 0,
            (false, Some(k)) => k,
            (false, None) => DEFAULT_KNN.min(fewest.saturating_sub(1)),
        };
        let mut latent_check = None;
        // What each network trains on and how: a tiled model trains on crops (sample
        // `i * crops + c` is image i's crop c).
        let runs: Vec<(Vec<usize>, TrainOptions)> = splits
            .iter()
            .enumerate()
            .map(|(j, split)| {
                let samples: Vec<usize> = match tiled {
                    false => split.training.clone(),
                    true => {
                        let per_pass = TARGET_STEPS * params.batch_size / TILED_PASSES;
                        let m = set
                            .crops()
                            .min((per_pass / split.training.len().max(1)).max(1));
                        let c = set.crops();
                        split
                            .training
                            .iter()
                            .flat_map(|&i| i * c..i * c + m)
                            .collect()
                    }
                };
                let opts = TrainOptions {
                    epochs: params.epochs.unwrap_or_else(|| {
                        default_epochs(
                            samples.len(),
                            params.batch_size,
                            default_steps(image_size, k),
                            300,
                        )
                    }),
                    batch_size: params.batch_size,
                    learning_rate: params.learning_rate,
                    seed: params.seed.wrapping_add(j as u64),
                    loss: params.loss,
                    early_stopping: params.epochs.is_none(),
                };
                (samples, opts)
            })
            .collect();
        // The networks train side by side (on the 2-core machine, 300 Fashion-MNIST images:
        // see bench/RESULTS.md), under one progress stage of all their steps; a network
        // that stops early counts its remaining steps as done.
        let steps = runs
            .iter()
            .map(|(samples, opts)| opts.steps(samples, "images"))
            .sum::<Result<usize>>()?;
        if k > 1 {
            progress.status(&format!(
                "training {k} networks, each on {} images and calibrated on the other {}",
                splits[0].training.len(),
                splits[0].calibration.len()
            ));
        }
        let head_spec = detector.meta.head.clone();
        let trained = side_by_side(k, steps, progress, |j, progress| {
            let (samples, opts) = &runs[j];
            match &head_spec {
                None => train_autoencoder(&spec, set, samples, opts, device, progress)
                    .map(|(model, log)| (model, None, log)),
                Some(head) => {
                    train_discriminative(&spec, head, set, samples, opts, device, progress)
                        .map(|(model, head, log)| (model, Some(head), log))
                }
            }
        });
        for (j, ((split, (samples, _)), (model, head, log))) in
            splits.iter().zip(&runs).zip(trained?).enumerate()
        {
            // Statistics over the training samples: every one, or spread crops of a tiled
            // model.
            let statistics: Vec<usize> = match tiled {
                false => samples.clone(),
                true => {
                    let step = samples.len().div_ceil(TILED_STATISTICS_CROPS).max(1);
                    samples.iter().copied().step_by(step).collect()
                }
            };
            first_log.get_or_insert(log);
            detector.networks.push(Network {
                model,
                head,
                codes: None,
            });
            if j > 0 {
                detector
                    .meta
                    .scoring
                    .ensemble
                    .push(NetworkScoring::default());
            }
            if params.normalize_maps {
                let (mean, std) = detector.pixel_statistics(j, set, &statistics, progress)?;
                let stats = detector.meta.scoring.network_mut(j);
                stats.pixel_mean = mean;
                stats.pixel_std = std;
            }
            if detector.meta.head.is_some() {
                detector.fit_head_join(j, set, &statistics, progress)?;
            }
            if tiled && params.normalize_maps {
                detector.fit_positions(j, set, &split.training, progress)?;
            }
            if knn > 0 {
                detector.fit_knn(j, set, &split.training, knn, progress)?;
                if j == 0 && params.knn.is_none() {
                    let check = detector.check_latent(0, set, &split.training, params.seed)?;
                    progress.status(&check.describe());
                    if !check.kept {
                        detector.networks[0].codes = None;
                        detector.meta.scoring.network_mut(0).knn = None;
                        knn = 0;
                    }
                    latent_check = Some(check);
                }
            }
            // Each network scores the images it did not train on.
            let mut scores = Vec::with_capacity(split.calibration.len());
            progress.stage("calibrating", split.calibration.len() as u64);
            for &i in split.calibration.iter().filter(|_| tiled) {
                let (parts, map) = detector.tiled_network(j, &*set.scaled_image(i)?);
                scores.push(parts.score);
                map_scale = map.iter().copied().fold(map_scale, f32::max);
                progress.advance(1);
            }
            for chunk in split.calibration.chunks(SCORE_BATCH).filter(|_| !tiled) {
                let x = detector.input_tensor(set.batch(chunk)?, chunk.len());
                let (parts, maps) = detector.network_parts(j, x);
                scores.extend(parts.iter().map(|p| p.score));
                for map in maps {
                    map_scale = map.iter().copied().fold(map_scale, f32::max);
                }
                progress.advance(chunk.len() as u64);
            }
            progress.finish();
            folds.push(scores);
        }
        detector.meta.calibration = match k {
            1 => plan.calibrate(folds.concat(), "images", progress)?,
            _ => plan.calibrate_folds(folds, "images", progress)?,
        };
        detector.meta.scoring.map_scale = if map_scale > 0.0 { map_scale } else { 1.0 };
        detector.meta.training = TrainingSummary {
            latent_check,
            ..summary(
                first_log.unwrap_or_default(),
                detector.meta.calibration.scores.len(),
            )
        };
        detector.meta.format_version = detector.meta.required_format_version();
        Ok(detector)
    }

    /// Per-pixel mean and standard deviation of the smoothed error maps of `indices`. The
    /// deviation is floored at a tenth of its average so a pixel that never varies cannot
    /// turn a tiny error into a huge score.
    fn pixel_statistics(
        &self,
        network: usize,
        set: &ImageSet,
        indices: &[usize],
        progress: &dyn Progress,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = self.meta.prep.image_size;
        let mut sum = vec![0.0f64; s * s];
        let mut sum_sq = vec![0.0f64; s * s];
        progress.stage("map statistics", indices.len() as u64);
        for chunk in indices.chunks(SCORE_BATCH) {
            let x = self.input_tensor(set.batch(chunk)?, chunk.len());
            for map in self.smoothed_maps(network, x, false).errors {
                for (i, &v) in map.iter().enumerate() {
                    sum[i] += v;
                    sum_sq[i] += v * v;
                }
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        let n = indices.len() as f64;
        let mean: Vec<f32> = sum.iter().map(|v| (v / n) as f32).collect();
        let mut std: Vec<f32> = sum
            .iter()
            .zip(&sum_sq)
            .map(|(a, b)| ((b / n - (a / n).powi(2)).max(0.0)).sqrt() as f32)
            .collect();
        let floor = 0.1 * std.iter().sum::<f32>() / std.len() as f32 + f32::MIN_POSITIVE;
        for v in &mut std {
            *v = v.max(floor);
        }
        Ok((mean, std))
    }

    /// Stores the training codes and puts map scores and nearest-neighbour distances on one
    /// scale. Each training image's distance leaves the image itself out.
    fn fit_knn(
        &mut self,
        network: usize,
        set: &ImageSet,
        indices: &[usize],
        k: usize,
        progress: &dyn Progress,
    ) -> Result<()> {
        if indices.len() <= k {
            return Err(Error::param(
                "knn",
                format!(
                    "{k} needs more than {k} training images, got {}",
                    indices.len()
                ),
            ));
        }
        let mut map_scores = Vec::with_capacity(indices.len());
        let mut codes = Vec::with_capacity(indices.len());
        progress.stage("training codes", indices.len() as u64);
        for chunk in indices.chunks(SCORE_BATCH) {
            let x = self.input_tensor(set.batch(chunk)?, chunk.len());
            let m = self.map_scores(network, x);
            map_scores.extend(m.scores);
            codes.push(m.codes);
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        let codes = Tensor::cat(codes, 0);
        self.networks[network].codes = Some(codes.clone());
        let mut dists = Vec::with_capacity(indices.len());
        for (b, start) in (0..indices.len()).step_by(256).enumerate() {
            let end = (start + 256).min(indices.len());
            let q = codes.clone().narrow(0, start, end - start);
            let q: Vec<f32> = q.into_data().try_into_vec().expect("f32 codes");
            dists.extend(self.knn_distances(network, &q, k, &|j| Some(b * 256 + j)));
        }
        let (map_center, map_spread) = center_spread(&map_scores);
        let (knn_center, knn_spread) = center_spread(&dists);
        self.meta.scoring.network_mut(network).knn = Some(file::KnnScore {
            k,
            codes: indices.len(),
            map_center,
            map_spread,
            knn_center,
            knn_spread,
            join: file::KnnJoin::LogSumExp,
        });
        Ok(())
    }

    /// Measures whether network `network`'s latent distance sees defects (see
    /// [`file::LatentCheck`]): up to [`LATENT_CHECK_IMAGES`] of its training images
    /// (`training`, in the order of its stored codes), spread over them, each left out of
    /// its own neighbours, clean and with a synthetic defect drawn from `seed`.
    fn check_latent(
        &self,
        network: usize,
        set: &ImageSet,
        training: &[usize],
        seed: u64,
    ) -> Result<file::LatentCheck> {
        use rand::SeedableRng;
        let codes = self.networks[network]
            .codes
            .as_ref()
            .expect("the check needs training codes");
        let k = self
            .meta
            .scoring
            .network_at(network)
            .knn
            .as_ref()
            .map_or(1, |s| s.k);
        let (channels, side) = (self.meta.prep.channels, self.meta.prep.image_size);
        let n = training.len().min(LATENT_CHECK_IMAGES);
        let rows: Vec<usize> = (0..n).map(|i| i * training.len() / n).collect();
        let stored: Vec<f32> = codes.clone().into_data().try_into_vec().expect("f32 codes");
        let latent = stored.len() / training.len();
        let clean_codes: Vec<f32> = rows
            .iter()
            .flat_map(|&r| stored[r * latent..(r + 1) * latent].iter().copied())
            .collect();
        let clean = self.knn_distances(network, &clean_codes, k, &|j| Some(rows[j]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1a7e);
        let mut defective = Vec::with_capacity(n);
        for chunk in rows.chunks(SCORE_BATCH) {
            let images: Vec<usize> = chunk.iter().map(|&r| training[r]).collect();
            let originals = set.batch(&images)?;
            let size = originals.len() / chunk.len();
            // Each image with the first defect drawn on it (about half the draws leave an
            // image clean).
            let mut drawn: Vec<Option<Vec<f32>>> = vec![None; chunk.len()];
            let plane = side * side;
            for _ in 0..LATENT_CHECK_DRAWS {
                let synthetic = crate::train::anomalies::synthesise(
                    &originals,
                    chunk.len(),
                    channels,
                    side,
                    &mut rng,
                );
                for (i, slot) in drawn.iter_mut().enumerate() {
                    if slot.is_none() && synthetic.masks[i * plane..(i + 1) * plane].contains(&1.0)
                    {
                        *slot = Some(synthetic.inputs[i * size..(i + 1) * size].to_vec());
                    }
                }
            }
            let (at, inputs): (Vec<usize>, Vec<Vec<f32>>) = chunk
                .iter()
                .zip(drawn)
                .filter_map(|(&r, d)| d.map(|d| (r, d)))
                .unzip();
            if at.is_empty() {
                continue;
            }
            let x = self.input_tensor(inputs.concat(), at.len());
            let z: Vec<f32> = self.networks[network]
                .model
                .encode(x)
                .into_data()
                .try_into_vec()
                .expect("f32 codes");
            defective.extend(self.knn_distances(network, &z, k, &|j| Some(at[j])));
        }
        let (n_clean, n_defective) = (clean.len(), defective.len());
        let labels: Vec<bool> = (0..n_clean + n_defective).map(|i| i >= n_clean).collect();
        let auroc = metrics::auroc(&[clean, defective].concat(), &labels);
        Ok(file::LatentCheck::new(
            n_clean,
            n_defective,
            auroc.unwrap_or(0.5),
        ))
    }

    /// Mean distance from each code in `queries` (concatenated) to its `k` nearest training
    /// codes; query j skips training code `exclude(j)`, when that is some. Distances
    /// are summed differences, not `|q|^2 + |c|^2 - 2 q.c`: near neighbours are close
    /// relative to the codes' size, and that expansion loses them to cancellation in
    /// float32 (the distance moved by 1e-5, a tenth of its spread, with the order of sums).
    fn knn_distances(
        &self,
        network: usize,
        queries: &[f32],
        k: usize,
        exclude: &(dyn Fn(usize) -> Option<usize> + Sync),
    ) -> Vec<f32> {
        let codes = self.networks[network]
            .codes
            .as_ref()
            .expect("knn needs training codes");
        let [n, latent] = codes.dims();
        let codes: Vec<f32> = codes.clone().into_data().try_into_vec().expect("f32 codes");
        queries
            .par_chunks(latent)
            .enumerate()
            .map(|(j, q)| {
                let mut row: Vec<f32> = codes
                    .chunks(latent)
                    .map(|c| {
                        q.iter()
                            .zip(c)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f32>()
                            .sqrt()
                    })
                    .collect();
                if let Some(i) = exclude(j) {
                    row[i] = f32::INFINITY;
                }
                let k = k.min(n - 1).max(1);
                row.select_nth_unstable_by(k - 1, f32::total_cmp);
                row[..k].iter().sum::<f32>() / k as f32
            })
            .collect()
    }

    /// Loads a model file for scoring on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load(path, device)?;
        Ok(Self::from_parts(weights, meta, device))
    }

    /// Loads a detector from its model file's bytes (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_bytes(path, bytes, device)?;
        Ok(Self::from_parts(weights, meta, device))
    }

    fn from_parts(weights: file::DetectorWeights, meta: ModelMeta, device: &Device) -> Self {
        let first = Network {
            model: weights.autoencoder,
            head: weights.head,
            codes: weights.train_codes.map(|p| p.val()),
        };
        let rest = weights.ensemble.into_iter().map(|w| Network {
            model: w.autoencoder,
            head: w.head,
            codes: w.train_codes.map(|p| p.val()),
        });
        Self {
            networks: std::iter::once(first).chain(rest).collect(),
            meta,
            device: device.clone(),
        }
    }

    /// Writes the model file (weights and metadata) to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let codes = |n: &Network| n.codes.clone().map(Param::from_tensor);
        let first = &self.networks[0];
        let weights = file::DetectorWeights {
            autoencoder: first.model.clone(),
            train_codes: codes(first),
            head: first.head.clone(),
            ensemble: self.networks[1..]
                .iter()
                .map(|n| file::NetworkWeights {
                    autoencoder: n.model.clone(),
                    train_codes: codes(n),
                    head: n.head.clone(),
                })
                .collect(),
        };
        file::save(path, &weights, &self.meta)
    }

    /// The model file's metadata.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The first (or only) network; `encode` and search use its codes.
    pub fn model(&self) -> &ConvAutoencoder {
        &self.networks[0].model
    }

    /// Number of networks: 1, or K for a cross-conformal ensemble.
    pub fn networks(&self) -> usize {
        self.networks.len()
    }

    /// Every network with its statistics, in fold order.
    pub(crate) fn networks_scoring(&self) -> impl Iterator<Item = (&Network, &NetworkScoring)> {
        self.networks.iter().zip(self.meta.scoring.networks())
    }

    /// The network tensor of `n` prepared inputs (channel-major, concatenated).
    fn input_tensor(&self, inputs: Vec<f32>, n: usize) -> Tensor<4> {
        let s = self.meta.prep.image_size;
        Tensor::<4>::from_data(
            TensorData::new(inputs, [n, self.meta.prep.channels, s, s]),
            &self.device,
        )
    }

    /// Network `network`'s smoothed maps (float64) of inputs `x`: the reconstruction
    /// error's, the head's anomaly probabilities when it has a head and `with_head` asks
    /// for them, and the bottleneck codes.
    fn smoothed_maps(&self, network: usize, x: Tensor<4>, with_head: bool) -> SmoothedMaps {
        let s = self.meta.prep.image_size;
        let Network { model, head, .. } = &self.networks[network];
        let z = model.encode(x.clone());
        let y = model.decode(z.clone());
        let sigma = self.meta.scoring.smoothing_sigma;
        let smooth = |raw: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            raw.par_iter()
                .map(|m| maps::smooth(m, s, s, sigma))
                .collect()
        };
        let head = head.as_ref().filter(|_| with_head).map(|head| {
            let p = burn::tensor::activation::sigmoid(head.forward(x.clone(), y.clone()));
            let p: Vec<f32> = p.into_data().try_into_vec().expect("f32 maps");
            smooth(
                p.chunks(s * s)
                    .map(|m| m.iter().map(|&v| v as f64).collect())
                    .collect(),
            )
        });
        SmoothedMaps {
            errors: smooth(maps::error_maps(x, y, self.meta.scoring.loss)),
            head,
            codes: z,
        }
    }

    /// [`Detector::smoothed_maps`] with the error maps standardised when network `network`
    /// has pixel statistics.
    fn standardised_maps(&self, network: usize, x: Tensor<4>) -> SmoothedMaps {
        let mut maps = self.smoothed_maps(network, x, true);
        let stats = self.meta.scoring.network_at(network);
        if !stats.pixel_mean.is_empty() {
            for map in &mut maps.errors {
                for ((v, &m), &sd) in map.iter_mut().zip(&stats.pixel_mean).zip(&stats.pixel_std) {
                    *v = (*v - m as f64) / sd as f64;
                }
            }
        }
        maps
    }

    /// Network `network`'s map scores, anomaly maps (standardised when it has pixel
    /// statistics, joined with its head's when it has one) and codes of inputs `x`, with
    /// each image's error and head scores on their join's scales when it has a head.
    fn map_scores(&self, network: usize, x: Tensor<4>) -> MapScores {
        let SmoothedMaps {
            errors,
            head,
            codes,
        } = self.standardised_maps(network, x);
        let sc = &self.meta.scoring;
        let reduce = |m: Vec<f64>| -> (f32, Vec<f32>) {
            let m: Vec<f32> = m.into_iter().map(|v| v as f32).collect();
            (sc.reduction.apply(&m), m)
        };
        let (head_parts, joined) = match (head, &sc.network_at(network).head) {
            (Some(head), Some(join)) => {
                let scaled = |m: &[f64], center: f32, spread: f32| {
                    let (c, w) = (center as f64, spread as f64);
                    reduce(m.iter().map(|v| (v - c) / w).collect()).0
                };
                let parts = errors
                    .iter()
                    .zip(&head)
                    .map(|(e, h)| {
                        (
                            scaled(e, join.error_center, join.error_spread),
                            scaled(h, join.head_center, join.head_spread),
                        )
                    })
                    .collect();
                let joined = errors
                    .iter()
                    .zip(&head)
                    .map(|(e, h)| join_maps(e, h, join))
                    .collect();
                (Some(parts), joined)
            }
            _ => (None, errors),
        };
        let (scores, maps) = joined.into_iter().map(reduce).unzip();
        MapScores {
            scores,
            maps,
            codes,
            head_parts,
        }
    }

    /// Measures network `network`'s position statistics on up to [`POSITION_IMAGES`] of the
    /// training images at `indices`, when they share one size (images of different sizes
    /// are not registered to one another, and keep maps standardised by tile position only).
    fn fit_positions(
        &mut self,
        network: usize,
        set: &ImageSet,
        indices: &[usize],
        progress: &dyn Progress,
    ) -> Result<()> {
        let step = indices.len().div_ceil(POSITION_IMAGES).max(1);
        let chosen: Vec<usize> = indices.iter().copied().step_by(step).collect();
        if chosen.len() < 2 {
            return Ok(());
        }
        // The first image's size, and the grid of cells over it.
        let mut grid: Option<(usize, usize, file::PositionStats)> = None;
        let (mut sum, mut sum_sq) = (Vec::new(), Vec::new());
        progress.stage("position statistics", chosen.len() as u64);
        for &i in &chosen {
            let image = set.scaled_image(i)?;
            let (w, h) = (image.width, image.height);
            let (first_w, first_h, cells) = grid.get_or_insert_with(|| {
                let c = w.max(h).div_ceil(POSITION_CELLS).max(1);
                let (gw, gh) = (w.div_ceil(c), h.div_ceil(c));
                let cells = file::PositionStats {
                    width: gw,
                    height: gh,
                    mean: Vec::new(),
                    std: Vec::new(),
                };
                (w, h, cells)
            });
            if (*first_w, *first_h) != (w, h) {
                progress.finish();
                return Ok(());
            }
            let (_, map) = self.tiled_network(network, &image);
            let top = cells.cell_max(&map, w, h);
            sum.resize(top.len(), 0.0f64);
            sum_sq.resize(top.len(), 0.0f64);
            for (k, &v) in top.iter().enumerate() {
                sum[k] += v as f64;
                sum_sq[k] += (v as f64) * (v as f64);
            }
            progress.advance(1);
        }
        progress.finish();
        let Some((_, _, mut cells)) = grid else {
            return Ok(());
        };
        let n = chosen.len() as f64;
        cells.mean = sum.iter().map(|v| (v / n) as f32).collect();
        cells.std = sum
            .iter()
            .zip(&sum_sq)
            .map(|(a, b)| ((b / n - (a / n).powi(2)).max(0.0)).sqrt() as f32)
            .collect();
        let floor =
            0.1 * cells.std.iter().sum::<f32>() / cells.std.len() as f32 + f32::MIN_POSITIVE;
        for v in &mut cells.std {
            *v = v.max(floor);
        }
        self.meta.scoring.network_mut(network).positions = Some(cells);
        Ok(())
    }

    /// Measures how network `network`'s head map joins its error map: the centre and
    /// spread of each one's image scores over the images at `indices`.
    fn fit_head_join(
        &mut self,
        network: usize,
        set: &ImageSet,
        indices: &[usize],
        progress: &dyn Progress,
    ) -> Result<()> {
        let reduce = |m: &[f64]| {
            let m: Vec<f32> = m.iter().map(|&v| v as f32).collect();
            self.meta.scoring.reduction.apply(&m)
        };
        let (mut errors, mut heads) = (Vec::new(), Vec::new());
        progress.stage("head scale", indices.len() as u64);
        for chunk in indices.chunks(SCORE_BATCH) {
            let x = self.input_tensor(set.batch(chunk)?, chunk.len());
            let maps = self.standardised_maps(network, x);
            errors.extend(maps.errors.iter().map(|m| reduce(m)));
            heads.extend(maps.head.iter().flatten().map(|m| reduce(m)));
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        let (error_center, error_spread) = center_spread(&errors);
        let (head_center, head_spread) = center_spread(&heads);
        self.meta.scoring.network_mut(network).head = Some(file::HeadJoin {
            error_center,
            error_spread,
            head_center,
            head_spread,
        });
        Ok(())
    }

    /// Network `network`'s score parts and map of one image as a tiled model reads it:
    /// overlapping tiles (a batch of them in memory at a time) stitched into a map at the
    /// image's size, reduced to the score. With a head, its parts are the largest of any
    /// tile's.
    fn tiled_network(&self, network: usize, image: &ScaledImage) -> (ScoreParts, Vec<f32>) {
        let t = self.meta.prep.image_size;
        let channels = self.meta.prep.channels;
        let mut stitch = Stitch::new(image.width, image.height, t);
        let mut head_parts: Option<(f32, f32)> = None;
        let origins = tiles::origins(image.width, image.height, t);
        for batch in origins.chunks(SCORE_BATCH) {
            let mut input = Vec::with_capacity(batch.len() * self.meta.prep.len());
            for &(x, y) in batch {
                tiles::cut(image, channels, x, y, t, &mut input);
            }
            let m = self.map_scores(network, self.input_tensor(input, batch.len()));
            for (&(x, y), map) in batch.iter().zip(&m.maps) {
                stitch.add(x, y, map);
            }
            for (e, h) in m.head_parts.into_iter().flatten() {
                head_parts = Some(head_parts.map_or((e, h), |(a, b)| (a.max(e), b.max(h))));
            }
        }
        let mut map = stitch.finish();
        if let Some(p) = &self.meta.scoring.network_at(network).positions {
            p.standardise(&mut map, image.width, image.height);
        }
        let parts = ScoreParts {
            score: self.meta.scoring.reduction.apply(&map),
            knn_parts: None,
            head_parts,
        };
        (parts, map)
    }

    /// A tiled model's verdict, score parts and map (the networks' mean) of one image at
    /// its tiles' scale.
    fn score_scaled(&self, image: &ScaledImage) -> (Scored, Vec<f32>) {
        let k = self.networks.len();
        let mut per_network = Vec::with_capacity(k);
        let mut head_parts = Some((0.0f32, 0.0f32));
        let mut map = vec![0.0f32; image.width * image.height];
        for j in 0..k {
            let (parts, m) = self.tiled_network(j, image);
            per_network.push(parts.score);
            head_parts = match (head_parts, parts.head_parts) {
                (Some((a, b)), Some((e, h))) => Some((a + e / k as f32, b + h / k as f32)),
                _ => None,
            };
            map.iter_mut().zip(m).for_each(|(a, b)| *a += b / k as f32);
        }
        let scored = Scored {
            verdict: self.meta.calibration.verdict_of(&per_network),
            knn_parts: None,
            head_parts,
        };
        (scored, map)
    }

    /// Whether the model reads images in tiles at their own resolution.
    pub fn is_tiled(&self) -> bool {
        self.meta.prep.tiles.is_some()
    }

    /// Fails with [`TILED_CODES`] for a tiled model, whose codes are per tile: what every
    /// caller of per-image codes (encode, search, the service's `/encode`) checks first.
    pub fn check_codes(&self) -> Result<()> {
        match self.is_tiled() {
            true => Err(Error::Invalid(TILED_CODES.into())),
            false => Ok(()),
        }
    }

    /// Verdicts and anomaly maps of decoded images, for whole-image and tiled models alike:
    /// each map is at [`ImagePrep::map_size`] of its image.
    pub fn score_images(&self, images: &[DynamicImage]) -> (Vec<Verdict>, Vec<Vec<f32>>) {
        if self.is_tiled() {
            return images
                .iter()
                .map(|img| {
                    let (s, map) = self.score_scaled(&self.meta.prep.scaled(img));
                    (s.verdict, map)
                })
                .unzip();
        }
        let mut verdicts = Vec::with_capacity(images.len());
        let mut maps = Vec::with_capacity(images.len());
        for chunk in images.chunks(SCORE_BATCH) {
            let inputs = self.meta.prep.tensorize_all(chunk.par_iter());
            let (v, m) = self.score_inputs(inputs, chunk.len());
            verdicts.extend(v);
            maps.extend(m);
        }
        (verdicts, maps)
    }

    /// Verdicts and anomaly maps (smoothed, standardised when the model has pixel
    /// statistics; an ensemble's are its networks' means) of `n` prepared inputs
    /// (channel-major, concatenated). A tiled model reads each input as an image one tile
    /// in size; images at their own size go to [`Detector::score_images`].
    pub fn score_inputs(&self, inputs: Vec<f32>, n: usize) -> (Vec<Verdict>, Vec<Vec<f32>>) {
        let (scored, maps) = self.score_parts(inputs, n);
        (scored.into_iter().map(|s| s.verdict).collect(), maps)
    }

    /// Like [`Detector::score_inputs`], with each score's parts. A tiled model scores each
    /// input as an image one tile in size.
    fn score_parts(&self, inputs: Vec<f32>, n: usize) -> (Vec<Scored>, Vec<Vec<f32>>) {
        if self.is_tiled() {
            let s = self.meta.prep.image_size;
            return inputs
                .chunks(self.meta.prep.len())
                .map(|values| {
                    self.score_scaled(&ScaledImage {
                        values: values.to_vec(),
                        width: s,
                        height: s,
                    })
                })
                .unzip();
        }
        let x = self.input_tensor(inputs, n);
        let k = self.networks.len();
        let mut per_network = vec![0.0f32; n * k];
        let mut knn_parts: Vec<Option<(f32, f32)>> = vec![Some((0.0, 0.0)); n];
        let mut head_parts: Vec<Option<(f32, f32)>> = vec![Some((0.0, 0.0)); n];
        let mut maps: Vec<Vec<f32>> = Vec::new();
        // The mean over networks of a part every network has, else none.
        let add = |sum: Option<(f32, f32)>, part: Option<(f32, f32)>| match (sum, part) {
            (Some((a, b)), Some((pa, pb))) => Some((a + pa / k as f32, b + pb / k as f32)),
            _ => None,
        };
        for j in 0..k {
            let (parts, network_maps) = self.network_parts(j, x.clone());
            for (i, p) in parts.iter().enumerate() {
                per_network[i * k + j] = p.score;
                knn_parts[i] = add(knn_parts[i], p.knn_parts);
                head_parts[i] = add(head_parts[i], p.head_parts);
            }
            if j == 0 {
                maps = network_maps;
            } else {
                for (sum, m) in maps.iter_mut().zip(network_maps) {
                    sum.iter_mut().zip(m).for_each(|(a, b)| *a += b);
                }
            }
        }
        if k > 1 {
            for map in &mut maps {
                map.iter_mut().for_each(|v| *v /= k as f32);
            }
        }
        let cal = &self.meta.calibration;
        let scored = per_network
            .chunks(k)
            .zip(knn_parts)
            .zip(head_parts)
            .map(|((networks, knn_parts), head_parts)| Scored {
                verdict: cal.verdict_of(networks),
                knn_parts,
                head_parts,
            })
            .collect();
        (scored, maps)
    }

    /// Network `network`'s scores, with their parts, and anomaly maps of inputs `x`.
    fn network_parts(&self, network: usize, x: Tensor<4>) -> (Vec<ScoreParts>, Vec<Vec<f32>>) {
        let MapScores {
            scores,
            maps,
            codes,
            head_parts,
        } = self.map_scores(network, x);
        let head_parts = |i: usize| head_parts.as_ref().map(|p| p[i]);
        let parts = match &self.meta.scoring.network_at(network).knn {
            Some(knn) => {
                let codes: Vec<f32> = codes.into_data().try_into_vec().expect("f32 codes");
                let d = self.knn_distances(network, &codes, knn.k, &|_| None);
                scores
                    .into_iter()
                    .zip(d)
                    .enumerate()
                    .map(|(i, (m, d))| {
                        let zm = (m - knn.map_center) / knn.map_spread;
                        let zk = (d - knn.knn_center) / knn.knn_spread;
                        ScoreParts {
                            score: knn.join.of(zm, zk),
                            knn_parts: Some((zm, zk)),
                            head_parts: head_parts(i),
                        }
                    })
                    .collect()
            }
            None => scores
                .into_iter()
                .enumerate()
                .map(|(i, m)| ScoreParts {
                    score: m,
                    knn_parts: None,
                    head_parts: head_parts(i),
                })
                .collect(),
        };
        (parts, maps)
    }

    /// Decodes `paths` in batches and hands each batch of `(index, image)` to `each`, with
    /// progress under `stage`. A file that cannot be decoded stops the run, or with
    /// `skip_bad` is reported to `progress` and left out. Returns how many were skipped.
    fn decode_batches(
        paths: &[PathBuf],
        skip_bad: bool,
        stage: &str,
        progress: &dyn Progress,
        mut each: impl FnMut(Vec<(usize, DynamicImage)>) -> Result<()>,
    ) -> Result<usize> {
        let mut skipped = 0;
        progress.stage(stage, paths.len() as u64);
        for batch in batches_by_bytes(paths, SCORE_BATCH, BATCH_BYTES) {
            let chunk = &paths[batch.clone()];
            let decoded: Vec<Result<DynamicImage>> = chunk.par_iter().map(|p| decode(p)).collect();
            let mut ok = Vec::with_capacity(chunk.len());
            for (i, r) in decoded.into_iter().enumerate() {
                match r {
                    Ok(img) => ok.push((batch.start + i, img)),
                    Err(e) if skip_bad => {
                        progress.warn(&format!("skipped: {e}"));
                        skipped += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !ok.is_empty() {
                each(ok)?;
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        Ok(skipped)
    }

    /// The prepared network inputs of decoded images, concatenated.
    fn tensorize(&self, images: &[(usize, DynamicImage)]) -> Vec<f32> {
        self.meta
            .prep
            .tensorize_all(images.par_iter().map(|(_, img)| img))
    }

    /// Scores `paths` in batches (bounded memory whatever their number) and hands each
    /// result to `on_item` in input order. A file that cannot be decoded stops the run, or
    /// with `skip_bad` is reported to `progress` and left out. Returns how many were skipped.
    pub fn score_paths(
        &self,
        paths: &[PathBuf],
        skip_bad: bool,
        progress: &dyn Progress,
        mut on_item: impl FnMut(ScoredImage) -> Result<()>,
    ) -> Result<usize> {
        Self::decode_batches(paths, skip_bad, "scoring", progress, |ok| {
            for item in self.score_decoded(ok, |i| paths[i].clone()) {
                on_item(item)?;
            }
            Ok(())
        })
    }

    /// Scores decoded `(index, image)` pairs in one pass, in order; `path_of(index)` names
    /// each.
    fn score_decoded(
        &self,
        images: Vec<(usize, DynamicImage)>,
        path_of: impl Fn(usize) -> PathBuf,
    ) -> Vec<ScoredImage> {
        let (scored, maps): (Vec<Scored>, Vec<Vec<f32>>) = match self.is_tiled() {
            true => images
                .iter()
                .map(|(_, img)| self.score_scaled(&self.meta.prep.scaled(img)))
                .unzip(),
            false => self.score_parts(self.tensorize(&images), images.len()),
        };
        images
            .into_iter()
            .zip(scored)
            .zip(maps)
            .map(|(((index, image), s), map)| ScoredImage {
                index,
                path: path_of(index),
                score: s.verdict.score,
                knn_parts: s.knn_parts,
                head_parts: s.head_parts,
                p_value: s.verdict.p_value,
                is_anomaly: s.verdict.is_anomaly,
                map,
                image,
            })
            .collect()
    }

    /// Bottleneck codes of decoded `(index, image)` pairs, concatenated.
    fn encode_decoded(&self, images: &[(usize, DynamicImage)]) -> Vec<f32> {
        self.encode_inputs(self.tensorize(images), images.len())
    }

    /// Bottleneck codes of `n` prepared inputs (channel-major, concatenated, as
    /// [`ImagePrep::tensorize`] makes them), concatenated (`n x latent`).
    pub fn encode_inputs(&self, inputs: Vec<f32>, n: usize) -> Vec<f32> {
        self.model()
            .encode(self.input_tensor(inputs, n))
            .into_data()
            .try_into_vec()
            .expect("f32 codes")
    }

    /// Bottleneck codes of the images at `paths`, in batches: hands `(index, code)` to
    /// `on_item` in input order. Unreadable files as in [`Detector::score_paths`].
    pub fn encode_paths(
        &self,
        paths: &[PathBuf],
        skip_bad: bool,
        progress: &dyn Progress,
        mut on_item: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<usize> {
        let latent = self.meta.spec.latent;
        self.check_codes()?;
        Self::decode_batches(paths, skip_bad, "encoding", progress, |ok| {
            let codes = self.encode_decoded(&ok);
            for ((index, _), code) in ok.iter().zip(codes.chunks(latent)) {
                on_item(*index, code)?;
            }
            Ok(())
        })
    }

    /// `map` (at [`ImagePrep::map_size`] of `image`, as scoring returns it) resized to
    /// `image`'s size.
    fn full_map(&self, image: &DynamicImage, map: &[f32]) -> Vec<f32> {
        self.map_resized(image, map, image.width(), image.height())
    }

    /// `image`'s `map` (as scoring returns it) resized to `width x height`.
    pub fn map_resized(
        &self,
        image: &DynamicImage,
        map: &[f32],
        width: u32,
        height: u32,
    ) -> Vec<f32> {
        let size = self.meta.prep.map_size(image.width(), image.height());
        maps::resize_map(map, size, width, height)
    }

    /// The heatmap of a scored image: `image` at its own size with its anomaly `map` drawn
    /// over it (red where it looks wrong).
    pub fn heatmap(&self, image: &DynamicImage, map: &[f32]) -> image::RgbImage {
        maps::overlay(
            image,
            &self.full_map(image, map),
            self.meta.scoring.map_scale,
        )
    }

    /// Writes `item`'s heatmap overlay (`<rel>_heatmap.png`) and raw map at the image's own
    /// size (`<rel>_map.npy`) under `dir`, mirroring the input's relative path.
    pub fn write_maps(&self, dir: &Path, rel: &Path, item: &ScoredImage) -> Result<()> {
        let (w, h) = (item.image.width(), item.image.height());
        let full = self.full_map(&item.image, &item.map);
        maps::write_png(
            &maps::output_path(dir, rel, "_heatmap.png"),
            &maps::overlay(&item.image, &full, self.meta.scoring.map_scale),
        )?;
        maps::write_npy(&maps::output_path(dir, rel, "_map.npy"), &full, w, h)
    }

    /// The pixels of `item`'s map, resized to its decoded `mask`'s size (the image's own
    /// size for a normal image without one), against the mask, for [`metrics::aupro`].
    pub(crate) fn pro_pixels(
        &self,
        item: &ScoredImage,
        mask: Option<&DynamicImage>,
    ) -> metrics::ProPixels {
        let (labels, w, h) = match mask {
            Some(m) => {
                let mask = m.to_luma32f();
                let labels = mask.pixels().map(|p| p.0[0] >= 0.5).collect();
                (labels, mask.width(), mask.height())
            }
            None => {
                let (w, h) = (item.image.width(), item.image.height());
                (vec![false; w as usize * h as usize], w, h)
            }
        };
        let map = self.map_resized(&item.image, &item.map, w, h);
        metrics::ProPixels::new(&map, &labels, w as usize).expect("the map has the mask's size")
    }

    /// Scores the labelled test images of the MVTec-layout `root` and measures detection
    /// and, where masks exist, localisation.
    pub fn evaluate(&self, root: &Path, progress: &dyn Progress) -> Result<EvalReport> {
        let tests = test_images(root)?;
        let paths: Vec<PathBuf> = tests.iter().map(|t| t.path.clone()).collect();
        let s = self.meta.prep.image_size;
        let mut scores = vec![0.0f32; tests.len()];
        let mut flagged = vec![false; tests.len()];
        let mut by_reduction: Vec<[f32; 3]> = vec![[0.0; 3]; tests.len()];
        let reductions = [
            Reduction::Mean,
            Reduction::Max,
            Reduction::TopK { fraction: 0.01 },
        ];
        let mut knn_parts: Vec<Option<(f32, f32)>> = vec![None; tests.len()];
        let mut head_parts: Vec<Option<(f32, f32)>> = vec![None; tests.len()];
        let mut pixel_scores = Vec::new();
        let mut pixel_labels = Vec::new();
        let mut pixel_resolution = s;
        let any_mask = tests.iter().any(|t| t.mask.is_some());
        let mut pro_pixels = Vec::new();
        self.score_paths(&paths, false, progress, |item| {
            let t = &tests[item.index];
            scores[item.index] = item.score;
            flagged[item.index] = item.is_anomaly;
            for (k, r) in reductions.iter().enumerate() {
                by_reduction[item.index][k] = r.apply(&item.map);
            }
            knn_parts[item.index] = item.knn_parts;
            head_parts[item.index] = item.head_parts;
            if any_mask {
                // Each mask is decoded once: at the model's size for pixel AUROC, at its
                // own for AUPRO.
                let mask = t.mask.as_deref().map(decode).transpose()?;
                let (mw, mh) = self
                    .meta
                    .prep
                    .map_size(item.image.width(), item.image.height());
                pixel_resolution = pixel_resolution.max(mw.max(mh));
                let labels: Vec<bool> = match &mask {
                    Some(m) => {
                        let luma = m.to_luma32f();
                        let luma = match luma.dimensions() == (mw as u32, mh as u32) {
                            true => luma,
                            false => image::imageops::resize(
                                &luma,
                                mw as u32,
                                mh as u32,
                                image::imageops::FilterType::Triangle,
                            ),
                        };
                        luma.pixels().map(|p| p.0[0] >= 0.5).collect()
                    }
                    None => vec![false; mw * mh],
                };
                // Every defect pixel, and good pixels evenly thinned when the maps are
                // large (AUROC's estimate stays unbiased), so memory stays bounded.
                let stride = (mw * mh * tests.len()).div_ceil(PIXEL_AUROC_PIXELS).max(1) as u64;
                for (i, (&v, l)) in item.map.iter().zip(labels).enumerate() {
                    // A hash of (image, pixel), not every stride-th pixel, which would keep the
                    // same columns of a map whose width the stride divides (tile seams).
                    let h = ((item.index as u64) << 32 | i as u64)
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        >> 17;
                    if l || h.is_multiple_of(stride) {
                        pixel_scores.push(v);
                        pixel_labels.push(l);
                    }
                }
                pro_pixels.push(self.pro_pixels(&item, mask.as_ref()));
            }
            Ok(())
        })?;
        let labels: Vec<bool> = tests.iter().map(|t| t.anomalous).collect();
        let good: Vec<usize> = (0..tests.len()).filter(|&i| !labels[i]).collect();
        let false_alarms = good.iter().filter(|&&i| flagged[i]).count();
        let cls = metrics::classification(&flagged, &labels);
        let mut categories: Vec<String> = tests.iter().map(|t| t.category.clone()).collect();
        categories.dedup();
        let per_category = categories
            .iter()
            .map(|c| {
                let idx: Vec<usize> = (0..tests.len())
                    .filter(|&i| &tests[i].category == c)
                    .collect();
                let detected = idx.iter().filter(|&&i| flagged[i]).count();
                let auroc = if c == "good" {
                    None
                } else {
                    let sel: Vec<usize> = good.iter().chain(idx.iter()).copied().collect();
                    let sc: Vec<f32> = sel.iter().map(|&i| scores[i]).collect();
                    let lb: Vec<bool> = sel.iter().map(|&i| labels[i]).collect();
                    metrics::auroc(&sc, &lb)
                };
                CategoryReport {
                    category: c.clone(),
                    images: idx.len(),
                    flagged: detected,
                    image_auroc: auroc,
                }
            })
            .collect();
        let column = |k: usize| -> Vec<f32> { by_reduction.iter().map(|r| r[k]).collect() };
        Ok(EvalReport {
            images: tests.len(),
            anomalous_images: labels.iter().filter(|&&l| l).count(),
            image_auroc: metrics::auroc(&scores, &labels),
            image_aupr: metrics::average_precision(&scores, &labels),
            f1: cls.f1,
            precision: cls.precision,
            recall: cls.recall,
            threshold: self.meta.calibration.threshold,
            fpr_target: self.meta.calibration.effective_fpr,
            false_alarm_rate_good: if good.is_empty() {
                None
            } else {
                Some(false_alarms as f64 / good.len() as f64)
            },
            pixel_auroc: if any_mask {
                metrics::auroc(&pixel_scores, &pixel_labels)
            } else {
                None
            },
            head_parts: match head_parts.iter().all(Option::is_some) {
                true => {
                    let p: Vec<(f32, f32)> = head_parts.into_iter().flatten().collect();
                    let (error, head): (Vec<f32>, Vec<f32>) = p.into_iter().unzip();
                    Some(HeadAurocs {
                        error_only: metrics::auroc(&error, &labels),
                        head_only: metrics::auroc(&head, &labels),
                    })
                }
                false => None,
            },
            pixel_resolution,
            aupro: metrics::aupro(&pro_pixels, AUPRO_MAX_FPR),
            image_auroc_by_reduction: ReductionAurocs {
                mean: metrics::auroc(&column(0), &labels),
                max: metrics::auroc(&column(1), &labels),
                top1: metrics::auroc(&column(2), &labels),
            },
            knn_parts: if knn_parts.iter().all(Option::is_some) {
                let p: Vec<(f32, f32)> = knn_parts.into_iter().flatten().collect();
                let col =
                    |f: &dyn Fn(&(f32, f32)) -> f32| -> Vec<f32> { p.iter().map(f).collect() };
                Some(KnnAurocs {
                    map_only: metrics::auroc(&col(&|p| p.0), &labels),
                    knn_only: metrics::auroc(&col(&|p| p.1), &labels),
                    sum: metrics::auroc(&col(&|p| p.0 + p.1), &labels),
                    max: metrics::auroc(&col(&|p| file::KnnJoin::Max.of(p.0, p.1)), &labels),
                    log_sum_exp: metrics::auroc(
                        &col(&|p| file::KnnJoin::LogSumExp.of(p.0, p.1)),
                        &labels,
                    ),
                })
            } else {
                None
            },
            per_category,
        })
    }
}

/// Image AUROC had the image score been each reduction of the same maps.
#[derive(Debug, Clone, Serialize)]
pub struct ReductionAurocs {
    pub mean: Option<f64>,
    pub max: Option<f64>,
    pub top1: Option<f64>,
}

/// Image AUROC of each part of a map + nearest-neighbour score and of three ways to join them.
#[derive(Debug, Clone, Serialize)]
pub struct KnnAurocs {
    pub map_only: Option<f64>,
    pub knn_only: Option<f64>,
    pub sum: Option<f64>,
    pub max: Option<f64>,
    pub log_sum_exp: Option<f64>,
}

/// Detection results for one test category.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryReport {
    pub category: String,
    pub images: usize,
    /// Images flagged anomalous at the model's threshold.
    pub flagged: usize,
    /// AUROC of this category against `test/good` (none for `good` itself).
    pub image_auroc: Option<f64>,
}

/// Median and standard deviation of `v` (the spread floored away from zero).
pub(crate) fn center_spread(v: &[f32]) -> (f32, f32) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
    (median, var.sqrt().max(1e-6))
}

/// Image AUROC of each part of a map joined with a head's.
#[derive(Debug, Clone, Serialize)]
pub struct HeadAurocs {
    pub error_only: Option<f64>,
    pub head_only: Option<f64>,
}

/// What `eval` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub anomalous_images: usize,
    pub image_auroc: Option<f64>,
    pub image_aupr: Option<f64>,
    /// F1, precision and recall of `is_anomaly` at the model's threshold.
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub threshold: f32,
    /// The false-alarm rate the threshold was calibrated for.
    pub fpr_target: f64,
    /// Share of `test/good` flagged.
    pub false_alarm_rate_good: Option<f64>,
    /// Pixel AUROC against the ground-truth masks, at the maps' size (the model's input
    /// size, or a tiled model's image size with good pixels thinned evenly when there are
    /// many).
    pub pixel_auroc: Option<f64>,
    /// Longest side of the maps pixel AUROC was measured at.
    pub pixel_resolution: usize,
    /// Area under the per-region overlap curve up to a false-positive rate of 0.3, divided
    /// by 0.3 (MVTec AD's AUPRO), with maps resized to the masks' resolution.
    pub aupro: Option<f64>,
    pub image_auroc_by_reduction: ReductionAurocs,
    /// With a latent nearest-neighbour part: AUROC of each part and of their joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knn_parts: Option<KnnAurocs>,
    /// With a discriminative head: AUROC of the error part and of the head part alone
    /// (each the map's reduction; before any nearest-neighbour join).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_parts: Option<HeadAurocs>,
    pub per_category: Vec<CategoryReport>,
}

/// The folder that names of images found under `data` are relative to: `data` itself, or
/// for a single image file its folder.
pub fn names_base(data: &Path) -> PathBuf {
    if data.is_file() {
        data.parent().unwrap_or(Path::new("")).to_path_buf()
    } else {
        data.to_path_buf()
    }
}

/// Scores every image under `data` and writes `path,score,p_value,is_anomaly` rows (paths
/// relative to `data`) to `out_csv`, and heatmaps to `maps_dir` when given; each scored
/// image is also handed to `on_item` (a report, say), so one pass serves both. Returns the
/// number of rows written and of files skipped.
pub fn score_to_csv(
    detector: &Detector,
    data: &Path,
    out_csv: &Path,
    maps_dir: Option<&Path>,
    skip_bad: bool,
    progress: &dyn Progress,
    mut on_item: impl FnMut(&ScoredImage) -> Result<()>,
) -> Result<(usize, usize)> {
    let paths = find_images(data)?;
    let base = names_base(data);
    let mut rows = 0;
    let mut skipped = 0;
    crate::io::write_atomic(out_csv, |tmp| {
        let mut w = csv::Writer::from_path(tmp).map_err(|e| csv_error(tmp, e))?;
        w.write_record(["path", "score", "p_value", "is_anomaly"])
            .map_err(|e| csv_error(tmp, e))?;
        skipped = detector.score_paths(&paths, skip_bad, progress, |item| {
            let rel = item
                .path
                .strip_prefix(&base)
                .unwrap_or(&item.path)
                .to_path_buf();
            w.write_record([
                rel.to_string_lossy().as_ref(),
                &format!("{}", item.score),
                &format!("{}", item.p_value),
                if item.is_anomaly { "1" } else { "0" },
            ])
            .map_err(|e| csv_error(tmp, e))?;
            if let Some(dir) = maps_dir {
                detector.write_maps(dir, &rel, &item)?;
            }
            on_item(&item)?;
            rows += 1;
            Ok(())
        })?;
        w.flush().map_err(|e| Error::io(tmp, e))
    })?;
    Ok((rows, skipped))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{BoardConfig, generate_boards};

    #[test]
    fn default_sizes_can_be_halved_and_keep_small_images_native() {
        assert_eq!(default_image_size(28), 28);
        assert_eq!(default_image_size(64), 64);
        assert_eq!(default_image_size(100), 96);
        assert_eq!(default_image_size(1024), 128);
        assert_eq!(default_image_size(10), 16);
        for n in [9, 17, 28, 33, 64, 100, 127, 500] {
            let s = default_image_size(n);
            assert!(ConvSpec::for_image(1, s, None, None).is_ok(), "{n} -> {s}");
        }
    }

    #[test]
    fn small_single_networks_get_more_steps_for_the_same_pixels() {
        assert_eq!(default_steps(64, 1), TARGET_STEPS);
        assert_eq!(default_steps(128, 1), TARGET_STEPS);
        // 2,000 * 64^2 / 48^2 = 3,555.6: the same pixels, rounded down.
        assert_eq!(default_steps(48, 1), 3555);
        assert_eq!(default_steps(28, 1), MAX_TARGET_STEPS);
        assert_eq!(default_steps(28, 5), TARGET_STEPS);
    }
    use crate::progress::Silent;

    /// Score, p-value and map of each of `paths`, in order.
    fn scored_paths(d: &Detector, paths: &[PathBuf]) -> Vec<(f32, f64, Vec<f32>)> {
        let mut v = Vec::new();
        d.score_paths(paths, false, &Silent, |item| {
            v.push((item.score, item.p_value, item.map));
            Ok(())
        })
        .unwrap();
        v
    }

    /// Asserts that the model file `bytes` (of `file`) with its metadata changed by `edit`
    /// is refused on load with an error naming `field`.
    fn assert_refused(
        file: &Path,
        bytes: &[u8],
        edit: Box<dyn Fn(&mut serde_json::Value)>,
        field: &str,
        device: &Device,
    ) {
        let edited = file::rewrite_metadata(bytes, edit).unwrap();
        let e = Detector::from_bytes(file, edited, device).err().unwrap();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }

    /// 16 px boards under `root`: `train_good` good ones to train on, 4 good and one of each
    /// defect to test.
    fn small_boards(root: &Path, train_good: usize, seed: u64) {
        let cfg = BoardConfig {
            image_size: 16,
            train_good,
            test_good: 4,
            test_per_defect: 1,
            seed,
            defect_px: None,
        };
        generate_boards(root, &cfg).unwrap();
    }

    #[test]
    fn few_images_get_as_many_neighbours_as_they_have() {
        let root = std::env::temp_dir().join(format!("bn-detect-few-{}", std::process::id()));
        small_boards(&root, 8, 3);
        let device = Device::flex();
        let params = DetectParams {
            epochs: Some(1),
            width: Some(8),
            ..DetectParams::default()
        };
        // Two networks of 4 training images each: 3 neighbours, not the default 5.
        let det = Detector::fit(&root, &params, &device, &Silent).unwrap();
        assert_eq!(det.networks(), DEFAULT_IMAGE_FOLDS);
        let meta = det.meta();
        assert!(meta.training.latent_check.is_some(), "the check ran");
        for stats in meta.scoring.networks() {
            assert!(
                stats.knn.as_ref().is_none_or(|s| s.k == 3),
                "{:?}",
                stats.knn
            );
        }
        // A count the user asks for is not lowered: it fails, naming the setting.
        let asked = DetectParams {
            knn: Some(DEFAULT_KNN),
            ..params
        };
        let e = Detector::fit(&root, &asked, &device, &Silent)
            .err()
            .unwrap();
        assert!(e.to_string().contains("knn 5 needs more than 5"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn model_file_round_trip_keeps_every_score_and_calibration_holds() {
        let root = std::env::temp_dir().join(format!("bn-detect-{}", std::process::id()));
        small_boards(&root, 30, 4);
        let params = DetectParams {
            epochs: Some(2),
            width: Some(8),
            folds: Some(1),
            calibration_fraction: 0.3,
            knn: Some(3),
            ..DetectParams::default()
        };
        let device = Device::flex();
        let det = Detector::fit(&root, &params, &device, &Silent).unwrap();
        assert_eq!(det.networks(), 1);
        let meta = det.meta();
        assert_eq!(meta.training.calibration_samples, 9);
        assert_eq!(meta.calibration.scores.len(), 9);
        assert_eq!(meta.scoring.network.pixel_mean.len(), 16 * 16);
        assert_eq!(meta.scoring.network.knn.as_ref().unwrap().codes, 21);
        // With 9 calibration scores the smallest p-value is 1/10 > fpr 0.01: the bound is
        // widened to 0.1 and only scores above every calibration score are flagged.
        assert_eq!(meta.calibration.effective_fpr, 0.1);
        let top = *meta.calibration.scores.last().unwrap();
        assert!(!meta.calibration.is_anomaly(top));
        assert!(meta.calibration.is_anomaly(top + 1e-3));
        assert_eq!(meta.calibration.p_value(top), 0.2);
        assert_eq!(meta.calibration.p_value(top + 1e-3), 0.1);

        let paths = find_images(&root.join("test")).unwrap();
        let collect = |d: &Detector| scored_paths(d, &paths);
        let before = collect(&det);
        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        let loaded = Detector::load(&file, &device).unwrap();
        assert_eq!(loaded.meta(), det.meta());
        let after = collect(&loaded);
        assert_eq!(before.len(), paths.len());
        assert_eq!(before, after, "scores change after a save/load round trip");

        // The parts join by log-sum-exp, which only version 3 files hold. A file from
        // before the join (version 1, no `join`) loads and scores by the larger part.
        let knn = meta.scoring.network.knn.as_ref().unwrap();
        assert_eq!(knn.join, file::KnnJoin::LogSumExp);
        assert_eq!(meta.format_version, file::KNN_JOIN_FORMAT_VERSION);
        let bytes = std::fs::read(&file).unwrap();
        let old = |m: &mut serde_json::Value| m["format_version"] = 1.into();
        assert_refused(&file, &bytes, Box::new(old), "format_version", &device);
        let legacy = file::rewrite_metadata(
            &bytes,
            Box::new(|m: &mut serde_json::Value| {
                m["format_version"] = 1.into();
                m["scoring"]["knn"].as_object_mut().unwrap().remove("join");
            }),
        )
        .unwrap();
        let legacy = Detector::from_bytes(&file, legacy, &device).unwrap();
        let parts = |d: &Detector| {
            let mut v = Vec::new();
            d.score_paths(&paths, false, &Silent, |item| {
                v.push((item.score, item.knn_parts.unwrap()));
                Ok(())
            })
            .unwrap();
            v
        };
        for ((joined, p), (larger, q)) in parts(&det).into_iter().zip(parts(&legacy)) {
            assert_eq!(p, q, "the parts do not depend on the join");
            assert_eq!(larger, p.0.max(p.1));
            let exact = (p.0 as f64).exp() + (p.1 as f64).exp();
            let tolerance = 1e-5 * (joined.abs() as f64).max(1.0);
            assert!(
                (joined as f64 - exact.ln()).abs() < tolerance,
                "{joined} for {p:?}"
            );
            assert!(joined >= larger && joined <= larger + 2f32.ln() + 1e-6);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn latent_check_decides_the_knn_part_and_the_file_holds_it() {
        // The bar: chance plus 2.326 standard errors of the AUROC of a part that sees
        // nothing, sqrt((n1 + n2 + 1) / (12 n1 n2)).
        let c = file::LatentCheck::new(100, 100, 0.59);
        let bar = 0.5 + 2.326 * (201.0f64 / 120_000.0).sqrt();
        assert!((c.bar - bar).abs() < 1e-12, "{}", c.bar);
        assert!(!c.kept, "0.59 is under {bar}");
        assert!(file::LatentCheck::new(100, 100, 0.60).kept);
        assert!(file::LatentCheck::new(10_000, 10_000, 0.54).kept);
        assert_eq!(file::LatentCheck::bar(5, 0), 1.0);

        let root = std::env::temp_dir().join(format!("bn-latent-{}", std::process::id()));
        small_boards(&root, 30, 5);
        let params = DetectParams {
            epochs: Some(2),
            width: Some(8),
            folds: Some(1),
            calibration_fraction: 0.3,
            ..DetectParams::default()
        };
        let device = Device::flex();
        let det = Detector::fit(&root, &params, &device, &Silent).unwrap();
        let meta = det.meta();
        let check = meta
            .training
            .latent_check
            .clone()
            .expect("checked by default");
        // Every one of the 21 training images clean, and those a defect was drawn on.
        assert_eq!(check.clean, 21);
        assert!(check.defective > 10 && check.defective <= 21, "{check:?}");
        assert!((0.0..=1.0).contains(&check.auroc));
        assert_eq!(
            check.bar,
            file::LatentCheck::bar(check.clean, check.defective)
        );
        assert_eq!(check.kept, check.auroc >= check.bar);
        assert_eq!(meta.scoring.network.knn.is_some(), check.kept);
        assert_eq!(det.networks[0].codes.is_some(), check.kept);
        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        assert_eq!(Detector::load(&file, &device).unwrap().meta(), meta);
        let bytes = std::fs::read(&file).unwrap();
        // An AUROC on the other side of the bar from the verdict.
        let contradicted = |m: &mut serde_json::Value| {
            let kept = m["training"]["latent_check"]["kept"].as_bool().unwrap();
            m["training"]["latent_check"]["auroc"] = if kept { 0.0 } else { 1.0 }.into();
        };
        assert_refused(
            &file,
            &bytes,
            Box::new(contradicted),
            "latent_check.kept",
            &device,
        );

        // A given `knn` is kept without a check; a file whose check dropped the part
        // while it still has one is refused.
        let given = DetectParams {
            knn: Some(3),
            ..params
        };
        let det = Detector::fit(&root, &given, &device, &Silent).unwrap();
        assert_eq!(det.meta().training.latent_check, None);
        assert!(det.meta().scoring.network.knn.is_some());
        det.save(&file).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let dropped = |m: &mut serde_json::Value| {
            m["training"]["latent_check"] = serde_json::json!({
                "clean": 21, "defective": 20, "auroc": 0.5, "bar": 0.9, "kept": false
            });
        };
        assert_refused(&file, &bytes, Box::new(dropped), "knn", &device);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn ensemble_calibrates_every_image_out_of_fold_and_survives_the_file() {
        let root = std::env::temp_dir().join(format!("bn-detect-folds-{}", std::process::id()));
        small_boards(&root, 24, 5);
        let device = Device::flex();
        let params = DetectParams {
            epochs: Some(2),
            width: Some(8),
            knn: Some(2),
            fpr: 0.1,
            ..DetectParams::default()
        };
        // 24 images are few enough for the default ensemble. Its networks train side by
        // side on a pool of three threads, one after another on a pool of one.
        let fit_on = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| Detector::fit(&root, &params, &device, &Silent))
                .unwrap()
        };
        let det = fit_on(3);
        let turns = fit_on(1);
        assert_eq!(det.networks(), DEFAULT_IMAGE_FOLDS);
        let meta = det.meta();
        let cal = &meta.calibration;
        assert_eq!(cal.folds.len(), det.networks());
        assert_eq!(cal.scores.len(), 24, "every image calibrates once");
        assert_eq!(meta.training.calibration_samples, 24);
        assert_eq!(meta.scoring.ensemble.len(), det.networks() - 1);
        for (j, stats) in meta.scoring.networks().enumerate() {
            // Each network's codes are the images it trained on: all but its fold.
            let codes = stats.knn.as_ref().unwrap().codes;
            assert_eq!(codes, 24 - cal.folds[j].len(), "network {j}");
            assert_eq!(stats.pixel_mean.len(), 16 * 16);
        }
        // The networks differ (own folds, own seeds), so an image's score is their mean
        // and its p-value counts each fold against its own network's score.
        let paths = find_images(&root.join("test")).unwrap();
        let images: Vec<DynamicImage> = paths.iter().map(|p| decode(p).unwrap()).collect();
        let inputs: Vec<f32> = images.iter().flat_map(|i| meta.prep.tensorize(i)).collect();
        let (verdicts, maps) = det.score_inputs(inputs.clone(), images.len());
        let per_network: Vec<Vec<f32>> = (0..det.networks())
            .map(|j| {
                let x = det.input_tensor(inputs.clone(), images.len());
                det.network_parts(j, x).0.iter().map(|p| p.score).collect()
            })
            .collect();
        assert_ne!(per_network[0], per_network[1]);
        // Side by side or in turn, the same networks bit for bit.
        let timeless = |d: &Detector| {
            let mut meta = d.meta().clone();
            meta.training.seconds = 0.0;
            meta
        };
        assert_eq!(timeless(&turns), timeless(&det));
        assert_eq!(
            turns.score_inputs(inputs.clone(), images.len()),
            (verdicts.clone(), maps.clone())
        );
        for (i, v) in verdicts.iter().enumerate() {
            let networks: Vec<f32> = per_network.iter().map(|s| s[i]).collect();
            let mean = networks.iter().sum::<f32>() / networks.len() as f32;
            assert!((v.score - mean).abs() <= 1e-5 * mean.abs().max(1.0));
            let at_or_above: usize = cal
                .folds
                .iter()
                .zip(&networks)
                .map(|(fold, &s)| fold.iter().filter(|&&c| c >= s).count())
                .sum();
            assert_eq!(v.p_value, (1 + at_or_above) as f64 / 25.0, "image {i}");
            assert_eq!(maps[i].len(), 16 * 16);
        }
        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        let loaded = Detector::load(&file, &device).unwrap();
        assert_eq!(loaded.meta(), det.meta());
        assert_eq!(loaded.networks(), det.networks());
        let (again, maps_again) = loaded.score_inputs(inputs, images.len());
        assert_eq!(
            again, verdicts,
            "verdicts change after a save/load round trip"
        );
        assert_eq!(maps_again, maps);
        // A file whose networks and folds disagree is refused by name before loading.
        let bytes = std::fs::read(&file).unwrap();
        let edited = file::rewrite_metadata(&bytes, |m| {
            m["scoring"]["ensemble"].as_array_mut().unwrap().pop();
        })
        .unwrap();
        let e = Detector::from_bytes(&file, edited, &device).err().unwrap();
        assert!(e.to_string().contains("scoring.ensemble"), "{e}");
        // So is one whose networks join their parts in different ways.
        let edited = file::rewrite_metadata(&bytes, |m| {
            m["scoring"]["ensemble"][0]["knn"]["join"] = "max".into();
        })
        .unwrap();
        let e = Detector::from_bytes(&file, edited, &device).err().unwrap();
        assert!(e.to_string().contains("knn.join"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn head_joins_the_error_map_and_survives_the_file() {
        let root = std::env::temp_dir().join(format!("bn-detect-head-{}", std::process::id()));
        small_boards(&root, 24, 6);
        let device = Device::flex();
        let params = DetectParams {
            epochs: Some(3),
            width: Some(8),
            folds: Some(1),
            knn: Some(0),
            fpr: 0.2,
            head: Head::Segment,
            ..DetectParams::default()
        };
        let det = Detector::fit(&root, &params, &device, &Silent).unwrap();
        let meta = det.meta();
        assert_eq!(meta.head, Some(SegmentSpec::for_image(3, 16)));
        let join = meta.scoring.network.head.clone().expect("a head join");
        assert!(
            join.error_spread > 0.0 && join.head_spread > 0.0,
            "{join:?}"
        );
        let paths = find_images(&root.join("test")).unwrap();
        let images: Vec<DynamicImage> = paths.iter().map(|p| decode(p).unwrap()).collect();
        let n = images.len();
        let inputs: Vec<f32> = images.iter().flat_map(|i| meta.prep.tensorize(i)).collect();
        let (verdicts, maps) = det.score_inputs(inputs.clone(), n);
        // The map is, pixel by pixel, the larger of the two parts on their own scales, and
        // the (max-reduced) score is its largest value.
        let parts = det.standardised_maps(0, det.input_tensor(inputs.clone(), n));
        let heads = parts.head.expect("head maps");
        for i in 0..n {
            let e = &parts.errors[i];
            let h = &heads[i];
            let z_error = (e[7] - join.error_center as f64) / join.error_spread as f64;
            let z_head = (h[7] - join.head_center as f64) / join.head_spread as f64;
            assert!((maps[i][7] as f64 - z_error.max(z_head)).abs() < 1e-5);
            assert!(h.iter().all(|p| (0.0..=1.0).contains(p)), "probabilities");
            let top = maps[i].iter().copied().fold(f32::MIN, f32::max);
            assert_eq!(verdicts[i].score, top);
        }
        // Eval's parts: with the max reduction the score is the larger of the two.
        let (scored, _) = det.score_parts(inputs.clone(), n);
        for (s, v) in scored.iter().zip(&verdicts) {
            let (error, head) = s.head_parts.expect("head parts");
            assert!((v.score - error.max(head)).abs() <= 1e-5 * v.score.abs().max(1.0));
        }
        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        let loaded = Detector::load(&file, &device).unwrap();
        assert_eq!(loaded.meta(), det.meta());
        let (again, maps_again) = loaded.score_inputs(inputs, n);
        assert_eq!(
            again, verdicts,
            "verdicts change after a save/load round trip"
        );
        assert_eq!(maps_again, maps);
        // A head that cannot halve the image, or a network without its join, is refused
        // by name before anything is allocated.
        let bytes = std::fs::read(&file).unwrap();
        for (edit, field) in [
            (
                Box::new(|m: &mut serde_json::Value| m["head"]["levels"] = 9.into())
                    as Box<dyn Fn(&mut serde_json::Value)>,
                "head.levels",
            ),
            (
                Box::new(|m: &mut serde_json::Value| {
                    m["scoring"].as_object_mut().unwrap().remove("head");
                }),
                "head",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["head"]["channels"] = 1.into()),
                "head.channels",
            ),
        ] {
            assert_refused(&file, &bytes, edit, field, &device);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tiles_read_images_at_their_own_size_and_survive_the_file() {
        let root = std::env::temp_dir().join(format!("bn-detect-tiles-{}", std::process::id()));
        let cfg = BoardConfig {
            image_size: 48,
            train_good: 12,
            test_good: 2,
            test_per_defect: 1,
            seed: 8,
            defect_px: Some((3.0, 5.0)),
        };
        generate_boards(&root, &cfg).unwrap();
        let device = Device::flex();
        let params = DetectParams {
            tile: Some(16),
            epochs: Some(2),
            width: Some(8),
            folds: Some(1),
            fpr: 0.2,
            ..DetectParams::default()
        };
        let det = Detector::fit(&root, &params, &device, &Silent).unwrap();
        let meta = det.meta();
        assert_eq!(meta.prep.tiles, Some(Tiles { scale: 1.0 }));
        assert_eq!(meta.format_version, file::TILED_FORMAT_VERSION);
        assert_eq!((meta.prep.image_size, meta.spec.image_size), (16, 16));
        // Statistics per position in a tile; no nearest-neighbour part (codes are per tile).
        assert_eq!(meta.scoring.network.pixel_mean.len(), 16 * 16);
        assert!(meta.scoring.network.knn.is_none());
        // The boards share one size: statistics over positions in the image, a cell a pixel
        // (48 px is under POSITION_CELLS).
        let positions = meta.scoring.network.positions.as_ref().expect("positions");
        assert_eq!((positions.width, positions.height), (48, 48));
        assert_eq!(positions.std.len(), 48 * 48);
        assert!(positions.std.iter().all(|&v| v > 0.0));
        // Each training image gives its crops (18 cover a 48 px image twice in 16 px tiles).
        let per_image = tiles::crops_per_image(48, 48, 16);
        assert_eq!(per_image, 18);
        assert_eq!(meta.training.train_samples, 10 * per_image);
        assert_eq!(meta.calibration.scores.len(), 2);

        let paths = find_images(&root.join("test")).unwrap();
        let images: Vec<DynamicImage> = paths.iter().map(|p| decode(p).unwrap()).collect();
        let collect = |d: &Detector| scored_paths(d, &paths);
        let scored = collect(&det);
        for (score, _, map) in &scored {
            // The map is at the image's own size and the score is its largest value.
            assert_eq!(map.len(), 48 * 48);
            assert_eq!(*score, map.iter().copied().fold(f32::MIN, f32::max));
        }
        let (verdicts, maps) = det.score_images(&images);
        for ((v, m), (score, p, map)) in verdicts.iter().zip(&maps).zip(&scored) {
            assert_eq!((v.score, v.p_value, m), (*score, *p, map));
        }
        // An image of one tile is that tile's map, unchanged by stitching, standardised by
        // position.
        let small = images[0].crop_imm(5, 9, 16, 16);
        let (_, one) = det.score_images(std::slice::from_ref(&small));
        let x = det.input_tensor(meta.prep.tensorize(&small), 1);
        let mut want = det.map_scores(0, x).maps[0].clone();
        positions.standardise(&mut want, 16, 16);
        assert_eq!(one[0], want);
        // The heatmap comes at the image's size.
        assert_eq!(det.heatmap(&images[0], &maps[0]).dimensions(), (48, 48));

        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        let loaded = Detector::load(&file, &device).unwrap();
        assert_eq!(loaded.meta(), det.meta());
        assert_eq!(
            collect(&loaded),
            scored,
            "scores change after a save/load round trip"
        );
        // Codes are per tile: encoding images is refused by name.
        let e = loaded
            .encode_paths(&paths, false, &Silent, |_, _| Ok(()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("tile"), "{e}");
        // A scale outside (0, 1], or a nearest-neighbour part, is refused by field.
        let bytes = std::fs::read(&file).unwrap();
        for (edit, field) in [
            (
                Box::new(|m: &mut serde_json::Value| m["prep"]["tiles"]["scale"] = 0.into())
                    as Box<dyn Fn(&mut serde_json::Value)>,
                "prep.tiles.scale",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["prep"]["tiles"]["scale"] = 3.into()),
                "prep.tiles.scale",
            ),
            (
                Box::new(|m: &mut serde_json::Value| {
                    m["scoring"]["positions"]["std"][3] = (-1.0).into()
                }),
                "positions.std",
            ),
            (
                // Tiled files are version 2, so binaries from before tiles refuse them.
                Box::new(|m: &mut serde_json::Value| m["format_version"] = 1.into()),
                "format_version",
            ),
            (
                Box::new(|m: &mut serde_json::Value| m["scoring"]["positions"]["width"] = 5.into()),
                "positions.mean",
            ),
            (
                Box::new(|m: &mut serde_json::Value| {
                    m["scoring"]["knn"] = serde_json::json!({
                        "k": 1, "codes": 2, "map_center": 0.0, "map_spread": 1.0,
                        "knn_center": 0.0, "knn_spread": 1.0
                    })
                }),
                "knn",
            ),
        ] {
            assert_refused(&file, &bytes, edit, field, &device);
        }

        // At half scale the map is at half the image's size.
        let half = DetectParams {
            scale: Some(0.5),
            ..params.clone()
        };
        let det = Detector::fit(&root, &half, &device, &Silent).unwrap();
        let (_, maps) = det.score_images(&images[..1]);
        assert_eq!(maps[0].len(), 24 * 24);
        assert_eq!(det.heatmap(&images[0], &maps[0]).dimensions(), (48, 48));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn tile_settings_that_cannot_work_fail_before_any_image_is_read() {
        let missing = Path::new("/nonexistent/bottleneck-tiles");
        for (params, field) in [
            (
                DetectParams {
                    scale: Some(0.5),
                    image_size: Some(64),
                    ..DetectParams::default()
                },
                "scale",
            ),
            (
                DetectParams {
                    tile: Some(64),
                    scale: Some(1.5),
                    ..DetectParams::default()
                },
                "scale",
            ),
            (
                DetectParams {
                    tile: Some(64),
                    image_size: Some(128),
                    ..DetectParams::default()
                },
                "tile",
            ),
        ] {
            let e = Detector::fit(missing, &params, &Device::flex(), &Silent)
                .err()
                .unwrap();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }
}
