//! `bottleneck train`: one of five model kinds (image, table or audio anomaly detection;
//! image or audio denoising), chosen by --task and what DATA holds.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::{Context, Result};
use bottleneck::Device;
use bottleneck::data::audio::is_audio_data;
use bottleneck::data::table::{ColumnSelection, is_table_path};
use bottleneck::model::Head;
use bottleneck::model::file::TableScore;
use bottleneck::score::{Calibration, Loss, Reduction};
use bottleneck::task::detect::{DetectParams, Detector};
use bottleneck::task::{
    AudioDenoiseParams, AudioDenoiser, AudioDetector, AudioParams, DenoiseParams, Denoiser,
    TableModel, TableParams,
};
use bottleneck::train::NoiseModel;
use clap::{Args, ValueEnum};

use crate::progress::Bars;

/// What a training set is.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A table file by its extension; a folder of WAV files without images is audio;
    /// otherwise images.
    Auto,
    Images,
    Table,
    Audio,
}

/// What a model is for.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Task {
    /// Anomaly detection (also gives bottleneck codes; tables also impute).
    Detect,
    /// Image or audio denoising.
    Denoise,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Folder of good images, a root in the MVTec AD layout, or a table of normal rows;
    /// with --task denoise, a folder of clean images.
    #[arg(required_unless_present = "clean")]
    data: Option<PathBuf>,
    /// Model file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// What DATA holds.
    #[arg(long, value_enum, default_value = "auto")]
    kind: Kind,
    /// What the model is for.
    #[arg(long, value_enum, default_value = "detect")]
    task: Task,
    /// Shrink each whole image to a square network input of this side [default: images
    /// up to 128 px are read whole, at their size rounded down to a multiple of 16 (of 4
    /// below 32 px); larger images are read in --tile 64 tiles].
    #[arg(long)]
    image_size: Option<usize>,
    /// Read images in square tiles of this side at their own resolution instead of
    /// shrinking each to one input: trains on random crops, scores overlapping tiles
    /// (stride half a tile) and writes maps at the image's size, so defects a few pixels
    /// wide on large images stay visible. Tiled models have no --knn part, no per-image
    /// code (encode, search) and no ONNX export [default: 64 for images over 128 px,
    /// unless --image-size is given].
    #[arg(long)]
    tile: Option<usize>,
    /// Scale the images by this factor (above 0, at most 1) before cutting tiles
    /// [default: 1, or down to 1,024 px on the longer side for larger images].
    #[arg(long)]
    scale: Option<f32>,
    /// Bottleneck size [default: images 32, 64 or 128 by image size; tables a quarter of
    /// the number of features, 2 to 32; audio detection 8; audio denoising 256].
    #[arg(long)]
    latent: Option<usize>,
    /// Channels of the first convolution; doubles per level up to 4x [default: 32].
    #[arg(long)]
    width: Option<usize>,
    /// Passes over the training data [default: about 2,000 optimizer steps for images and
    /// audio detection (a single network on images under 64 px: as many more as keep the
    /// pixels processed the same, up to 4,000), 6,000 for tables, 4,500 for image denoisers (whose epoch is one
    /// pass worth of pixels in random patches), 3,000 for audio denoisers (whose epoch is
    /// one pass over the clean audio in 1 s crops)].
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per optimizer step [default: 32 images, 64 rows, 256 stacked audio frames,
    /// 8 patches for image denoisers, 8 one-second crops for audio denoisers].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam learning rate (decays to 5% of it over the run, cosine) [default: 0.001].
    #[arg(long)]
    lr: Option<f64>,
    /// Seed for weights, shuffling and the calibration split: same seed, same model
    /// [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Target false-alarm rate: flag images whose conformal p-value is at most this
    /// [default: 0.01].
    #[arg(long)]
    fpr: Option<f64>,
    /// Expected share of anomalies (PyOD's contamination): threshold at that quantile of
    /// the calibration scores instead of the conformal rule.
    #[arg(long, conflicts_with = "fpr")]
    contamination: Option<f64>,
    /// Share of the good images (rows, recordings) held out for calibration; for denoisers,
    /// the share of clean images or recordings held out to measure the result [default:
    /// 0.15; denoisers 0.1].
    #[arg(long)]
    calibration: Option<f64>,
    /// Training loss and map: ssim or mse [default: ssim].
    #[arg(long)]
    loss: Option<Loss>,
    /// Score from the map: mean, max or topN (mean of the top N percent) [default: images
    /// max; audio mean over the recording's inputs, as the DCASE baseline].
    #[arg(long)]
    reduce: Option<Reduction>,
    /// Gaussian smoothing of the map in input pixels [default: image size / 32].
    #[arg(long)]
    smoothing: Option<f32>,
    /// Images: do not standardise maps per pixel by the training images' error statistics.
    /// Audio: score by the plain reconstruction error only (the DCASE baseline's score),
    /// without the band-normalised part.
    #[arg(long)]
    raw_maps: bool,
    /// Also score by the mean distance to the K nearest training images in the bottleneck;
    /// the image score joins the two on a common scale as ln(e^map + e^knn), about the
    /// larger of the two when they are far apart (0: map score only). Not given: 5, kept
    /// only when the distance ranks training images with synthetic defects above their
    /// clean versions better than chance (a one-sided test at 1%; `train` says which).
    #[arg(long)]
    knn: Option<usize>,
    /// Images: what draws the map. none: the reconstruction error; segment: also a small
    /// network reading each image beside its reconstruction, trained on synthetic
    /// anomalies drawn on the good images (DRAEM's Perlin blots and NSA's Poisson-blended
    /// patches); the map is then, pixel by pixel, the larger of the error and its
    /// probability of an anomaly, each on the scale of the training images' scores
    /// [default: none].
    #[arg(long)]
    head: Option<Head>,
    /// Tables: use only these columns as features (comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Tables")]
    columns: Option<Vec<String>>,
    /// Tables: leave these columns out (comma-separated).
    #[arg(long, value_delimiter = ',', help_heading = "Tables")]
    exclude: Vec<String>,
    /// Tables: the column that names each row in outputs (not a feature).
    #[arg(long, help_heading = "Tables")]
    id_column: Option<String>,
    /// Tables: train a variational autoencoder.
    #[arg(long, help_heading = "Tables")]
    vae: bool,
    /// Tables: score a --vae model by its negative ELBO instead of reconstruction error.
    #[arg(long, requires = "vae", help_heading = "Tables")]
    elbo: bool,
    /// Tables and audio: hidden layer widths, comma-separated [default: tables from the
    /// number of features; audio detection 128,128,128,128; audio denoising 512].
    #[arg(long, value_delimiter = ',', help_heading = "Tables")]
    hidden: Option<Vec<usize>>,
    /// Tables: batch normalisation after each hidden layer.
    #[arg(long, help_heading = "Tables")]
    batch_norm: bool,
    /// Tables: share of observed cells hidden from the network at each training step
    /// [default: 0.2].
    #[arg(long, help_heading = "Tables")]
    mask_rate: Option<f32>,
    /// Detection on images and tables: networks of a cross-conformal ensemble, each
    /// trained without one fold of the samples so that every sample calibrates; 1 trains
    /// one network and holds out --calibration of them [default: 5 up to 1,000 rows; 2 up
    /// to 1,000 images of at most 32 px a side (5 rank higher and train about 3x longer);
    /// else 1].
    #[arg(long)]
    folds: Option<usize>,
    /// Tables: refinement passes of `impute` after the first fill [default: 1].
    #[arg(long, help_heading = "Tables")]
    impute_iterations: Option<usize>,
    /// Denoising: noise added to the clean data during training. Images: gaussian:SIGMA,
    /// poisson:PEAK, salt-pepper:RATE, speckle:SIGMA (a level, or a range LOW-HIGH drawn per
    /// patch), or mixed (all four over wide ranges) [default: mixed]. Audio: white:SIGMA
    /// or white:LOW-HIGH (standard deviation, full scale 1), or mix:NOISE_WAV_DIR (random
    /// excerpts of those recordings at -5 to 20 dB SNR) [default: white:0.005-0.1].
    #[arg(long, help_heading = "Denoising")]
    noise: Option<String>,
    /// Denoising: a folder of real noisy images matched by relative path to the clean ones
    /// (in DATA or --clean), instead of --noise.
    #[arg(long, conflicts_with = "noise", help_heading = "Denoising")]
    noisy: Option<PathBuf>,
    /// Denoising: the folder of clean images paired with --noisy (same as DATA).
    #[arg(
        long,
        requires = "noisy",
        conflicts_with = "data",
        help_heading = "Denoising"
    )]
    clean: Option<PathBuf>,
    /// Denoising: side of the training patches [default: 48, or the smallest image].
    #[arg(long, help_heading = "Denoising")]
    patch: Option<usize>,
    /// Denoising: stride-2 levels of the network [default: 2].
    #[arg(long, help_heading = "Denoising")]
    levels: Option<usize>,
    /// Audio: sample rate of the model; recordings at other rates are resampled [default:
    /// the most common rate of the training files].
    #[arg(long, help_heading = "Audio")]
    sample_rate: Option<u32>,
    /// Audio: FFT frame length in samples [default: detection 1024, denoising 512].
    #[arg(long, help_heading = "Audio")]
    n_fft: Option<usize>,
    /// Audio: hop between frames in samples [default: detection 512, denoising 128].
    #[arg(long, help_heading = "Audio")]
    hop: Option<usize>,
    /// Audio detection: no batch normalisation after the hidden layers (on by default, as
    /// in the DCASE baseline).
    #[arg(long, help_heading = "Audio")]
    no_batch_norm: bool,
    /// Audio detection: mel bands [default: 128].
    #[arg(long, help_heading = "Audio")]
    n_mels: Option<usize>,
    /// Audio: consecutive frames stacked into one network input [default: 5].
    #[arg(long, help_heading = "Audio")]
    context: Option<usize>,
    /// Skip unreadable images, recordings or bad rows with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

