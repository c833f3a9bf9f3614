//! The HTML report of an anomaly-detection model on a data set: one self-contained file
//! (charts as inline SVG, images as `data:` URIs, no external references, so it opens
//! offline and travels by mail) with a summary, the training loss curve, score histograms
//! against the threshold, ROC and precision-recall curves when labels are known, and the
//! most anomalous samples with their heatmaps (images) or the columns behind their scores
//! (tables).
//!
//! Scoring streams: a report keeps every score (a float per sample) but only the top-N
//! samples' thumbnails, so memory stays bounded whatever the size of the data.

mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use burn::prelude::Device;
use image::DynamicImage;
use image::imageops::FilterType;
use serde::Serialize;

use crate::data::images::{decode, find_images};
use crate::data::mvtec::{
    GOOD, category_in_test_folder, is_test_folder, label_in_test_folder, mask_of,
};
use crate::data::table::{Cell, is_table_path};
use crate::error::{Error, Result};
use crate::metrics::{self, ProPixels};
use crate::model::file::TrainingSummary;
use crate::progress::Progress;
use crate::score::maps;
use crate::score::{Calibration, ThresholdRule};
use crate::task::detect::{AUPRO_MAX_FPR, Detector, ScoredImage, names_base};
use crate::task::model::Model;
use crate::task::table::{ScoredChunk, TableModel};

/// Samples shown by default in the report's "most anomalous" section.
pub const DEFAULT_TOP: usize = 12;
/// Longest side of the thumbnails embedded for images, in pixels.
const THUMBNAIL: u32 = 192;
/// Smallest side thumbnails are shown at (small images are scaled up, pixels kept sharp).
const SHOWN: u32 = 160;
/// Largest side thumbnails are shown at: a sliver of an image (a 4000 x 20 line scan, whose
/// thumbnail is 192 x 1) would otherwise be scaled up by its short side to tens of thousands
/// of pixels.
const SHOWN_MAX: u32 = 4 * SHOWN;
/// Features named per row in the table of most anomalous rows.
const EXPLAINED: usize = 5;

/// What a report shows besides the scores.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Most anomalous samples shown (with heatmaps for images).
    pub top: usize,
    /// Tables: the column holding each row's label (0/1 or true/false, 1 = anomalous).
    pub label_column: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            top: DEFAULT_TOP,
            label_column: None,
        }
    }
}

/// What a written report found, for the caller to print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportSummary {
    /// Samples scored.
    pub samples: usize,
    /// Samples above the threshold.
    pub flagged: usize,
    /// Samples left out under `skip_bad`.
    pub skipped: usize,
    /// Whether every sample had a label.
    pub labelled: bool,
    pub auroc: Option<f64>,
    pub aupr: Option<f64>,
    /// Size of the HTML file.
    pub bytes: usize,
}

/// Scores `data` with the anomaly-detection model at `model` and writes the report to `out`
/// (atomically). Images: `data` is a folder, an image, or an MVTec root, whose `test/`
/// images are scored and labelled by folder (so is a test folder itself). Tables: a table
/// file, labelled by `options.label_column` when given. Fails on a model that is not an
/// anomaly detector, on data the model cannot read, and on a missing or bad label.
pub fn write_report(
    model: &Path,
    data: &Path,
    out: &Path,
    options: &ReportOptions,
    skip_bad: bool,
    device: &Device,
    progress: &dyn Progress,
) -> Result<ReportSummary> {
    let detector = match Model::load(model, device)? {
        Model::TableDetector(table) => {
            let mut report = TableReport::new(&table, model, data, options);
            let skipped = table.score_chunks(data, skip_bad, progress, |c| report.add_chunk(c))?;
            return report.write(out, skipped);
        }
        Model::ImageDetector(detector) => detector,
        other @ (Model::ImageDenoiser(_) | Model::AudioDenoiser(_)) => {
            return Err(Error::Invalid(format!(
                "{}: {}; report needs an anomaly-detection model",
                model.display(),
                other.kind()
            )));
        }
        other @ Model::AudioDetector(_) => {
            return Err(Error::Invalid(format!(
                "{}: {}; the report covers image and table models, audio is not in it yet",
                model.display(),
                other.kind()
            )));
        }
    };
    if is_table_path(data) {
        return Err(Error::Invalid(format!(
            "{} is an image model; {} is a table",
            model.display(),
            data.display()
        )));
    }
    // An MVTec root is reported on its labelled test images, as `eval` does.
    let folder = if data.join("test").is_dir() {
        data.join("test")
    } else {
        data.to_path_buf()
    };
    let paths = find_images(&folder)?;
    let mut report = ImageReport::new(&detector, model, &folder, options)?;
    let skipped = detector.score_paths(&paths, skip_bad, progress, |item| report.add(&item))?;
    report.write(out, skipped)
}

/// Every score of the data, with labels while every sample has one.
struct Samples {
    scores: Vec<f32>,
    /// `None` once a sample came without a label (or when none were expected).
    labels: Option<Vec<bool>>,
    flagged: usize,
}

impl Samples {
    fn new(labelled: bool) -> Self {
        Self {
            scores: Vec::new(),
            labels: labelled.then(Vec::new),
            flagged: 0,
        }
    }

    fn push(&mut self, score: f32, is_anomaly: bool, label: Option<bool>) {
        self.scores.push(score);
        self.flagged += is_anomaly as usize;
        match (label, self.labels.as_mut()) {
            (Some(l), Some(v)) => v.push(l),
            _ => self.labels = None,
        }
    }
}

