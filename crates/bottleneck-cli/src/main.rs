//! The `bottleneck` binary: argument parsing and printing; the work lives in the library.

mod demo;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bottleneck::data::audio::is_audio_data;
use bottleneck::data::machines::{MachineConfig, generate_machine_sounds};
use bottleneck::data::synthetic::{BoardConfig, generate_boards};
use bottleneck::data::table::{ColumnSelection, is_table_path};
use bottleneck::device::select_device;
use bottleneck::model::file::{ModelKind, TableScore};
use bottleneck::report::{
    DEFAULT_TOP, ImageReport, ReportOptions, ReportSummary, TableReport, write_report,
};
use bottleneck::score::{Loss, Reduction};
use bottleneck::task::detect::{DetectParams, Detector, score_to_csv};
use bottleneck::task::sound::score_audio_to_csv;
use bottleneck::task::{
    AudioDenoiseParams, AudioDenoiser, AudioDetector, AudioParams, Catalogue, DenoiseParams,
    Denoiser, Model, TableModel, TableParams, encode_to_file,
};
use bottleneck::train::NoiseModel;
use bottleneck_serve::{ServeConfig, default_workers};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::progress::Bars;

// Training allocates and frees large tensors every step; glibc's malloc returns them to the
// kernel each time and page-faults them back. mimalloc keeps them: +20% training and +45%
// scoring throughput measured with bench/throughput.sh.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Autoencoders trained on normal data: anomaly detection with calibrated thresholds and
/// heatmaps (images), per-column explanations (tables) or time-frequency error maps
/// (audio), bottleneck codes, filling missing cells, and image and audio denoising.
#[derive(Parser)]
#[command(name = "bottleneck", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bars or warnings on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Compute device: auto (a usable GPU in builds with the `vulkan` feature, else the
    /// CPU), cpu, or vulkan.
    #[arg(long, global = true, default_value = "auto")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Train on normal data and calibrate a threshold on a held-out part of it. DATA is a
    /// folder of good images (searched recursively, or an MVTec root's train/good), a
    /// table (.csv, .tsv, .parquet, .npy) of normal rows, or a folder of normal recordings
    /// (.wav). With --task denoise: clean images or clean recordings.
    Train(Box<TrainArgs>),
    /// Score images (path,score,p_value,is_anomaly; heatmaps with --maps), table rows
    /// (row or id,score,p_value,is_anomaly; the top columns with --explain), or recordings
    /// (path,score,p_value,is_anomaly,note; a silent or too-short recording is not scored
    /// and says why in note; time-frequency error maps with --maps). Rows are numbered from
    /// 1, header not counted.
    Score {
        /// Model file written by `train`.
        model: PathBuf,
        /// An image, a folder of images, a table, or a WAV file or folder (as the model was
        /// trained on).
        data: PathBuf,
        /// CSV file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Images: folder for per-image heatmap overlays (PNG) and raw maps (.npy). Audio:
        /// per-recording error images (`<name>_map.png`: time left to right, low
        /// frequencies at the bottom) and raw maps (`<name>_map.npy`, mel bands x frames).
        #[arg(long)]
        maps: Option<PathBuf>,
        /// Tables: add the K columns contributing most to each row's reconstruction error
        /// (explain_k) with their share of it (share_k).
        #[arg(long, default_value_t = 0, value_name = "K")]
        explain: usize,
        /// Also write an HTML report (see `report`) of the same images or rows, from the
        /// same pass; images are labelled when DATA is laid out like an MVTec test folder
        /// (good/ beside defect folders).
        #[arg(long, value_name = "HTML")]
        report: Option<PathBuf>,
        /// With --report: most anomalous samples shown.
        #[arg(long, value_name = "N", requires = "report", default_value_t = DEFAULT_TOP)]
        top: usize,
        /// With --report, tables: the column holding each row's label (0/1 or true/false).
        #[arg(long, value_name = "COLUMN", requires = "report")]
        label: Option<String>,
        /// Skip unreadable images or bad rows with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Write one self-contained HTML file (charts and images embedded, no external links)
    /// about a model on DATA: the model and its threshold, the training loss curve, score
    /// histograms of the calibration samples and of DATA against the threshold, ROC and
    /// precision-recall curves with AUROC and AUPR when labels are known, and the most
    /// anomalous samples with their heatmaps (images) or the columns behind their scores
    /// (tables).
    Report {
        /// Anomaly-detection model file written by `train` (images or table).
        model: PathBuf,
        /// Images: a folder or an image; an MVTec root is reported on its test/ images,
        /// labelled by folder (good/ normal, every other folder anomalous), and so is a
        /// test folder itself. Tables: a table file, as the model was trained on.
        data: PathBuf,
        /// HTML file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Most anomalous samples shown.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_TOP)]
        top: usize,
        /// Tables: the column holding each row's label (0/1 or true/false, 1 = anomalous),
        /// for ROC and precision-recall curves.
        #[arg(long, value_name = "COLUMN")]
        label: Option<String>,
        /// Skip unreadable images or bad rows with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Remove noise from images or recordings with a model trained by `train --task
    /// denoise`. Images keep their size, channels, bit depth and format; recordings their
    /// sample rate, channels, sample format and length. Inputs are never overwritten.
    Denoise {
        /// Denoising model file.
        model: PathBuf,
        /// An image or WAV file, or a folder of them (searched recursively).
        input: PathBuf,
        /// Output folder (same relative paths as the input), or a file path for one input
        /// file.
        #[arg(short, long)]
        output: PathBuf,
        /// Images: side of the tiles large images are cut into (they overlap and are
        /// blended).
        #[arg(long, default_value_t = bottleneck::task::denoise::DEFAULT_TILE)]
        tile: usize,
        /// Skip unreadable images with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Write the bottleneck code of every image or row (feature extraction, dimensionality
    /// reduction): the path or id first, then z0, z1, ... (.npy: the codes only).
    Encode {
        /// Model file written by `train` (images or table).
        model: PathBuf,
        /// An image, a folder of images, or a table.
        data: PathBuf,
        /// Output file: .csv, .parquet or .npy.
        #[arg(short, long)]
        output: PathBuf,
        /// Skip unreadable images or bad rows with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Build a catalogue for similarity search: the bottleneck codes of every image or row
    /// of DATA, where each came from, and the model (so `search` needs nothing else).
    /// Large catalogues get an approximate nearest-neighbour graph (HNSW).
    Index {
        /// Model file written by `train` (images or table; not a denoiser).
        model: PathBuf,
        /// An image, a folder of images, or a table.
        data: PathBuf,
        /// Catalogue file to write (.bnidx).
        #[arg(short, long)]
        output: PathBuf,
        /// Add DATA to an existing catalogue made with the same model (items already in it
        /// by name are left out) instead of writing a new one.
        #[arg(long)]
        append: bool,
        /// Give the catalogue an approximate search graph (HNSW) from this many items on;
        /// smaller catalogues are searched exactly [default: 10,000; with --append: the
        /// catalogue's own].
        #[arg(long)]
        graph_from: Option<usize>,
        /// Skip unreadable images or bad rows with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Find the items of a catalogue nearest to each query in the bottleneck: one line per
    /// hit (query, rank, item, distance), nearest first.
    Search {
        /// Catalogue written by `index`.
        catalogue: PathBuf,
        /// An image, a folder of images, or a table of rows (as the catalogue's model reads).
        query: PathBuf,
        /// Hits per query.
        #[arg(short, default_value_t = 10)]
        k: usize,
        /// Print one JSON object per query (query, hits with item, name and distance).
        #[arg(long)]
        json: bool,
        /// Compare with every item even when the catalogue has a graph.
        #[arg(long)]
        exact: bool,
        /// Skip unreadable images or bad rows with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Fill the missing cells (empty, NA, NaN, null) of a table with a table model; every
    /// other cell, the column order and the id column are kept as they were.
    Impute {
        /// Table model file written by `train`.
        model: PathBuf,
        /// Table with gaps (.csv, .tsv, .parquet, .npy).
        data: PathBuf,
        /// Output file: .csv (or .npy when every column is a feature).
        #[arg(short, long)]
        output: PathBuf,
        /// Copy rows with no observed feature through unfilled instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Evaluate on an MVTec-layout root (test/good, test/<defect>, ground_truth/):
    /// prints a JSON object of metrics (audio models: AUROC and pAUC up to a false-positive
    /// rate of 0.1, overall and per fault folder).
    Eval {
        /// Model file written by `train`.
        model: PathBuf,
        /// Root in the MVTec AD layout.
        root: PathBuf,
    },
    /// Serve a model over HTTP: POST /v1/score (images, or JSON/CSV rows), /v1/encode,
    /// /v1/denoise (denoising models); GET /healthz, /v1/model, /metrics (Prometheus), and
    /// a page at / to try images or rows in a browser. Stops on SIGTERM or Ctrl-C after the
    /// requests in flight are answered.
    Serve {
        /// Model file written by `train` (images, table or denoiser).
        model: PathBuf,
        /// Address to listen on (port 0 picks a free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Inference threads, each with its own copy of the model [default: one per core, at
        /// most 8].
        #[arg(long)]
        workers: Option<usize>,
        /// Requests that may wait for a worker; beyond that the service answers 503 at once.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// Largest request body in MiB (413 above).
        #[arg(long, default_value_t = 32)]
        max_body_mb: usize,
        /// Longest time in seconds a request may take, upload included (504 above).
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Write synthetic circuit boards (good and defective, with masks) in the MVTec layout.
    Boards {
        /// Output root.
        out: PathBuf,
        /// Side of the images in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Good boards under train/good.
        #[arg(long, default_value_t = 400)]
        train: usize,
        /// Good boards under test/good.
        #[arg(long, default_value_t = 60)]
        test_good: usize,
        /// Boards per defect type under test/<defect>.
        #[arg(long, default_value_t = 20)]
        per_defect: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Write synthetic machine sounds (motor hum with harmonics and load changes; faults:
    /// bearing clicks, imbalance wobble, pitch drift) as 16-bit WAV files in the MVTec
    /// layout: train/good, test/good, test/<fault>.
    Machines {
        /// Output root.
        out: PathBuf,
        /// Sample rate in Hz.
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        /// Length of each clip in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f32,
        /// Normal clips under train/good.
        #[arg(long, default_value_t = 200)]
        train: usize,
        /// Normal clips under test/good.
        #[arg(long, default_value_t = 50)]
        test_good: usize,
        /// Clips per fault under test/<fault>.
        #[arg(long, default_value_t = 25)]
        per_fault: usize,
        /// Strength of the faults: 1 plainly audible, 0.2 subtle.
        #[arg(long, default_value_t = 1.0)]
        severity: f32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Generate synthetic circuit boards, train, evaluate and write heatmaps and a summary.
    Demo {
        /// Output folder.
        #[arg(long, default_value = "bottleneck-demo")]
        out: PathBuf,
        /// Seed for the boards and the training run.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

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
struct TrainArgs {
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
    /// Side of the square network input [default: the images' size rounded down to a
    /// multiple of 16 (of 4 below 32 px), at most 128].
    #[arg(long)]
    image_size: Option<usize>,
    /// Bottleneck size [default: images 32, 64 or 128 by image size; tables a quarter of
    /// the number of features, 2 to 32; audio detection 8; audio denoising 256].
    #[arg(long)]
    latent: Option<usize>,
    /// Channels of the first convolution; doubles per level up to 4x [default: 32].
    #[arg(long)]
    width: Option<usize>,
    /// Passes over the training data [default: about 2,000 optimizer steps for images and
    /// audio detection, 6,000 for tables, 4,500 for image denoisers (whose epoch is one
    /// pass worth of pixels in random patches), 3,000 for audio denoisers (whose epoch is
    /// one pass over the clean audio in 1 s crops)].
    #[arg(long)]
    epochs: Option<usize>,
    /// Samples per optimizer step [default: 32 images, 64 rows, 256 stacked audio frames,
    /// 8 one-second crops for audio denoisers].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam learning rate (decays to 5% of it over the run, cosine).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed for weights, shuffling and the calibration split: same seed, same model.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Target false-alarm rate: flag images whose conformal p-value is at most this.
    #[arg(long, default_value_t = 0.01)]
    fpr: f64,
    /// Expected share of anomalies (PyOD's contamination): threshold at that quantile of
    /// the calibration scores instead of the conformal rule.
    #[arg(long, conflicts_with = "fpr")]
    contamination: Option<f64>,
    /// Share of the good images (rows, recordings) held out for calibration; for denoisers,
    /// the share of clean images or recordings held out to measure the result [default:
    /// 0.15; denoisers 0.1].
    #[arg(long)]
    calibration: Option<f64>,
    /// Training loss and map: ssim or mse.
    #[arg(long, default_value = "ssim")]
    loss: Loss,
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
    /// the image score is the larger of the two on a common scale (0: map score only).
    #[arg(long, default_value_t = 5)]
    knn: usize,
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
    /// Tables: share of observed cells hidden from the network at each training step.
    #[arg(long, default_value_t = 0.2, help_heading = "Tables")]
    mask_rate: f32,
    /// Tables: refinement passes of `impute` after the first fill.
    #[arg(long, default_value_t = 1, help_heading = "Tables")]
    impute_iterations: usize,
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
            ("--width", self.width.is_some()),
            ("--smoothing", self.smoothing.is_some()),
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
            learning_rate: self.lr,
            seed: self.seed,
            fpr: self.fpr,
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
            learning_rate: self.lr,
            seed: self.seed,
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
            learning_rate: self.lr,
            seed: self.seed,
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
            batch_size: self.batch_size.unwrap_or(d.batch_size),
            learning_rate: self.lr,
            seed: self.seed,
            fpr: self.fpr,
            contamination: self.contamination,
            calibration_fraction: self.calibration.unwrap_or(0.15),
            mask_rate: self.mask_rate,
            impute_iterations: self.impute_iterations,
            skip_bad: self.skip_bad,
            ..d
        }
    }

    fn params(&self) -> DetectParams {
        DetectParams {
            image_size: self.image_size,
            latent: self.latent,
            width: self.width,
            epochs: self.epochs,
            batch_size: self
                .batch_size
                .unwrap_or(DetectParams::default().batch_size),
            learning_rate: self.lr,
            seed: self.seed,
            fpr: self.fpr,
            contamination: self.contamination,
            calibration_fraction: self.calibration.unwrap_or(0.15),
            loss: self.loss,
            reduction: self.reduce.unwrap_or(Reduction::Max),
            smoothing_sigma: self.smoothing,
            normalize_maps: !self.raw_maps,
            knn: self.knn,
            skip_bad: self.skip_bad,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let bars = Bars::new(cli.quiet);
    let (device, device_name) = select_device(&cli.device)?;
    if matches!(cli.command, Command::Train(_) | Command::Demo { .. }) {
        bars.note(&format!("device: {device_name}"));
    }
    match cli.command {
        Command::Train(args) if args.task == Task::Denoise && args.is_audio() => {
            let mut wrong = args.table_options();
            wrong.extend(args.image_options());
            wrong.extend(given(&[
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
            let model =
                AudioDenoiser::fit(args.data(), &args.audio_denoise_params()?, &device, &bars)?;
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
        }
        Command::Train(args) if args.task == Task::Denoise => {
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
            {
                anyhow::bail!(
                    "--image-size, --latent, --contamination and --smoothing are for anomaly \
                     detection; a denoiser works at the images' own size"
                );
            }
            if args.is_table() {
                anyhow::bail!(
                    "{}: --task denoise works on images; tables are denoised by imputation",
                    args.data().display()
                );
            }
            let model = Denoiser::fit(args.data(), &args.denoise_params()?, &device, &bars)?;
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
        }
        Command::Train(args)
            if args.noise.is_some()
                || args.noisy.is_some()
                || args.patch.is_some()
                || args.levels.is_some() =>
        {
            anyhow::bail!(
                "--noise, --noisy, --patch and --levels train denoisers: add --task denoise"
            );
        }
        Command::Train(args) if args.is_audio() => {
            let mut wrong = args.table_options();
            wrong.extend(args.image_options());
            if !wrong.is_empty() {
                anyhow::bail!(
                    "{}: {} cannot be used with recordings",
                    args.data().display(),
                    wrong.join(", ")
                );
            }
            let detector = AudioDetector::fit(args.data(), &args.audio_params(), &device, &bars)?;
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
        }
        Command::Train(args) if args.is_table() => {
            if let Some(flag) = args.audio_options().first() {
                anyhow::bail!(
                    "{flag} is for recordings; {} is a table",
                    args.data().display()
                );
            }
            let model = TableModel::fit(args.data(), &args.table_params(), &device, &bars)?;
            model
                .save(&args.output)
                .with_context(|| format!("writing {}", args.output.display()))?;
            let m = model.meta();
            bars.note(&format!(
                "wrote {}: {} features, latent {}{}, {} epochs on {} rows, threshold {:.6} \
                 (false-alarm bound {:.4}, {} calibration rows), {:.1}s",
                args.output.display(),
                m.spec.features,
                m.spec.latent,
                if m.spec.variational { " (VAE)" } else { "" },
                m.training.epochs,
                m.training.train_samples,
                m.calibration.threshold,
                m.calibration.effective_fpr,
                m.training.calibration_samples,
                m.training.seconds
            ));
        }
        Command::Train(args) => {
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
            let detector = Detector::fit(args.data(), &args.params(), &device, &bars)?;
            detector
                .save(&args.output)
                .with_context(|| format!("writing {}", args.output.display()))?;
            let m = detector.meta();
            bars.note(&format!(
                "wrote {}: {}x{}x{} input, latent {}, {} epochs on {} images, threshold {:.6} \
                 (false-alarm bound {:.4}, {} calibration images), {:.1}s",
                args.output.display(),
                m.prep.channels,
                m.prep.image_size,
                m.prep.image_size,
                m.spec.latent,
                m.training.epochs,
                m.training.train_samples,
                m.calibration.threshold,
                m.calibration.effective_fpr,
                m.training.calibration_samples,
                m.training.seconds
            ));
        }
        Command::Score {
            model,
            data,
            output,
            maps,
            skip_bad,
            explain,
            report,
            top,
            label,
        } => {
            let options = ReportOptions {
                top,
                label_column: label,
            };
            match Model::load(&model, &device)? {
                Model::AudioDetector(detector) => {
                    if explain > 0 {
                        anyhow::bail!("--explain names table columns; use --maps for recordings");
                    }
                    if report.is_some() {
                        anyhow::bail!(
                            "--report covers image and table models; audio is not in it yet"
                        );
                    }
                    let (rows, unscored, skipped) = score_audio_to_csv(
                        &detector,
                        &data,
                        &output,
                        maps.as_deref(),
                        skip_bad,
                        &bars,
                    )?;
                    bars.note(&format!(
                        "wrote {rows} rows to {}{}{}",
                        output.display(),
                        if unscored > 0 {
                            format!(", {unscored} not scored (see note)")
                        } else {
                            String::new()
                        },
                        skipped_note(skipped)
                    ));
                }
                Model::TableDetector(table) => {
                    if maps.is_some() {
                        anyhow::bail!(
                            "--maps draws heatmaps of images; use --explain K for tables"
                        );
                    }
                    if !is_table_path(&data) {
                        anyhow::bail!(
                            "{} is a table model; {} is not a table file (.csv, .tsv, .parquet, .npy)",
                            model.display(),
                            data.display()
                        );
                    }
                    let mut html = report
                        .as_ref()
                        .map(|_| TableReport::new(&table, &model, &data, &options));
                    let (rows, skipped) =
                        table.score_file(&data, &output, explain, skip_bad, &bars, |c| {
                            html.as_mut().map_or(Ok(()), |r| r.add_chunk(c))
                        })?;
                    bars.note(&format!(
                        "wrote {rows} rows to {}{}",
                        output.display(),
                        skipped_note(skipped)
                    ));
                    if let (Some(html), Some(path)) = (html, report) {
                        let summary = html.write(&path, skipped)?;
                        bars.note(&report_note(&path, &summary, "rows"));
                    }
                }
                Model::ImageDetector(detector) => {
                    if explain > 0 {
                        anyhow::bail!("--explain names table columns; use --maps for images");
                    }
                    if is_table_path(&data) {
                        anyhow::bail!(
                            "{} is an image model; {} is a table: train a table model on it",
                            model.display(),
                            data.display()
                        );
                    }
                    let mut html = match &report {
                        Some(_) => Some(ImageReport::new(&detector, &model, &data, &options)?),
                        None => None,
                    };
                    let (rows, skipped) = score_to_csv(
                        &detector,
                        &data,
                        &output,
                        maps.as_deref(),
                        skip_bad,
                        &bars,
                        |item| html.as_mut().map_or(Ok(()), |r| r.add(item)),
                    )?;
                    bars.note(&format!(
                        "wrote {rows} rows to {}{}",
                        output.display(),
                        skipped_note(skipped)
                    ));
                    if let (Some(html), Some(path)) = (html, report) {
                        let summary = html.write(&path, skipped)?;
                        bars.note(&report_note(&path, &summary, "images"));
                    }
                }
                other @ (Model::ImageDenoiser(_) | Model::AudioDenoiser(_)) => {
                    return Err(other.wrong_kind(&model, ModelKind::ImageDetector).into());
                }
            }
        }
        Command::Report {
            model,
            data,
            output,
            top,
            label,
            skip_bad,
        } => {
            let options = ReportOptions {
                top,
                label_column: label,
            };
            let summary = write_report(&model, &data, &output, &options, skip_bad, &device, &bars)?;
            let what = match ModelKind::of_file(&model)? {
                ModelKind::TableDetector => "rows",
                _ => "images",
            };
            bars.note(&report_note(&output, &summary, what));
        }
        Command::Denoise {
            model,
            input,
            output,
            tile,
            skip_bad,
        } => match Model::load(&model, &device)? {
            Model::AudioDenoiser(denoiser) => {
                let (written, silent, skipped) =
                    denoiser.denoise_paths(&input, &output, skip_bad, &bars)?;
                bars.note(&format!(
                    "wrote {written} recordings to {}{}{}",
                    output.display(),
                    if silent > 0 {
                        format!(", {silent} silent (written unchanged)")
                    } else {
                        String::new()
                    },
                    skipped_note(skipped)
                ));
            }
            Model::ImageDenoiser(denoiser) => {
                let denoiser = denoiser.with_tile(tile);
                let (written, skipped) =
                    denoiser.denoise_paths(&input, &output, skip_bad, &bars)?;
                bars.note(&format!(
                    "wrote {written} images to {}{}",
                    output.display(),
                    skipped_note(skipped)
                ));
            }
            other @ (Model::ImageDetector(_)
            | Model::TableDetector(_)
            | Model::AudioDetector(_)) => {
                anyhow::bail!(
                    "{}: {}, this needs a denoising model (train one with --task denoise)",
                    model.display(),
                    other.kind()
                );
            }
        },
        Command::Encode {
            model,
            data,
            output,
            skip_bad,
        } => {
            let (rows, skipped) = encode_to_file(&model, &data, &output, skip_bad, &device, &bars)?;
            bars.note(&format!(
                "wrote {rows} codes to {}{}",
                output.display(),
                skipped_note(skipped)
            ));
        }
        Command::Index {
            model,
            data,
            output,
            append,
            graph_from,
            skip_bad,
        } => {
            let (catalogue, added, duplicates, skipped) = if append && output.exists() {
                let mut catalogue = Catalogue::open(&output)?;
                let given = std::fs::read(&model)
                    .with_context(|| format!("reading {}", model.display()))?;
                if given != catalogue.model_bytes() {
                    anyhow::bail!(
                        "{} was made with another model than {}; index into a new catalogue",
                        output.display(),
                        model.display()
                    );
                }
                if let Some(n) = graph_from {
                    catalogue.set_graph_from(n);
                }
                let (added, duplicates, skipped) =
                    catalogue.append(&data, skip_bad, &device, &bars)?;
                (catalogue, added, duplicates, skipped)
            } else {
                let (catalogue, skipped) = Catalogue::build(
                    &model,
                    &data,
                    graph_from.unwrap_or(bottleneck::task::search::ANN_THRESHOLD),
                    skip_bad,
                    &device,
                    &bars,
                )?;
                let added = catalogue.len();
                (catalogue, added, 0, skipped)
            };
            catalogue.save(&output)?;
            bars.note(&format!(
                "wrote {}: {} items ({added} added{}), {}{}",
                output.display(),
                catalogue.len(),
                if duplicates > 0 {
                    format!(", {duplicates} already there")
                } else {
                    String::new()
                },
                if catalogue.meta().graph {
                    "approximate search graph"
                } else {
                    "exact search"
                },
                skipped_note(skipped)
            ));
        }
        Command::Search {
            catalogue,
            query,
            k,
            json,
            exact,
            skip_bad,
        } => {
            if k == 0 {
                anyhow::bail!("-k must be at least 1");
            }
            let cat = Catalogue::open(&catalogue)?;
            let (names, codes, skipped) = cat.encode_queries(&query, skip_bad, &device, &bars)?;
            let results = cat.search(&codes, k, exact)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            use std::io::Write;
            if !json {
                writeln!(out, "query\trank\titem\tdistance")?;
            }
            #[derive(serde::Serialize)]
            struct QueryHits<'a> {
                query: &'a str,
                hits: &'a [bottleneck::task::Hit],
            }
            for (name, hits) in names.iter().zip(&results) {
                if json {
                    let line = serde_json::to_string(&QueryHits { query: name, hits })?;
                    writeln!(out, "{line}")?;
                } else {
                    for (rank, hit) in hits.iter().enumerate() {
                        writeln!(
                            out,
                            "{name}\t{}\t{}\t{:.6}",
                            rank + 1,
                            hit.name,
                            hit.distance
                        )?;
                    }
                }
            }
            out.flush()?;
            if skipped > 0 {
                bars.note(&format!("{skipped} queries skipped"));
            }
        }
        Command::Impute {
            model,
            data,
            output,
            skip_bad,
        } => {
            let table = TableModel::load(&model, &device)?;
            let (rows, filled) = table.impute_file(&data, &output, skip_bad, &bars)?;
            bars.note(&format!(
                "wrote {rows} rows to {}, {filled} cells filled",
                output.display()
            ));
        }
        Command::Eval { model, root } => {
            let report = match Model::load(&model, &device)? {
                Model::AudioDetector(detector) => {
                    serde_json::to_string_pretty(&detector.evaluate(&root, 0.1, &bars)?)?
                }
                Model::ImageDetector(detector) => {
                    serde_json::to_string_pretty(&detector.evaluate(&root, &bars)?)?
                }
                other @ (Model::TableDetector(_)
                | Model::ImageDenoiser(_)
                | Model::AudioDenoiser(_)) => anyhow::bail!(
                    "{}: {}; eval reads a labelled MVTec-layout folder of images or recordings",
                    model.display(),
                    other.kind()
                ),
            };
            println!("{report}");
        }
        Command::Serve {
            model,
            addr,
            workers,
            queue,
            max_body_mb,
            timeout,
        } => {
            let timeout = std::time::Duration::try_from_secs_f64(timeout)
                .ok()
                .filter(|t| !t.is_zero())
                .with_context(|| {
                    format!("--timeout must be a positive number of seconds, got {timeout}")
                })?;
            let max_body = max_body_mb
                .checked_mul(1 << 20)
                .filter(|&b| b > 0)
                .with_context(|| format!("--max-body-mb {max_body_mb} is out of range"))?;
            if queue == 0 {
                anyhow::bail!("--queue must be at least 1");
            }
            let config = ServeConfig {
                addr,
                workers: workers.unwrap_or_else(default_workers).max(1),
                queue,
                max_body,
                timeout,
            };
            let workers = config.workers;
            // Serving prints its address and notices whatever --quiet says: it is the only
            // way to learn the port when port 0 was asked for.
            bottleneck_serve::serve(
                &model,
                &config,
                &device,
                |addr, served| {
                    eprintln!(
                        "serving {} ({served:?}, {workers} worker{}) on http://{addr}",
                        model.display(),
                        if workers == 1 { "" } else { "s" }
                    )
                },
                |notice| eprintln!("{notice}"),
            )?;
        }
        Command::Boards {
            out,
            size,
            train,
            test_good,
            per_defect,
            seed,
        } => {
            let cfg = BoardConfig {
                image_size: size,
                train_good: train,
                test_good,
                test_per_defect: per_defect,
                seed,
            };
            let n = generate_boards(&out, &cfg)?;
            bars.note(&format!("wrote {n} boards under {}", out.display()));
        }
        Command::Machines {
            out,
            sample_rate,
            seconds,
            train,
            test_good,
            per_fault,
            severity,
            seed,
        } => {
            if !(severity.is_finite() && severity >= 0.0) {
                anyhow::bail!("--severity must be a number of at least 0, got {severity}");
            }
            let cfg = MachineConfig {
                sample_rate,
                seconds,
                train,
                test_good,
                test_per_fault: per_fault,
                severity,
                seed,
            };
            let n = generate_machine_sounds(&out, &cfg)?;
            bars.note(&format!(
                "wrote {n} synthetic machine recordings under {}",
                out.display()
            ));
        }
        Command::Demo { out, seed } => demo::run(&out, seed, &device, &bars)?,
    }
    Ok(())
}

/// One line about a written report: what it covers and, with labels, how well it ranks.
fn report_note(path: &std::path::Path, s: &ReportSummary, what: &str) -> String {
    let quality = match (s.auroc, s.aupr) {
        (Some(roc), Some(pr)) => format!(", AUROC {roc:.4}, AUPR {pr:.4}"),
        _ if s.labelled => ", labels of one class only".into(),
        _ => String::new(),
    };
    format!(
        "wrote report {} ({} KB): {} {what}, {} flagged{quality}{}",
        path.display(),
        s.bytes.div_ceil(1024),
        s.samples,
        s.flagged,
        skipped_note(s.skipped)
    )
}

fn skipped_note(skipped: usize) -> String {
    if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`search ... | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => match e.downcast_ref::<bottleneck::Error>() {
            Some(bottleneck::Error::Param { field, reason }) => {
                eprintln!("error: {} {reason}", flag_of(field));
                ExitCode::FAILURE
            }
            _ => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The flag that sets the library's params field `field`.
fn flag_of(field: &str) -> String {
    match field {
        "calibration_fraction" | "validation_fraction" => "--calibration".into(),
        "variational" => "--vae".into(),
        f => format!("--{}", f.replace('_', "-")),
    }
}
