//! Machine sounds: the DCASE baseline's recipe. Recordings become log-mel frames (mono, at
//! the model's sample rate), a few consecutive frames are stacked into one input, a dense
//! autoencoder learns them from normal recordings, and a recording's score is the mean
//! reconstruction error of its inputs. Held-out normal recordings calibrate the threshold
//! (split-conformal, as for images and tables), and a time-frequency error image shows
//! where a recording sounds wrong.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::Serialize;

use crate::data::audio::{Audio, SILENCE_LEVEL, find_audio, most_common_rate};
use crate::data::images::training_folder;
use crate::data::mvtec::label_in_test_folder;
use crate::data::spectral::{LogMel, MelSpec};
use crate::error::{Error, Result};
use crate::metrics;
use crate::model::file::{
    self, AudioFeatures, AudioMeta, AudioScoring, BandNormalized, DenseWeights, FORMAT_VERSION,
    ModelKind, TrainingSummary,
};
use crate::model::{DenseAutoencoder, DenseSpec};
use crate::progress::Progress;
use crate::score::Reduction;
use crate::score::calibration::{CalibrationPlan, Split};
use crate::task::detect::center_spread;
use crate::train::DenseTrainOptions;
use crate::train::dense::{Batch, DenseOutput, train_dense_batches};

/// Everything [`AudioDetector::fit`] can be told; [`Default`] is the DCASE baseline's setup.
/// As JSON (the Python package's form), any field left out keeps its default and an unknown
/// one is refused.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioParams {
    /// Sample rate of the model [default: the most common rate of the training files].
    pub sample_rate: Option<u32>,
    pub n_fft: usize,
    pub hop: usize,
    pub n_mels: usize,
    /// Consecutive frames stacked into one input.
    pub context: usize,
    pub latent: usize,
    pub hidden: Vec<usize>,
    pub batch_norm: bool,
    /// Passes over the training inputs [default: about 2,000 optimizer steps, 10 to 100].
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub fpr: f64,
    pub contamination: Option<f64>,
    /// Share of the training recordings held out to calibrate the threshold.
    pub calibration_fraction: f64,
    /// A recording's score from its inputs' errors.
    pub reduction: Reduction,
    /// Join the plain error with the band-normalised one (see [`BandNormalized`]).
    pub band_normalize: bool,
    /// Leave out unreadable files with a warning instead of stopping.
    pub skip_bad: bool,
}

impl Default for AudioParams {
    fn default() -> Self {
        Self {
            sample_rate: None,
            n_fft: 1024,
            hop: 512,
            n_mels: 128,
            context: 5,
            latent: 8,
            hidden: vec![128, 128, 128, 128],
            batch_norm: true,
            epochs: None,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 42,
            fpr: 0.01,
            contamination: None,
            calibration_fraction: 0.15,
            reduction: Reduction::Mean,
            band_normalize: true,
            skip_bad: false,
        }
    }
}

impl AudioParams {
    /// Checks the settings that do not depend on the data, before any work; returns the
    /// calibration plan. Errors name the field.
    pub fn check(&self) -> Result<CalibrationPlan> {
        let plan = CalibrationPlan::new(self.fpr, self.contamination, self.calibration_fraction)?;
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("hop", self.hop),
            ("n_mels", self.n_mels),
            ("context", self.context),
            ("latent", self.latent),
        ] {
            if v == 0 {
                return Err(Error::param(field, "must be at least 1"));
            }
        }
        if self.epochs == Some(0) {
            return Err(Error::param("epochs", "must be at least 1"));
        }
        if self.hidden.contains(&0) {
            return Err(Error::param("hidden", "layer widths must be at least 1"));
        }
        if let Some(rate) = self.sample_rate {
            crate::data::audio::check_sample_rate(rate)?;
        }
        // The same bounds a model file is held to.
        check_stft(self.n_fft, self.hop, self.context).map_err(Error::Invalid)?;
        Ok(plan)
    }

    /// The log-mel settings at `sample_rate`.
    fn mel_spec(&self, sample_rate: u32) -> MelSpec {
        MelSpec {
            sample_rate,
            n_fft: self.n_fft,
            hop: self.hop,
            n_mels: self.n_mels,
            fmin: 0.0,
            fmax: None,
        }
    }
}

/// Measured with bench/machines.sh (seed 7): 2,000 steps (50 passes there) against 4,000
/// gave AUROC 0.975 / 0.888 against 0.969 / 0.877 at fault severities 0.3 / 0.15, pAUC
/// 0.948 / 0.865 against 0.927 / 0.806, in half the time; 1,000 steps gave 0.966 / 0.885.
const TARGET_STEPS: usize = 2000;
const MIN_EPOCHS: usize = 10;
const MAX_EPOCHS: usize = 100;
/// Inputs run through the network at a time when scoring.
const CHUNK_INPUTS: usize = 2048;
/// Bands' spread is floored at this many dB: a band that never changes in training (a
/// band-limited recording) would otherwise make any sound there an enormous error.
const MIN_BAND_STD_DB: f32 = 1.0;

