//! The `bottleneck` binary: argument parsing and printing; the work lives in the library.
//! One module per subcommand under `commands`.

mod commands;
mod progress;

use std::process::ExitCode;

use anyhow::Result;
use bottleneck::device::select_device;
use clap::{Parser, Subcommand};

use crate::commands::boards::BoardsArgs;
use crate::commands::demo::DemoArgs;
use crate::commands::denoise::DenoiseArgs;
use crate::commands::encode::EncodeArgs;
use crate::commands::eval::EvalArgs;
use crate::commands::export::ExportArgs;
use crate::commands::impute::ImputeArgs;
use crate::commands::index::IndexArgs;
use crate::commands::machines::MachinesArgs;
use crate::commands::report::ReportArgs;
use crate::commands::score::ScoreArgs;
use crate::commands::search::SearchArgs;
use crate::commands::serve::ServeArgs;
use crate::commands::train::TrainArgs;
use crate::progress::Bars;

// Training allocates and frees large tensors every step; glibc's malloc returns them to the
// kernel each time and page-faults them back. mimalloc keeps them: +20% training and +45%
// scoring throughput measured with bench/throughput.sh; holding freed pages for 10 s
// instead of mimalloc's 1 s added 1-5% (see `bottleneck::allocator`).
#[global_allocator]
static GLOBAL: bottleneck::allocator::Allocator = bottleneck::allocator::Allocator;

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
    /// Most megapixels one image may have; larger files are refused (skipped with
    /// --skip-bad) from their header, before decoding. Raise it for very large scans (one
    /// image takes about 20 bytes a pixel while it is decoded and converted).
    #[arg(long, global = true, default_value_t = 64.0)]
    max_megapixels: f64,
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
    Score(ScoreArgs),
    /// Write one self-contained HTML file (charts and images embedded, no external links)
    /// about a model on DATA: the model and its threshold, the training loss curve, score
    /// histograms of the calibration samples and of DATA against the threshold, ROC and
    /// precision-recall curves with AUROC and AUPR when labels are known, and the most
    /// anomalous samples with their heatmaps (images) or the columns behind their scores
    /// (tables).
    Report(ReportArgs),
    /// Remove noise from images or recordings with a model trained by `train --task
    /// denoise`. Images keep their size, channels, bit depth and format; recordings their
    /// sample rate, channels, sample format and length. Inputs are never overwritten.
    Denoise(DenoiseArgs),
    /// Write the bottleneck code of every image or row (feature extraction, dimensionality
    /// reduction): the path or id first, then z0, z1, ... (.npy: the codes only).
    Encode(EncodeArgs),
    /// Build a catalogue for similarity search: the bottleneck codes of every image or row
    /// of DATA, where each came from, and the model (so `search` needs nothing else).
    /// Large catalogues get an approximate nearest-neighbour graph (HNSW).
    Index(IndexArgs),
    /// Find the items of a catalogue nearest to each query in the bottleneck: one line per
    /// hit (query, rank, item, distance), nearest first.
    Search(SearchArgs),
    /// Fill the missing cells (empty, NA, NaN, null) of a table with a table model; every
    /// other cell, the column order and the id column are kept as they were.
    Impute(ImputeArgs),
    /// Write a model as an ONNX graph (opset 17) that computes what `score`, `encode` and
    /// `denoise` compute, preprocessing, maps, calibration and verdicts included: image and
    /// table detectors (score, p_value, is_anomaly, map or errors, code), audio detectors
    /// (from |STFT|^2), image denoisers (one pass over the image) and audio denoisers (the
    /// spectral gain). The model's metadata goes into the graph's metadata_props.
    Export(ExportArgs),
    /// Evaluate on an MVTec-layout root (test/good, test/<defect>, ground_truth/):
    /// prints a JSON object of metrics (audio models: AUROC and pAUC up to a false-positive
    /// rate of 0.1, overall and per fault folder).
    Eval(EvalArgs),
    /// Serve a model over HTTP: POST /v1/score (images, JSON/CSV rows, or WAV recordings),
    /// /v1/encode, /v1/denoise (denoising models: an image or a WAV); GET /healthz, /readyz,
    /// /v1/model, /metrics (Prometheus), and a page at / to try images or rows in a
    /// browser. Stops on SIGTERM or Ctrl-C after the requests in flight are answered.
    Serve(ServeArgs),
    /// Write synthetic circuit boards (good and defective, with masks) in the MVTec layout.
    Boards(BoardsArgs),
    /// Write synthetic machine sounds (motor hum with harmonics and load changes; faults:
    /// bearing clicks, imbalance wobble, pitch drift) as 16-bit WAV files in the MVTec
    /// layout: train/good, test/good, test/<fault>.
    Machines(MachinesArgs),
    /// Generate synthetic circuit boards, train, evaluate and write heatmaps and a summary.
    Demo(DemoArgs),
}

fn run(cli: Cli) -> Result<()> {
    let bars = Bars::new(cli.quiet);
    if !(cli.max_megapixels.is_finite() && cli.max_megapixels > 0.0) {
        anyhow::bail!("--max-megapixels {} must be above 0", cli.max_megapixels);
    }
    bottleneck::data::images::set_max_pixels((cli.max_megapixels * 1e6).round() as u64);
    let (device, device_name) = select_device(&cli.device)?;
    if matches!(cli.command, Command::Train(_) | Command::Demo(_)) {
        bars.note(&format!("device: {device_name}"));
    }
    match cli.command {
        Command::Train(args) => commands::train::run(*args, &device, &bars),
        Command::Score(args) => commands::score::run(args, &device, &bars),
        Command::Report(args) => commands::report::run(args, &device, &bars),
        Command::Denoise(args) => commands::denoise::run(args, &device, &bars),
        Command::Encode(args) => commands::encode::run(args, &device, &bars),
        Command::Index(args) => commands::index::run(args, &device, &bars),
        Command::Search(args) => commands::search::run(args, &device, &bars),
        Command::Impute(args) => commands::impute::run(args, &device, &bars),
        Command::Eval(args) => commands::eval::run(args, &device, &bars),
        Command::Export(args) => commands::export::run(args, &device, &bars),
        Command::Serve(args) => commands::serve::run(args, &device, &bars),
        Command::Boards(args) => commands::boards::run(args, &device, &bars),
        Command::Machines(args) => commands::machines::run(args, &device, &bars),
        Command::Demo(args) => commands::demo::run(args, &device, &bars),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service stops gracefully on its own signal handling; every other command is
    // stopped at once, without leaving a half-written output behind.
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = ctrlc::set_handler(|| {
            bottleneck::io::remove_temporaries();
            std::process::exit(130);
        });
    }
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
        "smoothing_sigma" => "--smoothing".into(),
        "label_column" => "--label".into(),
        f => format!("--{}", f.replace('_', "-")),
    }
}