/// The `n` highest-scoring samples seen so far, highest first (earlier first on ties).
struct Top<T> {
    n: usize,
    items: Vec<(f32, T)>,
}

impl<T> Top<T> {
    fn new(n: usize) -> Self {
        Self {
            n,
            items: Vec::with_capacity(n + 1),
        }
    }

    /// Keeps the next sample when it ranks among the top `n`; `make` builds what is kept
    /// (thumbnails, say) only then.
    fn offer(&mut self, score: f32, make: impl FnOnce() -> Result<T>) -> Result<()> {
        let beaten = |(worst, _): &(f32, T)| score.total_cmp(worst).is_le();
        if self.n == 0 || (self.items.len() >= self.n && self.items.last().is_some_and(beaten)) {
            return Ok(());
        }
        // After every kept item of at least this score: ties keep input order.
        let at = self
            .items
            .partition_point(|(s, _)| s.total_cmp(&score).is_ge());
        self.items.insert(at, (score, make()?));
        self.items.truncate(self.n);
        Ok(())
    }
}

/// What the header says about the model, whatever it reads.
struct ModelInfo<'a> {
    file: &'a Path,
    kind: &'a str,
    spec: serde_json::Value,
    training: &'a TrainingSummary,
    calibration: &'a Calibration,
}

/// A report on images, fed the scored images one by one (from [`Detector::score_paths`] or
/// [`crate::task::detect::score_to_csv`]) and written at the end.
pub struct ImageReport<'a> {
    detector: &'a Detector,
    model: PathBuf,
    data: PathBuf,
    names_base: PathBuf,
    /// The MVTec test folder the images are labelled by, when `data` is one.
    labelled_by: Option<PathBuf>,
    samples: Samples,
    top: Top<TopImage>,
    /// Each map against its mask for AUPRO, while every anomalous image has a mask.
    pro: Option<Vec<ProPixels>>,
}

/// One of the most anomalous images, ready to show.
struct TopImage {
    name: String,
    p_value: f64,
    is_anomaly: bool,
    label: Option<bool>,
    /// PNG `data:` URIs of the thumbnail and of its heatmap, and the size to show them at.
    image: String,
    heatmap: String,
    shown: (u32, u32),
}

impl<'a> ImageReport<'a> {
    /// A report of `detector` (read from `model`) on the images under `data`; they are
    /// labelled when `data` is an MVTec test folder (`good/` beside defect folders). Fails
    /// when `options` names a label column, which only tables have.
    pub fn new(
        detector: &'a Detector,
        model: &Path,
        data: &Path,
        options: &ReportOptions,
    ) -> Result<Self> {
        if let Some(column) = &options.label_column {
            return Err(Error::param(
                "label_column",
                format!(
                    "{column} names a table column; images are labelled by an MVTec layout \
                     (test/good beside test/<defect>)"
                ),
            ));
        }
        Ok(Self {
            detector,
            model: model.to_path_buf(),
            data: data.to_path_buf(),
            names_base: names_base(data),
            labelled_by: is_test_folder(data).then(|| data.to_path_buf()),
            samples: Samples::new(is_test_folder(data)),
            top: Top::new(options.top),
            pro: is_test_folder(data).then(Vec::new),
        })
    }

    /// Takes in one scored image: its score, and its thumbnails when it ranks among the
    /// most anomalous so far. Fails only when a thumbnail cannot be encoded.
    pub fn add(&mut self, item: &ScoredImage) -> Result<()> {
        let label = self
            .labelled_by
            .as_deref()
            .and_then(|test| label_in_test_folder(test, &item.path));
        self.samples.push(item.score, item.is_anomaly, label);
        if let (Some(test), Some(pro)) = (self.labelled_by.as_deref(), self.pro.as_mut()) {
            let root = test.parent().unwrap_or(test);
            let mask = match category_in_test_folder(test, &item.path) {
                Some(c) if c == GOOD => Some(None),
                Some(c) => mask_of(root, &c.to_string_lossy(), &item.path).map(Some),
                None => None,
            };
            match mask {
                Some(mask) => {
                    let mask = mask.as_deref().map(decode).transpose()?;
                    pro.push(self.detector.pro_pixels(item, mask.as_ref()));
                }
                None => self.pro = None,
            }
        }
        let (detector, base) = (self.detector, &self.names_base);
        self.top.offer(item.score, || {
            let (image, heatmap, shown) = thumbnails(detector, item)?;
            Ok(TopImage {
                name: item
                    .path
                    .strip_prefix(base)
                    .unwrap_or(&item.path)
                    .display()
                    .to_string(),
                p_value: item.p_value,
                is_anomaly: item.is_anomaly,
                label,
                image,
                heatmap,
                shown,
            })
        })
    }