/// Why a recording was not scored.
#[derive(Debug, Clone, PartialEq)]
pub enum Unscored {
    /// Every sample is (nearly) zero.
    Silent,
    /// Shorter than one input's worth of frames.
    TooShort { seconds: f64, needed: f64 },
}

impl std::fmt::Display for Unscored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unscored::Silent => write!(f, "silent (every sample below -84 dBFS)"),
            Unscored::TooShort { seconds, needed } => {
                write!(
                    f,
                    "too short ({seconds:.3} s; the model needs {needed:.3} s)"
                )
            }
        }
    }
}

/// A recording as the detector reads it: standardised log-mel frames, or why it cannot be
/// scored.
type Frames = std::result::Result<Vec<f32>, Unscored>;

/// One scored recording.
#[derive(Debug, Clone)]
pub struct ScoredClip {
    pub path: PathBuf,
    pub seconds: f64,
    /// `None` with the reason when the recording could not be scored.
    pub result: std::result::Result<ClipScore, Unscored>,
}

/// The score of a recording and its time-frequency error map.
#[derive(Debug, Clone)]
pub struct ClipScore {
    pub score: f32,
    pub p_value: f64,
    pub is_anomaly: bool,
    /// The plain and band-normalised parts of the score on their common scale (the plain
    /// error alone for a model without the second part).
    pub parts: (f32, Option<f32>),
    /// Frames of the map (its width).
    pub frames: usize,
    /// Mean squared error of each (frame, band), `frames x n_mels`, frame-major.
    pub map: Vec<f32>,
}

/// A trained audio anomaly detector.
pub struct AudioDetector {
    pub(crate) model: DenseAutoencoder,
    meta: AudioMeta,
    logmel: LogMel,
    device: Device,
}

/// Log-mel frames (dB, `frames x n_mels`) of `audio` mixed to mono at the rate of `logmel`,
/// or why the recording cannot be used with `context` frames per input.
fn log_mel_frames(logmel: &LogMel, audio: &Audio, context: usize) -> Result<Frames> {
    let spec = logmel.spec();
    if audio.is_silent(SILENCE_LEVEL) {
        return Ok(Err(Unscored::Silent));
    }
    let audio = audio.resampled(spec.sample_rate)?;
    let mono = audio.mono();
    let frames = 1 + mono.len() / spec.hop;
    if frames < context {
        return Ok(Err(Unscored::TooShort {
            seconds: audio.seconds(),
            needed: ((context - 1) * spec.hop) as f64 / spec.sample_rate as f64,
        }));
    }
    Ok(Ok(logmel.compute(&mono)))
}

