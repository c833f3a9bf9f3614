//! `bottleneck score`: scores per image, row or recording, with heatmaps, explanations and
//! an optional report from the same pass.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::data::table::is_table_path;
use bottleneck::model::file::ModelKind;
use bottleneck::report::{DEFAULT_TOP, ImageReport, ReportOptions, TableReport};
use bottleneck::task::Model;
use bottleneck::task::detect::score_to_csv;
use bottleneck::task::sound::score_audio_to_csv;
use clap::Args;

use super::{report_note, skipped_note};
use crate::progress::Bars;

#[derive(Args)]
pub struct ScoreArgs {
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
}

pub fn run(args: ScoreArgs, device: &Device, bars: &Bars) -> Result<()> {
    let ScoreArgs {
        model,
        data,
        output,
        maps,
        explain,
        report,
        top,
        label,
        skip_bad,
    } = args;
    let mut outputs = vec![Output::File(&output)];
    outputs.extend(maps.as_deref().map(Output::Folder));
    outputs.extend(report.as_deref().map(Output::File));
    refuse_overwrite(&[&model, &data], &outputs)?;
    let options = ReportOptions {
        top,
        label_column: label,
    };
    match Model::load(&model, device)? {
        Model::AudioDetector(detector) => {
            if explain > 0 {
                anyhow::bail!("--explain names table columns; use --maps for recordings");
            }
            if report.is_some() {
                anyhow::bail!("--report covers image and table models; audio is not in it yet");
            }
            let (rows, unscored, skipped) =
                score_audio_to_csv(&detector, &data, &output, maps.as_deref(), skip_bad, bars)?;
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
                anyhow::bail!("--maps draws heatmaps of images; use --explain K for tables");
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
                table.score_file(&data, &output, explain, skip_bad, bars, |c| {
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
                bars,
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
    Ok(())
}