/// The flags of `flags` that were given.
fn given(flags: &[(&'static str, bool)]) -> Vec<&'static str> {
    flags
        .iter()
        .filter_map(|&(flag, given)| given.then_some(flag))
        .collect()
}

impl TrainArgs {
    /// DATA, or --clean for noisy/clean pairs.
    fn data(&self) -> &std::path::Path {
        self.data
            .as_deref()
            .or(self.clean.as_deref())
            .expect("clap requires DATA or --clean")
    }

    /// Whether DATA holds recordings.
    fn is_audio(&self) -> bool {
        match self.kind {
            Kind::Auto => !is_table_path(self.data()) && is_audio_data(self.data()),
            Kind::Audio => true,
            Kind::Images | Kind::Table => false,
        }
    }

    /// The audio-only options given, by flag.
    fn audio_options(&self) -> Vec<&'static str> {
        given(&[
            ("--sample-rate", self.sample_rate.is_some()),
            ("--n-fft", self.n_fft.is_some()),
            ("--hop", self.hop.is_some()),
            ("--n-mels", self.n_mels.is_some()),
            ("--context", self.context.is_some()),
            ("--no-batch-norm", self.no_batch_norm),
        ])
    }

    /// The table-only options given, by flag.
    fn table_options(&self) -> Vec<&'static str> {
        given(&[
            ("--columns", self.columns.is_some()),
            ("--exclude", !self.exclude.is_empty()),
            ("--id-column", self.id_column.is_some()),
            ("--vae", self.vae),
            ("--batch-norm", self.batch_norm),
        ])
    }

    /// The image-only options given, by flag.
    fn image_options(&self) -> Vec<&'static str> {
        given(&[
            ("--image-size", self.image_size.is_some()),
            ("--tile", self.tile.is_some()),
            ("--scale", self.scale.is_some()),
            ("--width", self.width.is_some()),
            ("--smoothing", self.smoothing.is_some()),
            ("--head", self.head.is_some()),
            ("--patch", self.patch.is_some()),
            ("--levels", self.levels.is_some()),
            ("--noisy", self.noisy.is_some()),
        ])
    }

    fn audio_params(&self) -> AudioParams {
        let d = AudioParams::default();
        AudioParams {
            sample_rate: self.sample_rate,
            n_fft: self.n_fft.unwrap_or(d.n_fft),
            hop: self.hop.unwrap_or(d.hop),
            n_mels: self.n_mels.unwrap_or(d.n_mels),
            context: self.context.unwrap_or(d.context),
            latent: self.latent.unwrap_or(d.latent),
            hidden: self.hidden.clone().unwrap_or(d.hidden),
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            seed: self.seed.unwrap_or(d.seed),
            fpr: self.fpr.unwrap_or(d.fpr),
            contamination: self.contamination,
            calibration_fraction: self.calibration.unwrap_or(d.calibration_fraction),
            reduction: self.reduce.unwrap_or(d.reduction),
            band_normalize: !self.raw_maps,
            batch_norm: !self.no_batch_norm,
            skip_bad: self.skip_bad,
        }
    }

    fn audio_denoise_params(&self) -> Result<AudioDenoiseParams> {
        let d = AudioDenoiseParams::default();
        Ok(AudioDenoiseParams {
            noise: match &self.noise {
                Some(n) => n.parse()?,
                None => d.noise.clone(),
            },
            sample_rate: self.sample_rate,
            n_fft: self.n_fft.unwrap_or(d.n_fft),
            hop: self.hop.unwrap_or(d.hop),
            context: self.context.unwrap_or(d.context),
            hidden: self.hidden.clone().unwrap_or(d.hidden.clone()),
            latent: self.latent.unwrap_or(d.latent),
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            seed: self.seed.unwrap_or(d.seed),
            validation_fraction: self.calibration.unwrap_or(d.validation_fraction),
            skip_bad: self.skip_bad,
        })
    }

    fn denoise_params(&self) -> Result<DenoiseParams> {
        let d = DenoiseParams::default();
        Ok(DenoiseParams {
            noise: match &self.noise {
                Some(n) => n.parse::<NoiseModel>()?,
                None => d.noise,
            },
            noisy: self.noisy.clone(),
            width: self.width.unwrap_or(d.width),
            levels: self.levels.unwrap_or(d.levels),
            patch: self.patch.unwrap_or(d.patch),
            epochs: self.epochs,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            seed: self.seed.unwrap_or(d.seed),
            validation_fraction: self.calibration.unwrap_or(d.validation_fraction),
            skip_bad: self.skip_bad,
        })
    }

    fn is_table(&self) -> bool {
        match self.kind {
            Kind::Auto => is_table_path(self.data()),
            Kind::Images | Kind::Audio => false,
            Kind::Table => true,
        }
    }

    fn table_params(&self) -> TableParams {
        let d = TableParams::default();
        TableParams {
            selection: ColumnSelection {
                columns: self.columns.clone(),
                exclude: self.exclude.clone(),
                id_column: self.id_column.clone(),
            },
            latent: self.latent,
            hidden: self.hidden.clone(),
            variational: self.vae,
            score: if self.elbo {
                TableScore::Elbo
            } else {
                TableScore::Reconstruction
            },
            batch_norm: self.batch_norm,
            epochs: self.epochs,
            folds: self.folds,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            seed: self.seed.unwrap_or(d.seed),
            fpr: self.fpr.unwrap_or(d.fpr),
            contamination: self.contamination,
            calibration_fraction: self.calibration.unwrap_or(d.calibration_fraction),
            mask_rate: self.mask_rate.unwrap_or(d.mask_rate),
            impute_iterations: self.impute_iterations.unwrap_or(d.impute_iterations),
            skip_bad: self.skip_bad,
            ..d
        }
    }

    fn params(&self) -> DetectParams {
        let d = DetectParams::default();
        DetectParams {
            image_size: self.image_size,
            tile: self.tile,
            scale: self.scale,
            latent: self.latent,
            width: self.width,
            epochs: self.epochs,
            folds: self.folds,
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr.unwrap_or(d.learning_rate),
            seed: self.seed.unwrap_or(d.seed),
            fpr: self.fpr.unwrap_or(d.fpr),
            contamination: self.contamination,
            calibration_fraction: self.calibration.unwrap_or(d.calibration_fraction),
            loss: self.loss.unwrap_or(d.loss),
            reduction: self.reduce.unwrap_or(d.reduction),
            smoothing_sigma: self.smoothing,
            normalize_maps: !self.raw_maps,
            knn: self.knn.or(d.knn),
            skip_bad: self.skip_bad,
            head: self.head.unwrap_or(d.head),
        }
    }
}