    /// Writes the report to `out` (atomically); `skipped` counts images left out while
    /// scoring. Fails when no image was scored or the file cannot be written.
    pub fn write(self, out: &Path, skipped: usize) -> Result<ReportSummary> {
        let meta = self.detector.meta();
        let mut spec = serde_json::to_value(&meta.spec).unwrap_or_default();
        // A discriminative head is part of the network: shown with the spec.
        if let (Some(head), Some(fields)) = (&meta.head, spec.as_object_mut()) {
            fields.insert(
                "head".into(),
                serde_json::to_value(head).unwrap_or_default(),
            );
        }
        let info = ModelInfo {
            file: &self.model,
            kind: meta.kind.name(),
            spec,
            training: &meta.training,
            calibration: &meta.calibration,
        };
        let labels_from = if self.labelled_by.is_some() {
            "folders: good/ is normal, every other folder anomalous"
        } else {
            "none (labels come from an MVTec layout: test/good beside test/<defect>)"
        };
        let mut top = String::new();
        for (rank, (score, t)) in self.top.items.iter().enumerate() {
            let (w, h) = t.shown;
            let _ = writeln!(
                top,
                "<figure class=\"card\"><div class=\"pair\">\
                 <img alt=\"image\" width=\"{w}\" height=\"{h}\" src=\"{}\">\
                 <img alt=\"heatmap\" width=\"{w}\" height=\"{h}\" src=\"{}\"></div>\
                 <figcaption><b>#{}</b> <code>{}</code><br>score {} &middot; p-value {} \
                 &middot; {}{}</figcaption></figure>",
                t.image,
                t.heatmap,
                rank + 1,
                escape(&t.name),
                short(*score as f64),
                short(t.p_value),
                verdict(t.is_anomaly),
                label_note(t.label),
            );
        }
        let top = if top.is_empty() {
            String::new()
        } else {
            format!(
                "<h2>Most anomalous images</h2>\n<p class=\"note\">Each image beside its \
                 anomaly map (red where it looks least like the training images), highest \
                 score first.</p>\n<div class=\"grid\">\n{top}</div>\n"
            )
        };
        let localisation = self.pro.map(|pro| {
            let aupro = metrics::aupro(&pro, AUPRO_MAX_FPR);
            (
                "AUPRO (FPR up to 0.3, masks from ground_truth/)",
                aupro.map_or("n/a (no defect regions)".into(), |v| format!("{v:.4}")),
            )
        });
        let page = Page {
            info,
            data: &self.data,
            what: ("image", "images"),
            labels_from,
            samples: self.samples,
            skipped,
            top,
            extra: localisation.into_iter().collect(),
        };
        page.write(out)
    }
}

