//! `bottleneck demo`: the whole job on built-in synthetic circuit boards.

use std::path::PathBuf;

use anyhow::{Context, Result};
use bottleneck::Device;
use bottleneck::data::synthetic::{BoardConfig, DEFECTS, generate_boards};
use bottleneck::io::write_bytes_atomic;
use bottleneck::report::{ImageReport, ReportOptions};
use bottleneck::task::detect::{DetectParams, Detector, score_to_csv};
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "bottleneck-demo")]
    out: PathBuf,
    /// Seed for the boards and the training run.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(args: DemoArgs, device: &Device, bars: &Bars) -> Result<()> {
    let DemoArgs { out, seed } = args;
    let started = std::time::Instant::now();
    let data = out.join("boards");
    let boards = BoardConfig {
        seed,
        ..BoardConfig::default()
    };
    bars.note(&format!(
        "generating {} synthetic boards ({} good for training, {} good and {} defective for testing) in {}",
        boards.train_good + boards.test_good + boards.test_per_defect * DEFECTS.len(),
        boards.train_good,
        boards.test_good,
        boards.test_per_defect * DEFECTS.len(),
        data.display()
    ));
    generate_boards(&data, &boards)?;
    // A narrower network and smaller batches than the defaults keep the demo within
    // three minutes on two cores.
    let params = DetectParams {
        seed,
        width: Some(16),
        batch_size: 16,
        epochs: Some(80),
        learning_rate: 2e-3,
        fpr: 0.02,
        calibration_fraction: 0.2,
        ..DetectParams::default()
    };
    let detector = Detector::fit(&data, &params, device, bars)?;
    let model_path = out.join("model.safetensors");
    detector.save(&model_path)?;
    let report = detector.evaluate(&data, bars)?;
    let json = serde_json::to_string_pretty(&report)?;
    write_bytes_atomic(&out.join("metrics.json"), json.as_bytes())?;
    let maps = out.join("maps");
    // The test folder is labelled by its subfolders, so the report has ROC and PR curves.
    let test = data.join("test");
    let mut html = ImageReport::new(&detector, &model_path, &test, &ReportOptions::default())?;
    let (rows, _) = score_to_csv(
        &detector,
        &test,
        &out.join("scores.csv"),
        Some(&maps),
        false,
        bars,
        |item| html.add(item),
    )
    .context("scoring the test boards")?;
    let report_path = out.join("report.html");
    html.write(&report_path, 0)?;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let m = detector.meta();
    let summary = format!(
        "# bottleneck demo\n\n\
         Synthetic circuit boards ({size}x{size} RGB), {train} good boards for training and \
         {cal} held out for calibration; {n} test boards ({anom} defective).\n\n\
         | metric | value |\n|---|---|\n\
         | image AUROC | {auroc} |\n| image AUPR | {aupr} |\n| pixel AUROC | {pix} |\n\
         | AUPRO (FPR <= 0.3) | {aupro} |\n\
         | F1 at threshold | {f1:.4} |\n| false-alarm rate on test/good | {far} (target {fpr:.4}) |\n\n\
         Model: `model.safetensors`; scores: `scores.csv`; heatmaps: `maps/`; all metrics: \
         `metrics.json`; charts and the most anomalous boards: `report.html`. Total time \
         {secs:.0}s.\n",
        size = m.prep.image_size,
        train = m.training.train_samples,
        cal = m.training.calibration_samples,
        n = report.images,
        anom = report.anomalous_images,
        auroc = fmt(report.image_auroc),
        aupr = fmt(report.image_aupr),
        pix = fmt(report.pixel_auroc),
        aupro = fmt(report.aupro),
        f1 = report.f1,
        far = fmt(report.false_alarm_rate_good),
        fpr = report.fpr_target,
        secs = started.elapsed().as_secs_f64(),
    );
    write_bytes_atomic(&out.join("summary.md"), summary.as_bytes())?;
    println!("{json}");
    bars.note(&format!(
        "image AUROC {}, pixel AUROC {}, AUPRO {}, F1 {:.3}, false alarms on good {}; {rows} heatmaps in {}; summary in {}; report in {}",
        fmt(report.image_auroc),
        fmt(report.pixel_auroc),
        fmt(report.aupro),
        report.f1,
        fmt(report.false_alarm_rate_good),
        maps.display(),
        out.join("summary.md").display(),
        report_path.display()
    ));
    Ok(())
}