/// The model kind follows --task and DATA, checked in this order (the first that fits).
pub fn run(args: TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    let inputs: Vec<&std::path::Path> = [&args.data, &args.noisy, &args.clean]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .collect();
    refuse_overwrite(&inputs, &[Output::File(&args.output)])?;
    if args.task == Task::Denoise && args.is_audio() {
        audio_denoiser(&args, device, bars)
    } else if args.task == Task::Denoise {
        image_denoiser(&args, device, bars)
    } else if args.noise.is_some()
        || args.noisy.is_some()
        || args.patch.is_some()
        || args.levels.is_some()
    {
        anyhow::bail!("--noise, --noisy, --patch and --levels train denoisers: add --task denoise")
    } else if args.is_audio() {
        audio_detector(&args, device, bars)
    } else if args.is_table() {
        table_detector(&args, device, bars)
    } else {
        image_detector(&args, device, bars)
    }
}

/// `--task denoise` on recordings.
fn audio_denoiser(args: &TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    let mut wrong = args.table_options();
    wrong.extend(args.image_options());
    wrong.extend(given(&[
        ("--folds", args.folds.is_some()),
        ("--n-mels", args.n_mels.is_some()),
        ("--contamination", args.contamination.is_some()),
        ("--raw-maps", args.raw_maps),
        ("--no-batch-norm", args.no_batch_norm),
        ("--reduce", args.reduce.is_some()),
    ]));
    if !wrong.is_empty() {
        anyhow::bail!(
            "{}: {} cannot be used to train an audio denoiser",
            args.data().display(),
            wrong.join(", ")
        );
    }
    let model = AudioDenoiser::fit(args.data(), &args.audio_denoise_params()?, device, bars)?;
    model
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let m = model.meta();
    let measured = match &m.validation {
        Some(v) => format!(
            ", held-out SNR {:.2} dB noisy -> {:.2} dB denoised ({} recordings)",
            v.snr_noisy, v.snr_denoised, v.recordings
        ),
        None => ", no held-out measurement (fewer than 5 recordings)".into(),
    };
    bars.note(&format!(
        "wrote {}: audio denoiser at {} Hz for {}, {} epochs on {} recordings{measured}, {:.1}s",
        args.output.display(),
        m.features.sample_rate,
        m.noise,
        m.training.epochs,
        m.training.train_samples,
        m.training.seconds
    ));
    Ok(())
}

