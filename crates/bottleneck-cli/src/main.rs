//! The `bottleneck` binary: argument parsing and printing; the work lives in the library.

mod demo;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bottleneck::data::synthetic::{BoardConfig, generate_boards};
use bottleneck::device::device_by_name;
use bottleneck::score::{Loss, Reduction};
use bottleneck::task::detect::{DetectParams, Detector, score_to_csv};
use clap::{Args, Parser, Subcommand};

use crate::progress::Bars;

// Training allocates and frees large tensors every step; glibc's malloc returns them to the
// kernel each time and page-faults them back. mimalloc keeps them: +20% training and +45%
// scoring throughput measured with bench/throughput.sh.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Autoencoders trained on normal data: anomaly detection with calibrated thresholds and
/// heatmaps.
#[derive(Parser)]
#[command(name = "bottleneck", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// No progress bars or warnings on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Compute device: cpu, or vulkan in builds with the `vulkan` feature.
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Train on good images (a folder searched recursively, or an MVTec root's train/good)
    /// and calibrate a threshold on held-out good images.
    Train(TrainArgs),
    /// Score images: writes path,score,p_value,is_anomaly, and heatmaps with --maps.
    Score {
        /// Model file written by `train`.
        model: PathBuf,
        /// An image or a folder of images (searched recursively).
        data: PathBuf,
        /// CSV file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Folder for per-image heatmap overlays (PNG) and raw maps (.npy).
        #[arg(long)]
        maps: Option<PathBuf>,
        /// Skip unreadable images with a warning instead of stopping.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Evaluate on an MVTec-layout root (test/good, test/<defect>, ground_truth/):
    /// prints a JSON object of metrics.
    Eval {
        /// Model file written by `train`.
        model: PathBuf,
        /// Root in the MVTec AD layout.
        root: PathBuf,
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

#[derive(Args)]
struct TrainArgs {
    /// Folder of good images, or a root in the MVTec AD layout.
    data: PathBuf,
    /// Model file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Side of the square network input [default: the images' size rounded down to a
    /// multiple of 16 (of 4 below 32 px), at most 128].
    #[arg(long)]
    image_size: Option<usize>,
    /// Bottleneck size [default: 32, 64 or 128 by image size].
    #[arg(long)]
    latent: Option<usize>,
    /// Channels of the first convolution; doubles per level up to 4x [default: 32].
    #[arg(long)]
    width: Option<usize>,
    /// Passes over the training images [default: about 2,000 optimizer steps].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per optimizer step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
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
    /// Share of the good images held out for calibration.
    #[arg(long, default_value_t = 0.15)]
    calibration: f64,
    /// Training loss and map: ssim or mse.
    #[arg(long, default_value = "ssim")]
    loss: Loss,
    /// Image score from the map: mean, max or topN (mean of the top N percent).
    #[arg(long, default_value = "max")]
    reduce: Reduction,
    /// Gaussian smoothing of the map in input pixels [default: image size / 32].
    #[arg(long)]
    smoothing: Option<f32>,
    /// Do not standardise maps per pixel by the training images' error statistics.
    #[arg(long)]
    raw_maps: bool,
    /// Also score by the mean distance to the K nearest training images in the bottleneck;
    /// the image score is the larger of the two on a common scale (0: map score only).
    #[arg(long, default_value_t = 5)]
    knn: usize,
    /// Skip unreadable images with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

impl TrainArgs {
    fn params(&self) -> DetectParams {
        DetectParams {
            image_size: self.image_size,
            latent: self.latent,
            width: self.width,
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.lr,
            seed: self.seed,
            fpr: self.fpr,
            contamination: self.contamination,
            calibration_fraction: self.calibration,
            loss: self.loss,
            reduction: self.reduce,
            smoothing_sigma: self.smoothing,
            normalize_maps: !self.raw_maps,
            knn: self.knn,
            skip_bad: self.skip_bad,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let bars = Bars::new(cli.quiet);
    let device = device_by_name(&cli.device)?;
    match cli.command {
        Command::Train(args) => {
            let detector = Detector::fit(&args.data, &args.params(), &device, &bars)?;
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
                m.training.train_images,
                m.calibration.threshold,
                m.calibration.effective_fpr,
                m.training.calibration_images,
                m.training.seconds
            ));
        }
        Command::Score {
            model,
            data,
            output,
            maps,
            skip_bad,
        } => {
            let detector = Detector::load(&model, &device)?;
            let (rows, skipped) =
                score_to_csv(&detector, &data, &output, maps.as_deref(), skip_bad, &bars)?;
            let extra = if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            };
            bars.note(&format!("wrote {rows} rows to {}{extra}", output.display()));
        }
        Command::Eval { model, root } => {
            let detector = Detector::load(&model, &device)?;
            let report = detector.evaluate(&root, &bars)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
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
        Command::Demo { out, seed } => demo::run(&out, seed, &device, &bars)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