/// The thumbnail of `item`'s image (longest side at most [`THUMBNAIL`]) and its heatmap
/// overlay as PNG `data:` URIs, and the size to show them at.
fn thumbnails(detector: &Detector, item: &ScoredImage) -> Result<(String, String, (u32, u32))> {
    let (w, h) = (item.image.width(), item.image.height());
    let scale = (THUMBNAIL as f64 / w.max(h) as f64).min(1.0);
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let small = if (tw, th) == (w, h) {
        item.image.clone()
    } else {
        item.image.resize_exact(tw, th, FilterType::Triangle)
    };
    // 8 bits are plenty for a thumbnail and keep the page small.
    let small = if small.color().has_color() {
        DynamicImage::ImageRgb8(small.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(small.to_luma8())
    };
    let meta = detector.meta();
    let map = detector.map_resized(&item.image, &item.map, tw, th);
    let heat = maps::overlay(&small, &map, meta.scoring.map_scale);
    Ok((
        png_uri(&small)?,
        png_uri(&DynamicImage::ImageRgb8(heat))?,
        shown_size(tw, th),
    ))
}

/// The size to show a `w` x `h` thumbnail at: scaled up by a whole factor (so pixels stay
/// square and sharp) until its short side reaches [`SHOWN`], but no side past
/// [`SHOWN_MAX`] (scaled down to fit, if need be, for thumbnails larger than that).
fn shown_size(w: u32, h: u32) -> (u32, u32) {
    let (w, h) = (w.max(1), h.max(1));
    let long = w.max(h);
    if long > SHOWN_MAX {
        let scale = SHOWN_MAX as f64 / long as f64;
        let fit = |side: u32| ((side as f64 * scale).round() as u32).clamp(1, SHOWN_MAX);
        return (fit(w), fit(h));
    }
    let k = SHOWN.div_ceil(w.min(h)).min(SHOWN_MAX / long).max(1);
    (w * k, h * k)
}

fn png_uri(img: &DynamicImage) -> Result<String> {
    let png = crate::data::planes::encode_image(img, image::ImageFormat::Png)?;
    Ok(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

/// A report on a table, fed the scored chunks (from [`TableModel::score_chunks`] or
/// [`TableModel::score_file`]) and written at the end.
pub struct TableReport<'a> {
    model: &'a TableModel,
    model_path: PathBuf,
    data: PathBuf,
    label_column: Option<String>,
    /// Where the label column sits in the file, once the header has been seen.
    label_at: Option<usize>,
    id_header: String,
    samples: Samples,
    top: Top<TopRow>,
}

/// One of the most anomalous rows, ready to show.
struct TopRow {
    id: String,
    p_value: f64,
    is_anomaly: bool,
    label: Option<bool>,
    explain: Vec<(String, f32)>,
}

impl<'a> TableReport<'a> {
    /// A report of `model` (read from `model_path`) on the table `data`, labelled by
    /// `options.label_column` when given.
    pub fn new(
        model: &'a TableModel,
        model_path: &Path,
        data: &Path,
        options: &ReportOptions,
    ) -> Self {
        Self {
            model,
            model_path: model_path.to_path_buf(),
            data: data.to_path_buf(),
            label_column: options.label_column.clone(),
            label_at: None,
            id_header: "row".into(),
            samples: Samples::new(options.label_column.is_some()),
            top: Top::new(options.top),
        }
    }

    /// Takes in one scored chunk. Fails when the label column is missing from the file or
    /// a kept row's label is not 0/1 or true/false, naming row and column.
    pub fn add_chunk(&mut self, c: &ScoredChunk) -> Result<()> {
        self.id_header = c.id_header.clone();
        let label_at = match (&self.label_column, self.label_at) {
            (None, _) => None,
            (Some(_), Some(j)) => Some(j),
            (Some(name), None) => {
                let j = c.header.iter().position(|h| h == name).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: label column '{name}' not found; columns are: {}",
                        self.data.display(),
                        c.header.join(", ")
                    ))
                })?;
                self.label_at = Some(j);
                Some(j)
            }
        };
        let columns = c.header.len();
        for (row, &r) in c.scored.iter().zip(&c.rows.kept) {
            let label = match label_at {
                Some(j) => Some(read_label(
                    &c.chunk.cells[r * columns + j],
                    c.chunk.first_row + r + 1,
                    self.label_column.as_deref().unwrap_or_default(),
                    &self.data,
                )?),
                None => None,
            };
            self.samples.push(row.score, row.is_anomaly, label);
            let model = self.model;
            self.top.offer(row.score, || {
                Ok(TopRow {
                    id: row.id.clone(),
                    p_value: row.p_value,
                    is_anomaly: row.is_anomaly,
                    label,
                    explain: model
                        .explain(row, EXPLAINED)
                        .into_iter()
                        .filter(|(_, share)| *share > 0.0)
                        .map(|(f, share)| (f.to_string(), share))
                        .collect(),
                })
            })?;
        }
        Ok(())
    }

    /// Writes the report to `out` (atomically); `skipped` counts rows left out while
    /// scoring. Fails when no row was scored or the file cannot be written.
    pub fn write(self, out: &Path, skipped: usize) -> Result<ReportSummary> {
        let meta = self.model.meta();
        let info = ModelInfo {
            file: &self.model_path,
            kind: meta.kind.name(),
            spec: serde_json::to_value(&meta.spec).unwrap_or_default(),
            training: &meta.training,
            calibration: &meta.calibration,
        };
        let labels_from = match &self.label_column {
            Some(c) => format!("column '{c}' (1 or true: anomalous)"),
            None => "none (no label column was named)".into(),
        };
        let labelled = self.label_column.is_some();
        let mut rows = String::new();
        for (rank, (score, t)) in self.top.items.iter().enumerate() {
            let explain: Vec<String> = t
                .explain
                .iter()
                .map(|(f, share)| format!("{} {:.1}%", escape(f), share * 100.0))
                .collect();
            let _ = writeln!(
                rows,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>{}\
                 <td>{}</td></tr>",
                rank + 1,
                escape(&t.id),
                short(*score as f64),
                short(t.p_value),
                verdict(t.is_anomaly),
                if labelled {
                    format!("<td>{}</td>", label_word(t.label))
                } else {
                    String::new()
                },
                explain.join(", "),
            );
        }
        let top = if rows.is_empty() {
            String::new()
        } else {
            format!(
                "<h2>Most anomalous rows</h2>\n<p class=\"note\">Highest score first, with the \
                 features that carry the largest shares of each row's reconstruction error.</p>\n\
                 <table class=\"rows\"><tr><th>#</th><th>{}</th><th>score</th><th>p-value</th>\
                 <th>verdict</th>{}<th>largest shares of the error</th></tr>\n{rows}</table>\n",
                escape(&self.id_header),
                if labelled { "<th>label</th>" } else { "" },
            )
        };
        let page = Page {
            info,
            data: &self.data,
            what: ("row", "rows"),
            labels_from: &labels_from,
            samples: self.samples,
            skipped,
            top,
            extra: Vec::new(),
        };
        page.write(out)
    }
}

/// A label cell: 0/1 (any number equal to them) or true/false (any case). Fails naming
/// the row (from 1) and the column.
fn read_label(cell: &Cell, row: usize, column: &str, data: &Path) -> Result<bool> {
    match cell {
        Cell::Number(v) if *v == 0.0 => Ok(false),
        Cell::Number(v) if *v == 1.0 => Ok(true),
        Cell::Text(t) if t.eq_ignore_ascii_case("true") => Ok(true),
        Cell::Text(t) if t.eq_ignore_ascii_case("false") => Ok(false),
        Cell::Missing => Err(Error::Invalid(format!(
            "{}: row {row}, column '{column}': label is missing (use 0/1 or true/false)",
            data.display()
        ))),
        other => Err(Error::Invalid(format!(
            "{}: row {row}, column '{column}': '{}' is not a label (use 0/1 or true/false)",
            data.display(),
            other.text()
        ))),
    }
}

/// Everything a page is made of, whatever the data.
struct Page<'a> {
    info: ModelInfo<'a>,
    data: &'a Path,
    /// The word for one sample and for several.
    what: (&'a str, &'a str),
    labels_from: &'a str,
    samples: Samples,
    skipped: usize,
    /// The most-anomalous section, ready.
    top: String,
    /// Rows added to the summary table (name, value as HTML).
    extra: Vec<(&'static str, String)>,
}

