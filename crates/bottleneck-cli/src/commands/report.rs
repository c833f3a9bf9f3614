//! `bottleneck report`: one self-contained HTML file about a model on some data.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::model::file::ModelKind;
use bottleneck::report::{DEFAULT_TOP, ReportOptions, write_report};
use clap::Args;

use super::report_note;
use crate::progress::Bars;

#[derive(Args)]
pub struct ReportArgs {
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
}

pub fn run(args: ReportArgs, device: &Device, bars: &Bars) -> Result<()> {
    let ReportArgs {
        model,
        data,
        output,
        top,
        label,
        skip_bad,
    } = args;
    refuse_overwrite(&[&model, &data], &[Output::File(&output)])?;
    let options = ReportOptions {
        top,
        label_column: label,
    };
    let summary = write_report(&model, &data, &output, &options, skip_bad, device, bars)?;
    let what = match ModelKind::of_file(&model)? {
        ModelKind::TableDetector => "rows",
        _ => "images",
    };
    bars.note(&report_note(&output, &summary, what));
    Ok(())
}