/// `--task denoise` on images.
fn image_denoiser(args: &TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    if let Some(flag) = args.audio_options().first() {
        anyhow::bail!(
            "{flag} is for recordings; {} holds images",
            args.data().display()
        );
    }
    if args.image_size.is_some()
        || args.latent.is_some()
        || args.contamination.is_some()
        || args.smoothing.is_some()
        || args.folds.is_some()
        || args.head.is_some()
        || args.tile.is_some()
        || args.scale.is_some()
    {
        anyhow::bail!(
            "--image-size, --latent, --contamination, --smoothing, --folds, --head, --tile \
             and --scale are for anomaly detection; a denoiser works at the images' own size \
             (its tiles are --patch)"
        );
    }
    if args.is_table() {
        anyhow::bail!(
            "{}: --task denoise works on images; tables are denoised by imputation",
            args.data().display()
        );
    }
    let model = Denoiser::fit(args.data(), &args.denoise_params()?, device, bars)?;
    model
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let m = model.meta();
    let measured = match &m.validation {
        Some(v) => format!(
            ", held-out PSNR {:.2} dB noisy -> {:.2} dB denoised ({} images)",
            v.psnr_noisy, v.psnr_denoised, v.images
        ),
        None => ", no held-out measurement (fewer than 5 images)".into(),
    };
    bars.note(&format!(
        "wrote {}: {}-channel denoiser for {}, {} epochs on {} images{measured}, {:.1}s",
        args.output.display(),
        m.spec.channels,
        m.noise,
        m.training.epochs,
        m.training.train_samples,
        m.training.seconds
    ));
    Ok(())
}