impl Page<'_> {
    fn write(self, out: &Path) -> Result<ReportSummary> {
        let (html, mut summary) = self.render()?;
        crate::io::write_bytes_atomic(out, html.as_bytes())?;
        summary.bytes = html.len();
        Ok(summary)
    }

    fn render(self) -> Result<(String, ReportSummary)> {
        let s = &self.samples;
        let n = s.scores.len();
        if n == 0 {
            return Err(Error::Invalid(format!(
                "{}: no {} scored; nothing to report",
                self.data.display(),
                self.what.1
            )));
        }
        let cal = self.info.calibration;
        let labels = s.labels.as_deref();
        let auroc = labels.and_then(|l| metrics::auroc(&s.scores, l));
        let aupr = labels
            .filter(|l| l.iter().any(|&x| !x))
            .and_then(|l| metrics::average_precision(&s.scores, l));

        let mut summary_rows: Vec<(&str, String)> = Vec::new();
        let t = self.info.training;
        summary_rows.push((
            "Model",
            format!(
                "<code>{}</code>: {}, anomaly detection",
                escape(&self.info.file.display().to_string()),
                escape(self.info.kind)
            ),
        ));
        summary_rows.push(("Spec", spec_text(&self.info.spec)));
        summary_rows.push((
            "Training",
            format!(
                "{} {} ({} held out for calibration{}), {} epochs, batch {}, learning rate {}, \
                 seed {}, {:.1} s",
                t.train_samples,
                self.what.1,
                t.calibration_samples,
                if t.skipped_samples > 0 {
                    format!(", {} skipped", t.skipped_samples)
                } else {
                    String::new()
                },
                t.epochs,
                t.batch_size,
                t.learning_rate,
                t.seed,
                t.seconds
            ),
        ));
        if let Some(check) = &t.latent_check {
            summary_rows.push(("Latent part", escape(&check.describe())));
        }
        summary_rows.push(("Threshold rule", rule_text(cal)));
        let (threshold, calibrated_by) = match cal.folds.len() {
            0 => (
                format!(
                    "anomalous when the score is above {}",
                    short(cal.threshold as f64)
                ),
                format!(
                    "the calibration of {} held-out {}",
                    cal.scores.len(),
                    self.what.1
                ),
            ),
            k => (
                format!(
                    "cross-conformal, {k} networks each trained without one fold of the {}: a \
                     sample's p-value counts, for each network, the out-of-fold scores at least \
                     as high as that network's score of it; the score shown is the networks' \
                     mean (anomalous above {} when they agree)",
                    self.what.1,
                    short(cal.threshold as f64)
                ),
                format!(
                    "the out-of-fold scores of all {} {}; cross-conformal p-values are valid \
                     up to a factor of 2 in the worst case and close to the rate in practice",
                    cal.scores.len(),
                    self.what.1
                ),
            ),
        };
        summary_rows.push(("Threshold", threshold));
        summary_rows.push((
            "Effective false-alarm rate",
            format!(
                "{} (on normal data, by {calibrated_by})",
                short(cal.effective_fpr)
            ),
        ));
        summary_rows.push((
            "Data",
            format!(
                "<code>{}</code>: {n} {} scored{}",
                escape(&self.data.display().to_string()),
                if n == 1 { self.what.0 } else { self.what.1 },
                if self.skipped > 0 {
                    format!(", {} skipped as unreadable", self.skipped)
                } else {
                    String::new()
                }
            ),
        ));
        let mut flagged = format!(
            "{} of {n} ({:.1}%)",
            s.flagged,
            100.0 * s.flagged as f64 / n as f64
        );
        if let Some(l) = labels {
            let anomalous = l.iter().filter(|&&x| x).count();
            let caught = s
                .scores
                .iter()
                .zip(l)
                .filter(|(sc, x)| **x && cal.is_anomaly(**sc))
                .count();
            let _ = write!(
                flagged,
                ": {caught} of {anomalous} anomalous and {} of {} normal",
                s.flagged - caught,
                n - anomalous
            );
        }
        summary_rows.push(("Flagged", flagged));
        summary_rows.push(("Labels", escape(self.labels_from)));
        if labels.is_some() {
            let fmt =
                |v: Option<f64>| v.map_or("n/a (one class only)".into(), |v| format!("{v:.4}"));
            summary_rows.push(("AUROC", fmt(auroc)));
            summary_rows.push(("AUPR (average precision)", fmt(aupr)));
        }
        summary_rows.extend(self.extra.iter().cloned());

        let mut body = String::new();
        let _ = writeln!(
            body,
            "<h1>bottleneck report</h1>\n<table class=\"summary\">"
        );
        for (k, v) in &summary_rows {
            let _ = writeln!(body, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        body.push_str("</table>\n");

        body.push_str("<h2>Training loss</h2>\n");
        if t.loss_curve.is_empty() {
            body.push_str("<p class=\"note\">The model file has no loss curve.</p>\n");
        } else {
            body.push_str(&figure(
                plots::loss_curve(&t.loss_curve)?,
                "Mean training loss per epoch.",
            ));
        }

        body.push_str("<h2>Scores</h2>\n");
        let split = labels.map(|l| (pick(&s.scores, l, false), pick(&s.scores, l, true)));
        let mut series = vec![plots::Series {
            label: "calibration (held-out normal)".into(),
            values: &cal.scores,
            color: plots::BLUE,
        }];
        match &split {
            Some((normal, anomalous)) => {
                series.push(plots::Series {
                    label: "data, normal".into(),
                    values: normal,
                    color: plots::GREEN,
                });
                series.push(plots::Series {
                    label: "data, anomalous".into(),
                    values: anomalous,
                    color: plots::RED,
                });
            }
            None => series.push(plots::Series {
                label: "data".into(),
                values: &s.scores,
                color: plots::ORANGE,
            }),
        }
        series.retain(|x| !x.values.is_empty());
        // What an ensemble's calibration scores are, and how its p-values count them.
        let out_of_fold = match cal.folds.is_empty() {
            true => ("", ""),
            false => (
                "; each scored by the network that did not train on it",
                " (each network's own score against its own fold)",
            ),
        };
        body.push_str(&figure(
            plots::score_histogram(&series, cal.threshold)?,
            &format!(
                "Anomaly scores: the calibration {} (normal, held out from training{}) and \
                 the data's, each as shares of its own set; the dashed line is the threshold. \
                 A {}'s p-value is the share of calibration scores at least as high as its \
                 own{}.",
                self.what.1, out_of_fold.0, self.what.0, out_of_fold.1
            ),
        ));

        if let Some(l) = labels {
            body.push_str("<h2>ROC and precision-recall</h2>\n");
            match (
                metrics::roc_curve(&s.scores, l),
                metrics::precision_recall_curve(&s.scores, l),
                auroc,
                aupr,
            ) {
                (Some(roc), Some(pr), Some(auroc), Some(aupr)) => {
                    let positives = l.iter().filter(|&&x| x).count() as f64 / n as f64;
                    body.push_str("<div class=\"charts\">\n");
                    body.push_str(&figure(
                        plots::roc(&roc, auroc)?,
                        "ROC: anomalies caught against normal samples flagged, over every \
                         threshold.",
                    ));
                    body.push_str(&figure(
                        plots::precision_recall(&pr, aupr, positives)?,
                        "Precision-recall: the share of flagged samples that are anomalous, \
                         over every threshold.",
                    ));
                    body.push_str("</div>\n");
                }
                _ => body.push_str(
                    "<p class=\"note\">The labels have one class only: ROC and \
                     precision-recall curves need normal and anomalous samples.</p>\n",
                ),
            }
        }
        body.push_str(&self.top);

        let html = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>bottleneck report: {}</title>\n<style>\n{STYLE}</style>\n</head>\n\
             <body>\n{body}</body>\n</html>\n",
            escape(&self.data.display().to_string())
        );
        let summary = ReportSummary {
            samples: n,
            flagged: s.flagged,
            skipped: self.skipped,
            labelled: labels.is_some(),
            auroc,
            aupr,
            bytes: 0,
        };
        Ok((html, summary))
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#222;max-width:1180px;margin:2rem auto;padding:0 1rem;line-height:1.4}\n\
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;\
padding-bottom:.3rem}\n\
table{border-collapse:collapse}td,th{padding:.3rem .7rem;text-align:left;\
border-bottom:1px solid #eee;vertical-align:top}\n\
.summary th{font-weight:normal;color:#555;white-space:nowrap}\n\
.rows th{background:#f6f6f6}\n\
figure{margin:0 0 1rem 0}figcaption,.note{color:#555;font-size:.9rem}\n\
svg{max-width:100%;height:auto}\n\
.charts{display:flex;flex-wrap:wrap;gap:1rem}.charts figure{flex:1 1 420px;max-width:460px}\n\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(350px,1fr));gap:1rem}\n\
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem}\n\
.pair{display:flex;gap:.4rem}.pair img{image-rendering:pixelated;max-width:50%;height:auto}\n\
.flag{color:#b30000;font-weight:600}\n";

/// An SVG chart with its caption.
fn figure(svg: String, caption: &str) -> String {
    format!("<figure>\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>\n")
}

fn pick(scores: &[f32], labels: &[bool], which: bool) -> Vec<f32> {
    scores
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l == which)
        .map(|(s, _)| *s)
        .collect()
}

fn verdict(is_anomaly: bool) -> &'static str {
    if is_anomaly {
        "<span class=\"flag\">flagged</span>"
    } else {
        "not flagged"
    }
}

fn label_word(label: Option<bool>) -> &'static str {
    match label {
        Some(true) => "anomalous",
        Some(false) => "normal",
        None => "",
    }
}