/// Mean and spread (floored) of each band over the frames of `clips`.
fn band_statistics(clips: &[&Vec<f32>], n_mels: usize) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; n_mels];
    let mut sum_sq = vec![0f64; n_mels];
    let mut n = 0f64;
    for clip in clips {
        for frame in clip.chunks(n_mels) {
            for (b, &v) in frame.iter().enumerate() {
                sum[b] += v as f64;
                sum_sq[b] += (v as f64) * (v as f64);
            }
            n += 1.0;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let std = sum_sq
        .iter()
        .zip(&sum)
        .map(|(sq, s)| {
            let m = s / n;
            ((sq / n - m * m).max(0.0).sqrt() as f32).max(MIN_BAND_STD_DB)
        })
        .collect();
    (mean, std)
}

impl AudioDetector {
    /// Trains on the WAV files under `data` (or its `train/good` in the MVTec layout), holds
    /// out `calibration_fraction` of the recordings and calibrates the threshold. Silent and
    /// too-short recordings are left out with a warning; unreadable ones stop training
    /// (named) unless `skip_bad`. Settings that cannot work fail before any training.
    pub fn fit(
        data: &Path,
        params: &AudioParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        let folder = training_folder(data);
        let paths = find_audio(&folder)?;
        let sample_rate = match params.sample_rate {
            Some(r) => r,
            None => most_common_rate(&paths, params.skip_bad)?,
        };
        let logmel = LogMel::new(&params.mel_spec(sample_rate));
        progress.stage("reading recordings", paths.len() as u64);
        let mut clips = Vec::new();
        let mut left_out = Vec::new();
        for path in &paths {
            let audio = match Audio::read(path) {
                Ok(a) => a,
                Err(e) if params.skip_bad => {
                    left_out.push(e.to_string());
                    progress.advance(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match log_mel_frames(&logmel, &audio, params.context)? {
                Ok(frames) => clips.push(frames),
                Err(why) => left_out.push(format!("{}: {why}", path.display())),
            }
            progress.advance(1);
        }
        progress.finish();
        let source = folder.display().to_string();
        let mut this = Self::fit_frames(
            clips, left_out, logmel, &source, params, &plan, device, progress,
        )?;
        this.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(this)
    }

    /// Trains on recordings in memory, as [`AudioDetector::fit`] does on files; silent and
    /// too-short ones are left out with a warning naming their index (from 0).
    pub fn fit_clips(
        recordings: &[Audio],
        params: &AudioParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        let sample_rate = match params.sample_rate {
            Some(r) => r,
            None => crate::data::audio::most_common_rate_of(recordings)
                .ok_or_else(|| Error::Invalid("no recordings to train on".into()))?,
        };
        let logmel = LogMel::new(&params.mel_spec(sample_rate));
        let mut clips = Vec::new();
        let mut left_out = Vec::new();
        for (i, audio) in recordings.iter().enumerate() {
            match log_mel_frames(&logmel, audio, params.context)? {
                Ok(frames) => clips.push(frames),
                Err(why) => left_out.push(format!("recording {i}: {why}")),
            }
        }
        let mut this = Self::fit_frames(
            clips,
            left_out,
            logmel,
            "the recordings",
            params,
            &plan,
            device,
            progress,
        )?;
        this.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(this)
    }

    /// Trains on the log-mel frames of usable recordings (`left_out` says why others were
    /// not used), holds out the plan's share of them and calibrates.
    #[allow(clippy::too_many_arguments)]
    fn fit_frames(
        mut clips: Vec<Vec<f32>>,
        left_out: Vec<String>,
        logmel: LogMel,
        source: &str,
        params: &AudioParams,
        plan: &CalibrationPlan,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        warn_left_out(progress, &left_out);
        let mel = logmel.spec().clone();
        let n = clips.len();
        if n < 2 {
            return Err(Error::Invalid(format!(
                "{source}: {n} usable recording; need at least 2 (one to train on, one to \
                 calibrate)"
            )));
        }
        let Split {
            calibration: cal_idx,
            training: train_idx,
        } = plan.split(n, params.seed);
        let train_clips: Vec<&Vec<f32>> = train_idx.iter().map(|&i| &clips[i]).collect();
        let (band_mean, band_std) = band_statistics(&train_clips, params.n_mels);
        let features = AudioFeatures {
            mel,
            context: params.context,
            band_mean,
            band_std,
        };
        for clip in clips.iter_mut() {
            standardize(&features, clip);
        }
        // Every training input is `context` consecutive frames, which lie next to each other
        // in one buffer of all the training frames: an input is its first frame's index.
        let m = params.n_mels;
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        for &i in &train_idx {
            let base = frames.len() / m;
            let t = clips[i].len() / m;
            starts.extend((0..=t - params.context).map(|s| base + s));
            frames.extend_from_slice(&clips[i]);
        }
        let d = m * params.context;
        let spec = DenseSpec {
            features: d,
            hidden: params.hidden.clone(),
            latent: params.latent,
            variational: false,
            batch_norm: params.batch_norm,
            mask_input: false,
        };
        let batch_size = params.batch_size.min(starts.len());
        let epochs = params.epochs.unwrap_or_else(|| {
            crate::train::default_epochs(starts.len(), batch_size, TARGET_STEPS, MAX_EPOCHS)
                .max(MIN_EPOCHS)
        });
        let opts = DenseTrainOptions {
            epochs,
            batch_size,
            learning_rate: params.learning_rate,
            seed: params.seed,
            mask_rate: 0.0,
            kl_weight: 0.0,
            early_stopping: params.epochs.is_none(),
        };
        let indices: Vec<usize> = (0..starts.len()).collect();
        let (model, log) = train_dense_batches(
            &spec,
            &indices,
            &opts,
            DenseOutput::Linear,
            device,
            progress,
            |chunk, _| {
                let mut x = Vec::with_capacity(chunk.len() * d);
                for &i in chunk {
                    x.extend_from_slice(&frames[starts[i] * m..(starts[i] + params.context) * m]);
                }
                Batch {
                    shown_values: x.clone(),
                    shown: None,
                    observed: None,
                    targets: x,
                }
            },
        )?;
        let mut this = Self {
            model,
            logmel,
            meta: AudioMeta {
                format_version: FORMAT_VERSION,
                kind: ModelKind::AudioDetector.data(),
                task: ModelKind::AudioDetector.task(),
                spec,
                features,
                scoring: AudioScoring {
                    reduction: params.reduction,
                    map_scale: 1.0,
                    band_normalized: None,
                },
                calibration: plan.placeholder(),
                training: TrainingSummary {
                    // Recordings, not the inputs cut from them.
                    train_samples: train_idx.len(),
                    ..TrainingSummary::from_log(
                        log,
                        cal_idx.len(),
                        left_out.len(),
                        batch_size,
                        params.learning_rate,
                        params.seed,
                    )
                },
            },
            device: device.clone(),
        };
        if params.band_normalize {
            // Each band's mean error over the training frames, then both parts' centre and
            // spread over the training recordings.
            let parts: Vec<(Vec<f32>, Vec<f32>)> =
                train_idx.iter().map(|&i| this.errors(&clips[i])).collect();
            let mut band_sum = vec![0f64; m];
            let mut frames_seen = 0usize;
            for (_, map) in &parts {
                for frame in map.chunks(m) {
                    for (s, v) in band_sum.iter_mut().zip(frame) {
                        *s += *v as f64;
                    }
                    frames_seen += 1;
                }
            }
            let band_error: Vec<f32> = band_sum
                .iter()
                .map(|s| ((s / frames_seen as f64) as f32).max(1e-6))
                .collect();
            let plain: Vec<f32> = parts
                .iter()
                .map(|(inputs, _)| params.reduction.apply(inputs))
                .collect();
            let normalized: Vec<f32> = parts
                .iter()
                .map(|(_, map)| normalized_score(map, &band_error, params.reduction))
                .collect();
            let (plain_center, plain_spread) = center_spread(&plain);
            let (normalized_center, normalized_spread) = center_spread(&normalized);
            this.meta.scoring.band_normalized = Some(BandNormalized {
                band_error,
                plain_center,
                plain_spread,
                normalized_center,
                normalized_spread,
            });
        }
        let mut scores = Vec::with_capacity(cal_idx.len());
        let mut map_scale = 0f32;
        for &i in &cal_idx {
            let (score, _, map) = this.score_frames(&clips[i]);
            scores.push(score);
            map_scale = map.iter().copied().fold(map_scale, f32::max);
        }
        this.meta.calibration = plan.calibrate(scores, "recordings", progress)?;
        this.meta.scoring.map_scale = if map_scale > 0.0 { map_scale } else { 1.0 };
        Ok(this)
    }

    /// Loads an audio detector's model file for use on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_bytes(path, file::read_model_bytes(path)?, device)
    }

    /// Loads an audio detector from its model file's bytes (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_dense_bytes(
            path,
            bytes,
            ModelKind::AudioDetector,
            |m: &AudioMeta| &m.spec,
            |m| {
                let f = &m.features;
                check_stft(f.mel.n_fft, f.mel.hop, f.context)?;
                let b = m.scoring.band_normalized.as_ref();
                if f.mel.sample_rate == 0
                    || f.mel.n_mels == 0
                    || m.spec.features != f.mel.n_mels * f.context
                    || f.band_mean.len() != f.mel.n_mels
                    || f.band_std.len() != f.mel.n_mels
                    || b.is_some_and(|b| b.band_error.len() != f.mel.n_mels)
                {
                    return Err(format!(
                        "{} mel bands x {} frames at {} Hz do not fit a network of {} inputs \
                         and the band statistics",
                        f.mel.n_mels, f.context, f.mel.sample_rate, m.spec.features
                    ));
                }
                Ok(())
            },
            |_| 1,
            device,
        )?;
        Ok(Self {
            model: weights.autoencoder,
            logmel: LogMel::new(&meta.features.mel),
            meta,
            device: device.clone(),
        })
    }

    /// Writes the model file to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = DenseWeights::single(self.model.clone());
        file::save_dense(path, &weights, &self.meta)
    }

    pub fn meta(&self) -> &AudioMeta {
        &self.meta
    }

    /// The score of standardised log-mel `frames` (the larger of its parts), the parts
    /// (see [`Self::parts`]) and the error map (`frames x n_mels`).
    fn score_frames(&self, frames: &[f32]) -> (f32, (f32, Option<f32>), Vec<f32>) {
        let (inputs, map) = self.errors(frames);
        let parts = self.parts(&inputs, &map);
        (parts.1.map_or(parts.0, |n| parts.0.max(n)), parts, map)
    }

    /// The two parts of a recording's score on their common scale: the plain error and,
    /// when the model has it, the band-normalised one (raw plain error without it).
    fn parts(&self, inputs: &[f32], map: &[f32]) -> (f32, Option<f32>) {
        let reduction = self.meta.scoring.reduction;
        let plain = reduction.apply(inputs);
        match &self.meta.scoring.band_normalized {
            Some(b) => (
                (plain - b.plain_center) / b.plain_spread,
                Some(
                    (normalized_score(map, &b.band_error, reduction) - b.normalized_center)
                        / b.normalized_spread,
                ),
            ),
            None => (plain, None),
        }
    }

    /// The mean squared error of each input of standardised log-mel `frames` and the error
    /// map (`frames x n_mels`: each value's error averaged over the inputs that hold it).
    fn errors(&self, frames: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let m = self.meta.features.mel.n_mels;
        let c = self.meta.features.context;
        let d = m * c;
        let t = frames.len() / m;
        let n = t + 1 - c;
        let mut input_errors = Vec::with_capacity(n);
        let mut map = vec![0f32; t * m];
        let mut counts = vec![0u32; t];
        for first in (0..n).step_by(CHUNK_INPUTS) {
            let last = (first + CHUNK_INPUTS).min(n);
            let mut x = Vec::with_capacity((last - first) * d);
            for s in first..last {
                x.extend_from_slice(&frames[s * m..(s + c) * m]);
            }
            // Built on the inference device itself: tensors moved over from an autodiff
            // device leak on every forward.
            let input =
                Tensor::<2>::from_data(TensorData::new(x.clone(), [last - first, d]), &self.device);
            let recon: Vec<f32> = self
                .model
                .forward(input, None)
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 output");
            for (k, (xi, yi)) in x.chunks(d).zip(recon.chunks(d)).enumerate() {
                let s = first + k;
                let mut total = 0f32;
                for (j, (a, b)) in xi.iter().zip(yi).enumerate() {
                    let e = (a - b) * (a - b);
                    total += e;
                    map[s * m + j] += e;
                }
                for k in &mut counts[s..s + c] {
                    *k += 1;
                }
                input_errors.push(total / d as f32);
            }
        }
        for (f, &k) in counts.iter().enumerate() {
            for v in &mut map[f * m..(f + 1) * m] {
                *v /= k.max(1) as f32;
            }
        }
        (input_errors, map)
    }

    /// Scores one recording.
    pub fn score_audio(&self, path: &Path, audio: &Audio) -> Result<ScoredClip> {
        let result = match log_mel_frames(&self.logmel, audio, self.meta.features.context)? {
            Ok(mut frames) => {
                standardize(&self.meta.features, &mut frames);
                let (score, parts, map) = self.score_frames(&frames);
                let cal = &self.meta.calibration;
                Ok(ClipScore {
                    score,
                    parts,
                    p_value: cal.p_value(score),
                    is_anomaly: cal.is_anomaly(score),
                    frames: map.len() / self.meta.features.mel.n_mels,
                    map,
                })
            }
            Err(why) => Err(why),
        };
        Ok(ScoredClip {
            path: path.to_path_buf(),
            seconds: audio.seconds(),
            result,
        })
    }

    /// Scores the recordings at `paths` in order, handing each to `on_clip`. Unreadable
    /// files stop scoring (named) unless `skip_bad`, which warns and counts them; silent and
    /// too-short recordings are handed over unscored. Returns the number skipped.
    pub fn score_paths(
        &self,
        paths: &[PathBuf],
        skip_bad: bool,
        progress: &dyn Progress,
        mut on_clip: impl FnMut(ScoredClip) -> Result<()>,
    ) -> Result<usize> {
        progress.stage("scoring", paths.len() as u64);
        let mut skipped = 0;
        for path in paths {
            let audio = match Audio::read(path) {
                Ok(a) => a,
                Err(e) if skip_bad => {
                    progress.warn(&format!("skipped: {e}"));
                    skipped += 1;
                    progress.advance(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            on_clip(self.score_audio(path, &audio)?)?;
            progress.advance(1);
        }
        progress.finish();
        Ok(skipped)
    }

    /// The error map of a scored recording as an image: time left to right, low bands at the
    /// bottom, jet colours scaled by the largest error seen on calibration recordings. Each
    /// frame is drawn a few pixels wide so that short recordings stay legible.
    pub fn map_image(&self, clip: &ClipScore) -> image::RgbImage {
        let m = self.meta.features.mel.n_mels;
        let scale = self.meta.scoring.map_scale;
        let wide = (512 / clip.frames.max(1)).clamp(1, 8) as u32;
        let tall = (256 / m.max(1)).clamp(1, 4) as u32;
        image::RgbImage::from_fn(clip.frames as u32 * wide, m as u32 * tall, |x, y| {
            let f = (x / wide) as usize;
            let band = m - 1 - (y / tall) as usize;
            let c = crate::score::maps::jet(clip.map[f * m + band] / scale);
            image::Rgb(c.map(|v| (v * 255.0).round() as u8))
        })
    }

    /// Writes a scored recording's error image (`<rel>_map.png`) and raw map
    /// (`<rel>_map.npy`, bands x frames, low bands first) under `dir`.
    pub fn write_maps(&self, dir: &Path, rel: &Path, clip: &ClipScore) -> Result<()> {
        let m = self.meta.features.mel.n_mels;
        let named = |suffix| crate::score::maps::output_path(dir, rel, suffix);
        crate::score::maps::write_png(&named("_map.png"), &self.map_image(clip))?;
        let mut bands_by_frames = vec![0f32; clip.map.len()];
        for f in 0..clip.frames {
            for b in 0..m {
                bands_by_frames[b * clip.frames + f] = clip.map[f * m + b];
            }
        }
        crate::score::maps::write_npy(
            &named("_map.npy"),
            &bands_by_frames,
            clip.frames as u32,
            m as u32,
        )
    }

    /// Scores the labelled recordings under `root/test` (`good/` normal, every other folder
    /// a fault) and measures detection: AUROC and pAUC (FPR up to `max_fpr`, DCASE's 0.1)
    /// overall and per fault against the good recordings.
    pub fn evaluate(
        &self,
        root: &Path,
        max_fpr: f64,
        progress: &dyn Progress,
    ) -> Result<AudioEval> {
        let test = root.join("test");
        if !crate::data::mvtec::is_test_folder(&test) {
            return Err(Error::Invalid(format!(
                "{}: not an MVTec-layout root (expected test/good and test/<fault> folders of WAV files)",
                root.display()
            )));
        }
        let paths = find_audio(&test)?;
        let mut scored = Vec::new();
        let mut unscored = Vec::new();
        self.score_paths(&paths, false, progress, |clip| {
            let Some(anomalous) = label_in_test_folder(&test, &clip.path) else {
                return Ok(());
            };
            let category = clip
                .path
                .strip_prefix(&test)
                .ok()
                .and_then(|r| r.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            match clip.result {
                Ok(s) => scored.push((category, anomalous, s.score, s.is_anomaly, s.parts)),
                Err(why) => unscored.push(format!("{}: {why}", clip.path.display())),
            }
            Ok(())
        })?;
        let rank = |sel: &dyn Fn(&str) -> bool| {
            let (s, l): (Vec<f32>, Vec<bool>) = scored
                .iter()
                .filter(|c| sel(&c.0))
                .map(|c| (c.2, c.1))
                .unzip();
            (
                metrics::auroc(&s, &l),
                metrics::partial_auroc(&s, &l, max_fpr),
            )
        };
        let mut categories: Vec<String> = scored.iter().map(|c| c.0.clone()).collect();
        categories.sort();
        categories.dedup();
        let per_fault = categories
            .iter()
            .filter(|c| c.as_str() != "good")
            .map(|c| {
                let (auroc, pauc) = rank(&|k| k == "good" || k == c);
                let of: Vec<_> = scored.iter().filter(|s| &s.0 == c).collect();
                FaultReport {
                    fault: c.clone(),
                    recordings: of.len(),
                    flagged: of.iter().filter(|s| s.3).count(),
                    auroc,
                    pauc,
                }
            })
            .collect();
        let (auroc, pauc) = rank(&|_| true);
        let good: Vec<_> = scored.iter().filter(|s| !s.1).collect();
        let flagged: Vec<bool> = scored.iter().map(|s| s.3).collect();
        let labels: Vec<bool> = scored.iter().map(|s| s.1).collect();
        let cls = metrics::classification(&flagged, &labels);
        let parts = self.meta.scoring.band_normalized.as_ref().map(|_| {
            let plain: Vec<f32> = scored.iter().map(|c| c.4.0).collect();
            let normalized: Option<Vec<f32>> = scored.iter().map(|c| c.4.1).collect();
            PartAurocs {
                plain: metrics::auroc(&plain, &labels),
                band_normalized: normalized.and_then(|n| metrics::auroc(&n, &labels)),
            }
        });
        Ok(AudioEval {
            recordings: scored.len(),
            anomalous: labels.iter().filter(|&&l| l).count(),
            auroc,
            pauc,
            max_fpr,
            f1: cls.f1,
            precision: cls.precision,
            recall: cls.recall,
            threshold: self.meta.calibration.threshold,
            fpr_target: self.meta.calibration.effective_fpr,
            false_alarm_rate_good: (!good.is_empty())
                .then(|| good.iter().filter(|s| s.3).count() as f64 / good.len() as f64),
            parts,
            per_fault,
            unscored,
        })
    }
}

/// Fails with the reason unless frames of `n_fft` samples every `hop`, `context` at a time,
/// can work (as read from a model file).
pub(crate) fn check_stft(
    n_fft: usize,
    hop: usize,
    context: usize,
) -> std::result::Result<(), String> {
    if n_fft < 16 || !n_fft.is_multiple_of(2) || n_fft > 1 << 16 {
        return Err(format!("n_fft {n_fft} must be even, from 16 to 65536"));
    }
    if hop == 0 || hop > n_fft || context == 0 || context > 1024 {
        return Err(format!(
            "hop {hop} must be from 1 to n_fft, context {context} from 1 to 1024"
        ));
    }
    Ok(())
}

/// A recording's band-normalised error: the reduction over its frames of the mean of each
/// band's error divided by that band's training error.
fn normalized_score(map: &[f32], band_error: &[f32], reduction: Reduction) -> f32 {
    let per_frame: Vec<f32> = map
        .chunks(band_error.len())
        .map(|frame| {
            frame
                .iter()
                .zip(band_error)
                .map(|(e, b)| e / b)
                .sum::<f32>()
                / band_error.len() as f32
        })
        .collect();
    reduction.apply(&per_frame)
}

/// Warns of the recordings training left out (`path: reason` each): the first five, and how
/// many in all when there are more.
pub(crate) fn warn_left_out(progress: &dyn Progress, left_out: &[String]) {
    for s in left_out.iter().take(5) {
        progress.warn(&format!("left out {s}"));
    }
    if left_out.len() > 5 {
        progress.warn(&format!("left out {} recordings in all", left_out.len()));
    }
}

/// Standardises log-mel `frames` in place with the model's band statistics.
fn standardize(features: &AudioFeatures, frames: &mut [f32]) {
    let m = features.mel.n_mels;
    for frame in frames.chunks_mut(m) {
        for ((v, mean), std) in frame
            .iter_mut()
            .zip(&features.band_mean)
            .zip(&features.band_std)
        {
            *v = (*v - mean) / std;
        }
    }
}

/// Detection results for one fault folder, against `test/good`.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    pub fault: String,
    pub recordings: usize,
    /// Recordings flagged at the model's threshold.
    pub flagged: usize,
    pub auroc: Option<f64>,
    pub pauc: Option<f64>,
}

/// AUROC of the plain and the band-normalised error alone.
#[derive(Debug, Clone, Serialize)]
pub struct PartAurocs {
    pub plain: Option<f64>,
    pub band_normalized: Option<f64>,
}

/// What `eval` prints for an audio detector.
#[derive(Debug, Clone, Serialize)]
pub struct AudioEval {
    pub recordings: usize,
    pub anomalous: usize,
    pub auroc: Option<f64>,
    /// Partial AUROC up to `max_fpr`, McClish-standardised (as DCASE and scikit-learn).
    pub pauc: Option<f64>,
    pub max_fpr: f64,
    /// F1, precision and recall of `is_anomaly` at the model's threshold.
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub threshold: f32,
    pub fpr_target: f64,
    pub false_alarm_rate_good: Option<f64>,
    /// AUROC of each part of the score alone, when the model has two.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<PartAurocs>,
    pub per_fault: Vec<FaultReport>,
    /// Recordings that could not be scored (silent, too short), with the reason.
    pub unscored: Vec<String>,
}

/// Scores every WAV file under `data` and writes `path,score,p_value,is_anomaly,note` rows
/// (paths relative to `data`; a recording that cannot be scored has empty values and the
/// reason in `note`) to `out_csv`, and error images to `maps_dir` when given. Returns the
/// rows written, the recordings not scored and the files skipped.
pub fn score_audio_to_csv(
    detector: &AudioDetector,
    data: &Path,
    out_csv: &Path,
    maps_dir: Option<&Path>,
    skip_bad: bool,
    progress: &dyn Progress,
) -> Result<(usize, usize, usize)> {
    let paths = find_audio(data)?;
    let base = crate::task::detect::names_base(data);
    let (mut rows, mut unscored, mut skipped) = (0, 0, 0);
    crate::io::write_atomic(out_csv, |tmp| {
        let bad = |e: csv::Error| Error::Invalid(format!("{}: {e}", out_csv.display()));
        let mut w = csv::Writer::from_path(tmp).map_err(bad)?;
        w.write_record(["path", "score", "p_value", "is_anomaly", "note"])
            .map_err(bad)?;
        skipped = detector.score_paths(&paths, skip_bad, progress, |clip| {
            let rel = clip.path.strip_prefix(&base).unwrap_or(&clip.path);
            let name = rel.to_string_lossy();
            match &clip.result {
                Ok(s) => {
                    w.write_record([
                        name.as_ref(),
                        &s.score.to_string(),
                        &s.p_value.to_string(),
                        if s.is_anomaly { "1" } else { "0" },
                        "",
                    ])
                    .map_err(bad)?;
                    if let Some(dir) = maps_dir {
                        detector.write_maps(dir, rel, s)?;
                    }
                }
                Err(why) => {
                    progress.warn(&format!("not scored: {}: {why}", clip.path.display()));
                    unscored += 1;
                    w.write_record([name.as_ref(), "", "", "", &why.to_string()])
                        .map_err(bad)?;
                }
            }
            rows += 1;
            Ok(())
        })?;
        w.flush().map_err(|e| Error::io(tmp, e))
    })?;
    Ok((rows, unscored, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::machines::{MachineConfig, generate_machine_sounds};
    use crate::progress::Silent;
    use crate::testing::scratch;

    #[test]
    fn detects_faults_round_trips_and_reports_unusable_recordings() {
        let root = scratch("sound-fit");
        let cfg = MachineConfig {
            seconds: 1.0,
            train: 40,
            test_good: 8,
            test_per_fault: 4,
            ..MachineConfig::default()
        };
        generate_machine_sounds(&root, &cfg).unwrap();
        // Recordings training must leave out, and a file it cannot read.
        let good = root.join("train/good");
        let silent = Audio {
            spec: Audio::read(&good.join("0000.wav")).unwrap().spec,
            samples: vec![0.0; 16000],
        };
        silent.write(&good.join("silent.wav")).unwrap();
        let short = Audio {
            samples: vec![0.1; 100],
            ..silent.clone()
        };
        short.write(&good.join("short.wav")).unwrap();
        let params = AudioParams {
            n_mels: 32,
            hidden: vec![32, 32],
            latent: 4,
            epochs: Some(15),
            calibration_fraction: 0.25,
            ..AudioParams::default()
        };
        let device = Device::flex();
        let det = AudioDetector::fit(&root, &params, &device, &Silent).unwrap();
        let meta = det.meta();
        assert_eq!(meta.training.skipped_samples, 2);
        assert_eq!(
            (
                meta.training.train_samples,
                meta.training.calibration_samples
            ),
            (30, 10)
        );
        assert_eq!(meta.spec.features, 32 * 5);
        assert_eq!(meta.calibration.scores.len(), 10);
        let curve = &meta.training.loss_curve;
        assert!(curve[curve.len() - 1] < curve[0] * 0.8, "{curve:?}");

        let eval = det.evaluate(&root, 0.1, &Silent).unwrap();
        assert_eq!((eval.recordings, eval.anomalous), (20, 12));
        let auroc = eval.auroc.unwrap();
        assert!(auroc > 0.8, "{eval:?}");
        // Both parts of the score rank on their own, and the joined score is the larger of
        // the two on the scale where the training recordings' median is 0.
        let parts = eval.parts.as_ref().unwrap();
        assert!(parts.plain.is_some() && parts.band_normalized.is_some());
        let b = meta.scoring.band_normalized.as_ref().unwrap();
        assert_eq!(b.band_error.len(), 32);
        assert!(b.plain_spread > 0.0 && b.normalized_spread > 0.0);

        let file = root.join("m.safetensors");
        det.save(&file).unwrap();
        let loaded = AudioDetector::load(&file, &device).unwrap();
        assert_eq!(loaded.meta(), det.meta());
        let test = find_audio(&root.join("test")).unwrap();
        let collect = |d: &AudioDetector| {
            let mut v = Vec::new();
            d.score_paths(&test, false, &Silent, |c| {
                let s = c.result.unwrap();
                assert_eq!(s.score, s.parts.0.max(s.parts.1.unwrap()));
                v.push((s.score, s.p_value, s.map));
                Ok(())
            })
            .unwrap();
            v
        };
        assert_eq!(collect(&det), collect(&loaded));
        // A hand-edited file whose settings cannot work is refused by name, not a panic;
        // one changed without its checksum is named as damaged.
        let bytes = std::fs::read(&file).unwrap();
        let edited = crate::model::file::rewrite_metadata(&bytes, |m| {
            m["features"]["mel"]["hop"] = 0.into();
        })
        .unwrap();
        let err = AudioDetector::from_bytes(Path::new("edited.safetensors"), edited, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("edited.safetensors") && err.contains("features.mel.hop: 0"),
            "{err}"
        );
        let pattern = b"\\\"hop\\\":512,";
        let at = bytes
            .windows(pattern.len())
            .position(|w| w == pattern)
            .expect("hop in the metadata")
            + 8;
        let mut flipped = bytes.clone();
        flipped[at..at + 3].copy_from_slice(b"256");
        let err = AudioDetector::from_bytes(Path::new("flipped.safetensors"), flipped, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        // Silent and too-short recordings come back unscored with the reason; a truncated
        // file stops scoring with its name, or is skipped on request.
        let s = det.score_audio(Path::new("s.wav"), &silent).unwrap();
        assert_eq!(s.result.unwrap_err(), Unscored::Silent);
        let s = det.score_audio(Path::new("t.wav"), &short).unwrap();
        assert!(
            matches!(s.result, Err(Unscored::TooShort { .. })),
            "{:?}",
            s.result
        );
        let bytes = std::fs::read(&test[0]).unwrap();
        let cut = root.join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() / 2 + 1]).unwrap();
        let paths = vec![test[0].clone(), cut.clone()];
        let err = det
            .score_paths(&paths, false, &Silent, |_| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("cut.wav"), "{err}");
        assert_eq!(
            det.score_paths(&paths, true, &Silent, |_| Ok(())).unwrap(),
            1
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_map_places_a_loud_band_where_it_sounds() {
        // A detector that has seen only low hum hears a burst of a high tone: the error
        // map is largest in the high bands during the burst.
        let root = scratch("sound-map");
        let good = root.join("good");
        let rate = 16000u32;
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let tone =
            |f: f32, i: usize| (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin();
        for k in 0..12 {
            let samples = (0..rate as usize)
                .map(|i| 0.3 * tone(100.0 + k as f32, i) + 0.01 * tone(3000.0 + 37.0 * k as f32, i))
                .collect();
            Audio { spec, samples }
                .write(&good.join(format!("{k}.wav")))
                .unwrap();
        }
        let params = AudioParams {
            n_mels: 32,
            hidden: vec![32],
            latent: 4,
            epochs: Some(20),
            calibration_fraction: 0.2,
            ..AudioParams::default()
        };
        let det = AudioDetector::fit(&good, &params, &Device::flex(), &Silent).unwrap();
        let samples: Vec<f32> = (0..rate as usize)
            .map(|i| {
                let burst = if (8000..12000).contains(&i) {
                    0.3 * tone(6000.0, i)
                } else {
                    0.0
                };
                0.3 * tone(105.0, i) + 0.01 * tone(3100.0, i) + burst
            })
            .collect();
        let clip = det
            .score_audio(Path::new("b.wav"), &Audio { spec, samples })
            .unwrap()
            .result
            .unwrap();
        assert!(clip.is_anomaly);
        let m = 32;
        let (frames, map) = (clip.frames, &clip.map);
        let hop_s = 512.0 / rate as f32;
        let at = |f: usize, lo: usize, hi: usize| -> f32 {
            map[f * m + lo..f * m + hi].iter().sum::<f32>() / (hi - lo) as f32
        };
        let burst_frame = (0.625 / hop_s) as usize;
        let quiet_frame = (0.2 / hop_s) as usize;
        assert!(frames > burst_frame);
        assert!(at(burst_frame, 24, 32) > 10.0 * at(quiet_frame, 24, 32));
        assert!(at(burst_frame, 24, 32) > at(burst_frame, 0, 8));
        let img = det.map_image(&clip);
        assert_eq!(img.height() as usize % m, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