/// Anomaly detection on recordings.
fn audio_detector(args: &TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    let mut wrong = args.table_options();
    wrong.extend(args.image_options());
    wrong.extend(given(&[("--folds", args.folds.is_some())]));
    if !wrong.is_empty() {
        anyhow::bail!(
            "{}: {} cannot be used with recordings",
            args.data().display(),
            wrong.join(", ")
        );
    }
    let detector = AudioDetector::fit(args.data(), &args.audio_params(), device, bars)?;
    detector
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let m = detector.meta();
    let f = &m.features;
    bars.note(&format!(
        "wrote {}: {} Hz, {} mel bands x {} frames per input, latent {}, {} epochs on {} \
         recordings, threshold {:.6} (false-alarm bound {:.4}, {} calibration \
         recordings), {:.1}s",
        args.output.display(),
        f.mel.sample_rate,
        f.mel.n_mels,
        f.context,
        m.spec.latent,
        m.training.epochs,
        m.training.train_samples,
        m.calibration.threshold,
        m.calibration.effective_fpr,
        m.training.calibration_samples,
        m.training.seconds
    ));
    Ok(())
}

/// Anomaly detection on table rows.
fn table_detector(args: &TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    if let Some(flag) = args.audio_options().first() {
        anyhow::bail!(
            "{flag} is for recordings; {} is a table",
            args.data().display()
        );
    }
    let model = TableModel::fit(args.data(), &args.table_params(), device, bars)?;
    model
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let m = model.meta();
    let (networks, each, calibration) = ensemble_words(model.networks(), &m.calibration);
    bars.note(&format!(
        "wrote {}: {} features, latent {}{}, {networks}{} epochs on {} rows{each}, \
         {calibration} (false-alarm bound {:.4}, {} calibration rows), {:.1}s",
        args.output.display(),
        m.spec.features,
        m.spec.latent,
        if m.spec.variational { " (VAE)" } else { "" },
        m.training.epochs,
        m.training.train_samples,
        m.calibration.effective_fpr,
        m.training.calibration_samples,
        m.training.seconds
    ));
    Ok(())
}