fn label_note(label: Option<bool>) -> String {
    match label {
        Some(l) => format!(" &middot; labelled {}", label_word(Some(l))),
        None => String::new(),
    }
}

/// The threshold rule in words.
fn rule_text(cal: &Calibration) -> String {
    match cal.rule {
        ThresholdRule::Conformal { fpr } => format!(
            "conformal: flag when the p-value is at most the false-alarm rate (asked: {})",
            short(fpr)
        ),
        ThresholdRule::Contamination { contamination } => format!(
            "contamination: flag the top {} of the calibration scores' distribution",
            short(contamination)
        ),
    }
}

/// The spec's fields as `name value` pairs.
fn spec_text(spec: &serde_json::Value) -> String {
    match spec.as_object() {
        Some(fields) => fields
            .iter()
            .map(|(k, v)| format!("{} {}", escape(k), escape(&v.to_string())))
            .collect::<Vec<_>>()
            .join(", "),
        None => escape(&spec.to_string()),
    }
}

/// `v` to four significant digits without trailing zeros (scientific notation when very
/// large or small).
fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - magnitude).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// `text` safe inside HTML elements and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mvtec::test_images;
    use crate::data::synthetic::{BoardConfig, SENSORS, generate_boards, sensor_rows};
    use crate::data::table::ColumnSelection;
    use crate::progress::Silent;
    use crate::task::detect::DetectParams;
    use crate::task::table::TableParams;
    use crate::testing::scratch;

    /// Fails unless every reference in `html` stays inside the file: no URL but the SVG
    /// namespace, and every `src` a `data:` URI.
    fn assert_self_contained(html: &str) {
        let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!rest.contains("http://") && !rest.contains("https://"));
        assert!(!rest.contains("href=") && !rest.contains("url("));
        for (i, _) in rest.match_indices("src=\"") {
            assert!(rest[i + 5..].starts_with("data:image/png;base64,"));
        }
    }

    #[test]
    fn top_keeps_the_highest_scores_in_order_and_earlier_samples_on_ties() {
        let mut top = Top::new(3);
        for (i, s) in [1.0f32, 5.0, 3.0, 5.0, 0.5, 4.0, 3.0]
            .into_iter()
            .enumerate()
        {
            top.offer(s, || Ok(i)).unwrap();
        }
        let kept: Vec<(f32, usize)> = top.items.clone();
        assert_eq!(kept, [(5.0, 1), (5.0, 3), (4.0, 5)]);
        let mut none = Top::new(0);
        none.offer(1.0, || -> Result<()> { panic!("nothing is built") })
            .unwrap();
        assert!(none.items.is_empty());
    }

    #[test]
    fn thumbnails_are_shown_larger_by_a_whole_factor_but_no_side_past_the_cap() {
        assert_eq!(shown_size(16, 16), (160, 160));
        assert_eq!(shown_size(192, 144), (384, 288));
        assert_eq!(shown_size(192, 192), (192, 192));
        // A line scan's thumbnail: its short side alone would ask for 30720 px wide.
        assert_eq!(shown_size(192, 1), (576, 3));
        assert_eq!(shown_size(1, 192), (3, 576));
        assert_eq!(shown_size(2000, 10), (640, 3));
        for (w, h) in [(192, 1), (192, 7), (1, 1), (5000, 3), (3, 5000)] {
            let (sw, sh) = shown_size(w, h);
            assert!(
                sw.max(sh) <= SHOWN_MAX && sw.min(sh) >= 1,
                "{w}x{h} -> {sw}x{sh}"
            );
        }
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(short(1.0), "1");
        assert_eq!(short(0.01), "0.01");
        assert_eq!(short(1.84937), "1.849");
        assert_eq!(short(0.142857), "0.1429");
        assert_eq!(short(12345.6), "12346");
        assert_eq!(short(0.00001234), "1.234e-5");
        assert_eq!(escape("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }

    #[test]
    fn image_report_embeds_charts_the_top_images_in_order_and_roc_only_with_labels() {
        let dir = scratch("report-images");
        let boards = dir.join("boards");
        let cfg = BoardConfig {
            image_size: 16,
            train_good: 24,
            test_good: 4,
            test_per_defect: 1,
            seed: 3,
            defect_px: None,
        };
        generate_boards(&boards, &cfg).unwrap();
        let params = DetectParams {
            epochs: Some(2),
            width: Some(8),
            calibration_fraction: 0.3,
            knn: Some(0),
            // The report carries a head's maps and names it with the spec.
            head: crate::model::Head::Segment,
            ..DetectParams::default()
        };
        let device = Device::flex();
        let detector = Detector::fit(&boards, &params, &device, &Silent).unwrap();
        let model = dir.join("m.safetensors");
        detector.save(&model).unwrap();

        // The scores and labels `eval` would use, found without the report.
        let tests = test_images(&boards).unwrap();
        let paths: Vec<PathBuf> = tests.iter().map(|t| t.path.clone()).collect();
        let labels: Vec<bool> = tests.iter().map(|t| t.anomalous).collect();
        let mut scores = Vec::new();
        let mut flagged = 0;
        detector
            .score_paths(&paths, false, &Silent, |item| {
                scores.push(item.score);
                flagged += item.is_anomaly as usize;
                Ok(())
            })
            .unwrap();

        let out = dir.join("report.html");
        let options = ReportOptions {
            top: 5,
            label_column: None,
        };
        let summary =
            write_report(&model, &boards, &out, &options, false, &device, &Silent).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert_eq!(summary.samples, tests.len());
        assert_eq!(summary.flagged, flagged);
        assert!(summary.labelled);
        assert_eq!(summary.auroc, metrics::auroc(&scores, &labels));
        assert_eq!(summary.aupr, metrics::average_precision(&scores, &labels));
        assert_eq!(summary.bytes, html.len());
        // Loss curve, histogram, ROC and PR.
        assert_eq!(html.matches("<svg").count(), 4, "{html}");
        for text in [
            "mean training loss",
            "anomaly score",
            "false-positive rate",
            "recall",
        ] {
            assert!(html.contains(text), "{text}");
        }
        assert!(html.contains("head {&quot;channels&quot;:3"), "{html}");
        // Few boards: a cross-conformal ensemble, described as such.
        assert_eq!(detector.networks(), 2);
        assert!(
            html.contains(
                "cross-conformal, 2 networks each trained without one fold of the images"
            )
        );
        assert!(html.contains(&format!(
            "anomalous above {} when they agree",
            short(detector.meta().calibration.threshold as f64)
        )));
        assert_eq!(html.matches("alt=\"image\"").count(), 5);
        assert_eq!(html.matches("alt=\"heatmap\"").count(), 5);
        assert_eq!(html.matches("data:image/png;base64,").count(), 10);
        assert_self_contained(&html);
        // Localisation against the masks, as eval measures it.
        let aupro = detector.evaluate(&boards, &Silent).unwrap().aupro.unwrap();
        assert!(html.contains(&format!(
            "<th>AUPRO (FPR up to 0.3, masks from ground_truth/)</th><td>{aupro:.4}</td>"
        )));
        // The five highest scores, highest first; the sixth is left out.
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let shown = |i: usize| {
            let name = paths[i].strip_prefix(boards.join("test")).unwrap();
            html.find(&format!("<code>{}</code>", name.display()))
        };
        let at: Vec<usize> = order[..5].iter().map(|&i| shown(i).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        assert_eq!(shown(order[5]), None);

        // A plain folder has no labels: no ROC or PR, and fewer images than --top.
        let flat = dir.join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        for (i, p) in paths.iter().take(3).enumerate() {
            std::fs::copy(p, flat.join(format!("{i}.png"))).unwrap();
        }
        let options = ReportOptions::default();
        let summary = write_report(&model, &flat, &out, &options, false, &device, &Silent).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(!html.contains("AUPRO"));
        assert_eq!(
            (summary.samples, summary.labelled, summary.auroc),
            (3, false, None)
        );
        assert_eq!(html.matches("<svg").count(), 2);
        // (The heading, not the letters: base64 image data can hold "ROC" by chance.)
        assert!(!html.contains("<h2>ROC") && !html.contains("false-positive rate"));
        assert_eq!(html.matches("alt=\"heatmap\"").count(), 3);
        assert_self_contained(&html);

        // Labels are a table's business.
        let options = ReportOptions {
            top: 3,
            label_column: Some("fault".into()),
        };
        let err = write_report(&model, &flat, &out, &options, false, &device, &Silent)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label_column fault names a table column"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes sensor rows as `id,<sensors>[,fault]`, the fault column from `label(i)`.
    fn write_rows(
        path: &Path,
        rows: &[([f32; 8], Option<usize>)],
        label: Option<&dyn Fn(usize) -> String>,
    ) {
        let mut text = format!("id,{}", SENSORS.join(","));
        if label.is_some() {
            text.push_str(",fault");
        }
        text.push('\n');
        for (i, (row, _)) in rows.iter().enumerate() {
            text.push_str(&format!("r{i}"));
            for v in row {
                text.push_str(&format!(",{v}"));
            }
            if let Some(l) = label {
                text.push_str(&format!(",{}", l(i)));
            }
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn table_report_reads_labels_from_a_column_and_names_bad_ones() {
        let dir = scratch("report-table");
        write_rows(&dir.join("train.csv"), &sensor_rows(600, false, 1), None);
        let params = TableParams {
            selection: ColumnSelection {
                id_column: Some("id".into()),
                ..Default::default()
            },
            epochs: Some(60),
            ..Default::default()
        };
        let device = Device::flex();
        let model = TableModel::fit(&dir.join("train.csv"), &params, &device, &Silent).unwrap();
        let model_path = dir.join("m.safetensors");
        model.save(&model_path).unwrap();
        let rows: Vec<_> = sensor_rows(40, false, 2)
            .into_iter()
            .chain(sensor_rows(40, true, 3))
            .collect();
        // Labels in every accepted spelling.
        let spelled = |i: usize| ["0", "false", "1", "TRUE"][(i >= 40) as usize * 2 + i % 2].into();
        let test = dir.join("test.csv");
        write_rows(&test, &rows, Some(&spelled));
        let truth: Vec<bool> = (0..80).map(|i| i >= 40).collect();
        let mut scores = Vec::new();
        model
            .score_chunks(&test, false, &Silent, |c| {
                scores.extend(c.scored.iter().map(|r| r.score));
                Ok(())
            })
            .unwrap();

        let out = dir.join("report.html");
        let options = ReportOptions {
            top: 6,
            label_column: Some("fault".into()),
        };
        let summary =
            write_report(&model_path, &test, &out, &options, false, &device, &Silent).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert_eq!(summary.samples, 80);
        assert_eq!(summary.auroc, metrics::auroc(&scores, &truth));
        assert!(summary.auroc.unwrap() > 0.8, "{summary:?}");
        assert_eq!(html.matches("<svg").count(), 4);
        assert_eq!(
            html.matches("<tr><td>").count(),
            6,
            "one table row per top row"
        );
        assert!(!html.contains("<img"));
        assert!(html.contains("<th>id</th>") && html.contains("largest shares of the error"));
        assert_self_contained(&html);

        // Without labels: no ROC or PR.
        let options = ReportOptions {
            top: 2,
            label_column: None,
        };
        let summary =
            write_report(&model_path, &test, &out, &options, false, &device, &Silent).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        assert_eq!((summary.labelled, summary.auroc), (false, None));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<tr><td>").count(), 2);

        // A missing column and a bad label are named, and no report is written.
        std::fs::remove_file(&out).unwrap();
        let options = ReportOptions {
            top: 2,
            label_column: Some("nope".into()),
        };
        let err = write_report(&model_path, &test, &out, &options, false, &device, &Silent)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("label column 'nope' not found; columns are: id, temp_in"),
            "{err}"
        );
        let bad = dir.join("bad.csv");
        write_rows(
            &bad,
            &rows,
            Some(&|i| if i == 2 { "maybe".into() } else { "0".into() }),
        );
        let options = ReportOptions {
            top: 2,
            label_column: Some("fault".into()),
        };
        let err = write_report(&model_path, &bad, &out, &options, false, &device, &Silent)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 3, column 'fault': 'maybe' is not a label"),
            "{err}"
        );
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