/// How the summary line of a detector of `networks` networks names them, says that the
/// epochs and samples are each network's, and names its calibration.
fn ensemble_words(networks: usize, calibration: &Calibration) -> (String, &'static str, String) {
    match networks {
        1 => (
            String::new(),
            "",
            format!("threshold {:.6}", calibration.threshold),
        ),
        k => (
            format!("{k} networks (cross-conformal), "),
            " each",
            "out-of-fold".to_string(),
        ),
    }
}

/// Anomaly detection on images.
fn image_detector(args: &TrainArgs, device: &Device, bars: &Bars) -> Result<()> {
    if let Some(flag) = args.audio_options().first() {
        anyhow::bail!(
            "{flag} is for recordings; {} holds images (use --kind audio if it holds \
             WAV files too)",
            args.data().display()
        );
    }
    if !args.table_options().is_empty() || args.hidden.is_some() {
        anyhow::bail!(
            "{}: table options (--columns, --exclude, --id-column, --vae, --hidden, \
             --batch-norm) need a table file (.csv, .tsv, .parquet, .npy) or --kind table",
            args.data().display()
        );
    }
    let detector = Detector::fit(args.data(), &args.params(), device, bars)?;
    detector
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let m = detector.meta();
    let (networks, each, calibration) = ensemble_words(detector.networks(), &m.calibration);
    let head = match m.head {
        Some(_) => "discriminative head, ",
        None => "",
    };
    let (input, samples) = match m.prep.tiles {
        Some(t) if t.scale == 1.0 => ("tiles at native resolution", "crops"),
        Some(_) => ("tiles", "crops"),
        None => ("input", "images"),
    };
    let scale = match m.prep.tiles {
        Some(t) if t.scale != 1.0 => format!(" at scale {}", t.scale),
        _ => String::new(),
    };
    bars.note(&format!(
        "wrote {}: {}x{}x{} {input}{scale}, latent {}, {head}{networks}{} epochs on {} \
         {samples}{each}, {calibration} (false-alarm bound {:.4}, {} calibration images), \
         {:.1}s",
        args.output.display(),
        m.prep.channels,
        m.prep.image_size,
        m.prep.image_size,
        m.spec.latent,
        m.training.epochs,
        m.training.train_samples,
        m.calibration.effective_fpr,
        m.training.calibration_samples,
        m.training.seconds
    ));
    Ok(())
}
