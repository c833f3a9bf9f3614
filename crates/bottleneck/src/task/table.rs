//! Tables: fit a dense autoencoder on normal rows, calibrate a threshold on held-out rows,
//! then score rows (with the columns that explain each score), give their bottleneck codes,
//! or fill their missing cells. Every file is read in chunks, so memory stays bounded
//! whatever its size.

use std::path::Path;

use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::scaling::TablePrep;
use crate::data::table::{
    Cell, ColumnSelection, Layout, RawChunk, Rows, Table, TableFormat, TableReader, TableWriter,
    read_training_table,
};
use crate::error::{Error, Result};
use crate::model::dense::Encoded;
use crate::model::file::{
    self, DenseWeights, FORMAT_VERSION, ModelKind, TableMeta, TableScore, TableScoring,
    TrainingSummary,
};
use crate::model::{DenseAutoencoder, DenseSpec};
use crate::progress::Progress;
use crate::score::calibration::{CalibrationPlan, Split};
use crate::train::{DenseTrainOptions, default_epochs, train_dense};

/// Everything [`TableModel::fit`] can be told; [`Default`] works without tuning. As JSON
/// (the Python package's form), any field left out keeps its default and an unknown one is
/// refused.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableParams {
    pub selection: ColumnSelection,
    /// Bottleneck size; default a quarter of the number of features (2 to 32).
    pub latent: Option<usize>,
    /// Hidden layer widths; default from the number of features.
    pub hidden: Option<Vec<usize>>,
    /// Train a variational autoencoder.
    pub variational: bool,
    /// Row score; default reconstruction error.
    pub score: TableScore,
    pub batch_norm: bool,
    /// Passes over the rows; default about 6,000 optimizer steps (5 to 300 passes).
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub fpr: f64,
    pub contamination: Option<f64>,
    pub calibration_fraction: f64,
    /// Share of observed cells hidden from the network at each training step.
    pub mask_rate: f32,
    /// Weight of the KL term of a variational model.
    pub kl_weight: f32,
    /// Refinement passes of `impute` after the first fill.
    pub impute_iterations: usize,
    /// Leave out bad rows with a warning instead of stopping.
    pub skip_bad: bool,
}

impl Default for TableParams {
    fn default() -> Self {
        Self {
            selection: ColumnSelection::default(),
            latent: None,
            hidden: None,
            variational: false,
            score: TableScore::Reconstruction,
            batch_norm: false,
            epochs: None,
            batch_size: 64,
            learning_rate: 1e-3,
            seed: 42,
            fpr: 0.01,
            contamination: None,
            calibration_fraction: 0.15,
            mask_rate: 0.2,
            kl_weight: 1.0,
            impute_iterations: 1,
            skip_bad: false,
        }
    }
}

impl TableParams {
    /// Checks the settings that do not depend on the data, before any work; returns the
    /// calibration plan. Errors name the field.
    pub fn check(&self) -> Result<CalibrationPlan> {
        let plan = CalibrationPlan::new(self.fpr, self.contamination, self.calibration_fraction)?;
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        if self.epochs == Some(0) {
            return Err(Error::param("epochs", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.mask_rate) {
            return Err(Error::param(
                "mask_rate",
                format!("{} must be at least 0 and below 1", self.mask_rate),
            ));
        }
        if self.score == TableScore::Elbo && !self.variational {
            return Err(Error::param("score", "elbo needs a variational model"));
        }
        Ok(plan)
    }
}

/// Logs the rows left out of `rows` (read from `source`): the first few by reason, then the
/// count.
fn warn_skipped(rows: &Rows, source: &str, progress: &dyn Progress) {
    for s in rows.skipped.iter().take(5) {
        progress.warn(&format!("skipped {s}"));
    }
    if !rows.skipped.is_empty() {
        progress.warn(&format!(
            "skipped {} bad row{} of {source}",
            rows.skipped.len(),
            if rows.skipped.len() > 1 { "s" } else { "" },
        ));
    }
}

/// Default optimizer steps when `epochs` is not given...
const TARGET_STEPS: usize = 6000;
/// ...unless that takes more passes than this: small tables are learnt by heart otherwise
/// (wine and digits detection AUROC fell with 1,000 passes, measured in bench/tables.py).
const MAX_EPOCHS: usize = 300;
/// Feature groups hidden in turn by each refinement pass of `impute`.
const REFINE_GROUPS: usize = 4;
/// Rows read, scored and written at a time.
const CHUNK_ROWS: usize = 4096;

/// What the network gives for a batch of rows.
struct Pass {
    /// Reconstruction, `rows x features`, standardised.
    recon: Vec<f32>,
    /// KL divergence of each row's code distribution from the prior (VAE only).
    kl: Option<Vec<f32>>,
}

/// One scored row.
#[derive(Debug, Clone)]
pub struct ScoredRow {
    pub id: String,
    pub score: f32,
    pub p_value: f64,
    pub is_anomaly: bool,
    /// Each feature's share of the row's reconstruction error (0 where missing).
    pub shares: Vec<f32>,
}

/// One chunk of a table as scored by [`TableModel::score_chunks`].
pub struct ScoredChunk<'a> {
    /// The file's column names (`x0, x1, ...` for `.npy`).
    pub header: &'a [String],
    /// Name of the id column, or `row` when rows are named by number.
    pub id_header: String,
    /// The chunk as read: every column of every row.
    pub chunk: &'a RawChunk,
    /// The rows kept (bad ones are left out under `skip_bad`; see [`Rows::kept`]).
    pub rows: Rows,
    /// The score of each kept row, in order.
    pub scored: Vec<ScoredRow>,
}

/// A trained table model.
pub struct TableModel {
    pub(crate) model: DenseAutoencoder,
    meta: TableMeta,
    device: Device,
}

impl TableModel {
    /// Trains on the rows of the table at `data`, holds out `calibration_fraction` of them
    /// and calibrates the threshold. Fails on unreadable files and bad cells (named), and on
    /// settings that cannot work, before any training.
    pub fn fit(
        data: &Path,
        params: &TableParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        let (layout, rows) = read_training_table(data, &params.selection, params.skip_bad)?;
        warn_skipped(&rows, &data.display().to_string(), progress);
        let id = layout.id.as_ref().map(|(name, _)| name.clone());
        let mut this = Self::fit_rows(
            layout.features,
            id,
            rows,
            &data.display().to_string(),
            params,
            &plan,
            device,
            progress,
        )?;
        this.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(this)
    }

    /// Trains on a table in memory, as [`TableModel::fit`] does on a file: every column of
    /// `table` is a feature unless `params.selection` names the columns or leaves some out
    /// (its id column does not apply: name rows with [`Table::with_ids`]).
    pub fn fit_table(
        table: &Table<'_>,
        params: &TableParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let plan = params.check()?;
        if params.selection.id_column.is_some() {
            return Err(Error::param(
                "selection",
                "has an id column, which tables in memory do not have; name their rows with ids",
            ));
        }
        let mut features: Vec<String> = match &params.selection.columns {
            Some(cols) => cols.clone(),
            None => table.columns().to_vec(),
        };
        features.retain(|f| !params.selection.exclude.contains(f));
        if features.is_empty() {
            return Err(Error::Invalid(
                "table: no feature columns left to train on".into(),
            ));
        }
        let rows = if table.is_named() || features.len() == table.columns().len() {
            table.rows(&features, params.skip_bad)?
        } else {
            Table::new(table.columns().to_vec(), table.values())?
                .rows(&features, params.skip_bad)?
        };
        warn_skipped(&rows, "table", progress);
        let mut this = Self::fit_rows(
            features, None, rows, "table", params, &plan, device, progress,
        )?;
        this.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(this)
    }

    /// Trains on `rows` of `features` (from `source`, named in errors), holds out the plan's
    /// share and calibrates.
    #[allow(clippy::too_many_arguments)]
    fn fit_rows(
        features: Vec<String>,
        id_column: Option<String>,
        rows: Rows,
        source: &str,
        params: &TableParams,
        plan: &CalibrationPlan,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let n = rows.len();
        if n < 2 {
            return Err(Error::Invalid(format!(
                "{source}: {n} usable row; need at least 2 (one to train on, one to calibrate)"
            )));
        }
        let d = features.len();
        let prep = TablePrep::fit(features, id_column, &rows.values);
        let mut values = rows.values;
        prep.standardize(&mut values);
        let Split {
            calibration: cal_idx,
            training: train_idx,
        } = plan.split(n, params.seed);
        let spec = DenseSpec::for_table(
            d,
            params.latent,
            params.hidden.clone(),
            params.variational,
            params.batch_norm,
        )?;
        let batch_size = params.batch_size.min(train_idx.len());
        let epochs = params.epochs.unwrap_or_else(|| {
            default_epochs(train_idx.len(), batch_size, TARGET_STEPS, MAX_EPOCHS)
        });
        let opts = DenseTrainOptions {
            epochs,
            batch_size,
            learning_rate: params.learning_rate,
            seed: params.seed,
            mask_rate: params.mask_rate,
            kl_weight: params.kl_weight,
            // Measured with bench/tables.sh: stopping on 10% held-out rows lowered digits'
            // detection AUROC from 0.9805 to 0.9775 (below PCA); tables keep the fixed,
            // pass-capped schedule until issue "small data" sizes their training.
            early_stopping: false,
        };
        let (model, log) = train_dense(&spec, &values, &train_idx, &opts, device, progress)?;
        let mut this = Self {
            model,
            meta: TableMeta {
                format_version: FORMAT_VERSION,
                kind: ModelKind::TableDetector.data(),
                task: ModelKind::TableDetector.task(),
                spec,
                prep,
                scoring: TableScoring {
                    score: params.score,
                    impute_iterations: params.impute_iterations,
                    mask_rate: params.mask_rate,
                },
                calibration: plan.placeholder(),
                training: TrainingSummary::from_log(
                    log,
                    cal_idx.len(),
                    rows.skipped.len(),
                    batch_size,
                    params.learning_rate,
                    params.seed,
                ),
            },
            device: device.clone(),
        };
        let gather = |idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| values[i * d..(i + 1) * d].iter().copied())
                .collect()
        };
        let cal = gather(&cal_idx);
        let mut scores = Vec::with_capacity(cal_idx.len());
        for chunk in cal.chunks(CHUNK_ROWS * d) {
            scores.extend(this.score_standardized(chunk).0);
        }
        this.meta.calibration = plan.calibrate(scores, "rows", progress)?;
        Ok(this)
    }

    /// Loads a table model file for use on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_table(path, device)?;
        Ok(Self {
            model: weights.autoencoder,
            meta,
            device: device.clone(),
        })
    }

    /// Loads a table model from its model file's bytes (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_table_bytes(path, bytes, device)?;
        Ok(Self {
            model: weights.autoencoder,
            meta,
            device: device.clone(),
        })
    }

    /// Writes the model file to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = DenseWeights {
            autoencoder: self.model.clone(),
        };
        file::save_table(path, &weights, &self.meta)
    }

    /// The model file's metadata.
    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// Codes (means for a VAE) and, for a VAE, log-variances of standardised rows (NaN
    /// missing): the network is shown missing cells as 0 beside the mask of observed ones.
    fn encode_standardized(&self, values: &[f32]) -> Encoded {
        let d = self.meta.spec.features;
        let n = values.len() / d;
        let mask: Vec<f32> = values.iter().map(|v| (!v.is_nan()) as u8 as f32).collect();
        let shown: Vec<f32> = values
            .iter()
            .map(|&v| if v.is_nan() { 0.0 } else { v })
            .collect();
        // Inputs are made on the inference device itself: tensors moved over from an
        // autodiff device leak on every forward.
        let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [n, d]), &self.device);
        self.model.encode(t(shown), Some(t(mask)))
    }

    /// Runs the network on standardised rows (NaN missing), in the order given.
    fn pass(&self, values: &[f32]) -> Pass {
        let enc = self.encode_standardized(values);
        let kl = enc.log_var.map(|lv| {
            let kl =
                (lv.clone().exp() + enc.mean.clone().powi_scalar(2) - lv - 1.0).sum_dim(1) * 0.5;
            to_vec(kl)
        });
        Pass {
            recon: to_vec(self.model.decode(enc.mean)),
            kl,
        }
    }

    /// Scores of standardised rows and each row's per-feature error contributions.
    fn score_standardized(&self, values: &[f32]) -> (Vec<f32>, Vec<Vec<f32>>) {
        let d = self.meta.spec.features;
        let pass = self.pass(values);
        let mut scores = Vec::with_capacity(values.len() / d);
        let mut parts = Vec::with_capacity(values.len() / d);
        for (r, (row, recon)) in values.chunks(d).zip(pass.recon.chunks(d)).enumerate() {
            // Squared errors of the observed cells, in standardised units. Measured against
            // dividing each column's error by its typical size on the training rows: that
            // cost 0.01 AUROC on digits and gained nothing elsewhere (bench/tables.py).
            let contrib: Vec<f32> = row
                .iter()
                .zip(recon)
                .map(|(x, y)| if x.is_nan() { 0.0 } else { (x - y) * (x - y) })
                .collect();
            let observed = row.iter().filter(|x| !x.is_nan()).count().max(1) as f32;
            let mean = contrib.iter().sum::<f32>() / observed;
            let score = match (self.meta.scoring.score, &pass.kl) {
                // Gaussian decoder of unit variance, at the mean code, missing cells
                // counted at the row's mean error.
                (TableScore::Elbo, Some(kl)) => 0.5 * mean * d as f32 + kl[r],
                _ => mean,
            };
            scores.push(score);
            parts.push(contrib);
        }
        (scores, parts)
    }

    /// Scores rows of raw feature values (`rows x features`, the model's column order, NaN
    /// missing).
    pub fn score_rows(&self, rows: &Rows) -> Vec<ScoredRow> {
        let mut values = rows.values.clone();
        self.meta.prep.standardize(&mut values);
        let (scores, parts) = self.score_standardized(&values);
        scores
            .into_iter()
            .zip(parts)
            .zip(&rows.ids)
            .map(|((score, contrib), id)| {
                let total: f32 = contrib.iter().sum::<f32>().max(f32::MIN_POSITIVE);
                ScoredRow {
                    id: id.clone(),
                    score,
                    p_value: self.meta.calibration.p_value(score),
                    is_anomaly: self.meta.calibration.is_anomaly(score),
                    shares: contrib.iter().map(|c| c / total).collect(),
                }
            })
            .collect()
    }

    /// The model's features of rows given as cells under `header` (row-major, any column
    /// order, extra columns ignored; `by_position` takes unnamed columns in the model's
    /// order). Errors name `source`, the row (from 1) and the column, like those of a file.
    pub fn rows_from_cells(
        &self,
        header: &[String],
        cells: Vec<Cell>,
        by_position: bool,
        source: &Path,
    ) -> Result<Rows> {
        let layout = Layout::for_header(
            header,
            source,
            by_position,
            &self.meta.prep.features,
            self.meta.prep.id_column.as_deref(),
        )?;
        if header.is_empty() || !cells.len().is_multiple_of(header.len()) {
            return Err(Error::Invalid(format!(
                "{}: {} cells do not fill rows of {} columns",
                source.display(),
                cells.len(),
                header.len()
            )));
        }
        let chunk = RawChunk {
            first_row: 0,
            rows: cells.len() / header.len(),
            cells,
            records: None,
        };
        layout.extract(&chunk, source, false)
    }

    /// Bottleneck codes of rows of raw feature values (`rows x latent`).
    pub fn encode_rows(&self, rows: &Rows) -> Vec<f32> {
        let mut values = rows.values.clone();
        self.meta.prep.standardize(&mut values);
        to_vec(self.encode_standardized(&values).mean)
    }

    /// Fills the missing cells of `rows` (raw values, NaN missing) and returns the filled
    /// values; observed cells come back unchanged. The first fill comes from the network
    /// shown the gaps as gaps. Each refinement pass then goes over the features in
    /// [`REFINE_GROUPS`] groups, in the manner of chained equations: the missing cells of
    /// one group are hidden again and predicted from the observed cells and the current
    /// fill of the other gaps.
    pub fn impute_rows(&self, rows: &Rows) -> Vec<f32> {
        self.impute_values(&rows.values)
    }

    /// [`TableModel::impute_rows`] on raw values (`rows x features`, NaN missing).
    pub(crate) fn impute_values(&self, raw: &[f32]) -> Vec<f32> {
        let d = self.meta.spec.features;
        let mut values = raw.to_vec();
        self.meta.prep.standardize(&mut values);
        let missing: Vec<usize> = (0..values.len()).filter(|&i| values[i].is_nan()).collect();
        if missing.is_empty() {
            return raw.to_vec();
        }
        let mut filled = values.clone();
        let recon = self.pass(&values).recon;
        for &i in &missing {
            filled[i] = recon[i];
        }
        let groups = REFINE_GROUPS.min(d);
        let mut order: Vec<usize> = (0..d).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(0x6a5));
        let mut group = vec![0; d];
        for (rank, &j) in order.iter().enumerate() {
            group[j] = rank % groups;
        }
        for _ in 0..self.meta.scoring.impute_iterations {
            for g in 0..groups {
                let mut shown = filled.clone();
                let mut any = false;
                for &i in &missing {
                    if group[i % d] == g {
                        shown[i] = f32::NAN;
                        any = true;
                    }
                }
                if !any {
                    continue;
                }
                let recon = self.pass(&shown).recon;
                for &i in &missing {
                    if group[i % d] == g {
                        filled[i] = recon[i];
                    }
                }
            }
        }
        let mut out = raw.to_vec();
        for &i in &missing {
            out[i] = self.meta.prep.unstandardize(i % d, filled[i]);
        }
        out
    }

    /// Scores of rows of raw values, [`CHUNK_ROWS`] at a time as files are scored.
    pub(crate) fn score_rows_chunked(&self, values: &[f32]) -> Vec<f32> {
        let d = self.meta.spec.features;
        let mut out = Vec::with_capacity(values.len() / d.max(1));
        for chunk in values.chunks(CHUNK_ROWS * d) {
            let mut values = chunk.to_vec();
            self.meta.prep.standardize(&mut values);
            out.extend(self.score_standardized(&values).0);
        }
        out
    }

    /// Bottleneck codes of rows of raw values (`rows x features`, NaN missing).
    pub(crate) fn encode_values(&self, raw: &[f32]) -> Vec<f32> {
        let mut values = raw.to_vec();
        self.meta.prep.standardize(&mut values);
        to_vec(self.encode_standardized(&values).mean)
    }

    /// Whether outputs name rows by an id column, whose cells are then copied as written
    /// ("007" stays "007"; read as a number it would come back as "7").
    fn keeps_ids(&self) -> bool {
        self.meta.prep.id_column.is_some()
    }

    /// Opens `data` (keeping CSV rows as written with `records`) and finds the model's
    /// columns in it.
    fn open(&self, data: &Path, records: bool) -> Result<(TableReader, Layout)> {
        let reader = TableReader::open(data)?;
        let reader = if records {
            reader.with_records()
        } else {
            reader
        };
        let layout = Layout::for_model(
            &reader,
            &self.meta.prep.features,
            self.meta.prep.id_column.as_deref(),
        )?;
        Ok((reader, layout))
    }

    /// Streams the table `data`, opened by [`TableModel::open`], chunk by chunk through
    /// `each`, with progress; returns the number of rows skipped under `skip_bad` (each
    /// reported to `progress`).
    fn stream(
        &self,
        (mut reader, layout): (TableReader, Layout),
        data: &Path,
        skip_bad: bool,
        stage: &str,
        progress: &dyn Progress,
        mut each: impl FnMut(&Layout, &RawChunk, Rows) -> Result<()>,
    ) -> Result<usize> {
        let mut skipped = 0;
        progress.stage(stage, reader.position().1);
        let mut done = 0;
        while let Some(chunk) = reader.next_chunk(CHUNK_ROWS)? {
            let rows = layout.extract(&chunk, data, skip_bad)?;
            for s in &rows.skipped {
                if skipped < 5 {
                    progress.warn(&format!("skipped {s}"));
                }
                skipped += 1;
            }
            each(&layout, &chunk, rows)?;
            let now = reader.position().0;
            progress.advance(now.saturating_sub(done));
            done = now;
        }
        progress.finish();
        Ok(skipped)
    }

    /// Name of the first output column: the id column, or `row` (1-based data row).
    fn id_header(layout: &Layout) -> String {
        layout
            .id
            .as_ref()
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| "row".into())
    }

    /// The `k` features with the largest shares of `row`'s error, largest first, with
    /// their shares.
    pub fn explain<'a>(&'a self, row: &ScoredRow, k: usize) -> Vec<(&'a str, f32)> {
        let mut order: Vec<usize> = (0..row.shares.len()).collect();
        order.sort_by(|&a, &b| row.shares[b].total_cmp(&row.shares[a]));
        order
            .into_iter()
            .take(k)
            .map(|j| (self.meta.prep.features[j].as_str(), row.shares[j]))
            .collect()
    }

    /// Scores every row of `data` chunk by chunk and hands each chunk's results to `each`
    /// (see [`ScoredChunk`]). Returns the rows skipped under `skip_bad`.
    pub fn score_chunks(
        &self,
        data: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
        mut each: impl FnMut(&ScoredChunk) -> Result<()>,
    ) -> Result<usize> {
        let opened = self.open(data, self.keeps_ids())?;
        let header = opened.0.header().to_vec();
        self.stream(
            opened,
            data,
            skip_bad,
            "scoring",
            progress,
            |layout, chunk, rows| {
                each(&ScoredChunk {
                    header: &header,
                    id_header: Self::id_header(layout),
                    chunk,
                    scored: self.score_rows(&rows),
                    rows,
                })
            },
        )
    }

    /// Scores every row of `data` and writes `row|id,score,p_value,is_anomaly` to `out`
    /// (CSV), with `explain` pairs of columns `explain_k,share_k` naming the features that
    /// contribute most to each row's error; each scored chunk is also handed to `on_chunk`
    /// (a report, say), so one pass serves both. Returns rows written and rows skipped.
    pub fn score_file(
        &self,
        data: &Path,
        out: &Path,
        explain: usize,
        skip_bad: bool,
        progress: &dyn Progress,
        mut on_chunk: impl FnMut(&ScoredChunk) -> Result<()>,
    ) -> Result<(usize, usize)> {
        let explain = explain.min(self.meta.spec.features);
        let mut written = 0;
        let mut skipped = 0;
        crate::io::write_atomic(out, |tmp| {
            let mut w = csv::Writer::from_path(tmp).map_err(|e| csv_error(tmp, e))?;
            let mut header_done = false;
            skipped = self.score_chunks(data, skip_bad, progress, |c| {
                if !header_done {
                    let mut h = vec![
                        c.id_header.clone(),
                        "score".into(),
                        "p_value".into(),
                        "is_anomaly".into(),
                    ];
                    for k in 1..=explain {
                        h.push(format!("explain_{k}"));
                        h.push(format!("share_{k}"));
                    }
                    w.write_record(&h).map_err(|e| csv_error(tmp, e))?;
                    header_done = true;
                }
                for row in &c.scored {
                    let mut rec = vec![
                        row.id.clone(),
                        format!("{}", row.score),
                        format!("{}", row.p_value),
                        (row.is_anomaly as u8).to_string(),
                    ];
                    for (feature, share) in self.explain(row, explain) {
                        rec.push(feature.to_string());
                        rec.push(format!("{share:.4}"));
                    }
                    w.write_record(&rec).map_err(|e| csv_error(tmp, e))?;
                    written += 1;
                }
                on_chunk(c)
            })?;
            if !header_done {
                return Err(Error::Invalid(format!("{}: no data rows", data.display())));
            }
            w.flush().map_err(|e| Error::io(tmp, e))
        })?;
        Ok((written, skipped))
    }

    /// Writes the bottleneck code of every row of `data` to `out` (CSV, Parquet or `.npy`
    /// by extension): the id (or row number) first, then `z0..`. Returns rows written and
    /// rows skipped.
    pub fn encode_file(
        &self,
        data: &Path,
        out: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
    ) -> Result<(usize, usize)> {
        let columns = code_columns(self.meta.spec.latent);
        let mut written = 0;
        let mut skipped = 0;
        crate::io::write_atomic(out, |tmp| {
            let mut writer: Option<TableWriter> = None;
            skipped = self.encode_each(data, skip_bad, progress, |id_header, ids, codes| {
                if writer.is_none() {
                    writer = Some(TableWriter::create(out, tmp, id_header, &columns)?);
                }
                if let Some(w) = writer.as_mut() {
                    w.write(ids, codes)?;
                }
                written += ids.len();
                Ok(())
            })?;
            match writer {
                Some(w) => w.finish(),
                None => Err(Error::Invalid(format!("{}: no data rows", data.display()))),
            }
        })?;
        Ok((written, skipped))
    }

    /// Streams the codes of the rows of `data` chunk by chunk to `each`, with the name of
    /// the id column (`row` without one), the rows' ids and their codes (`rows x latent`).
    /// Returns the rows skipped (under `skip_bad`).
    pub fn encode_each(
        &self,
        data: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
        mut each: impl FnMut(&str, &[String], &[f32]) -> Result<()>,
    ) -> Result<usize> {
        let opened = self.open(data, self.keeps_ids())?;
        self.stream(
            opened,
            data,
            skip_bad,
            "encoding",
            progress,
            |layout, _, rows| {
                each(
                    &Self::id_header(layout),
                    &rows.ids,
                    &self.encode_rows(&rows),
                )
            },
        )
    }

    /// Writes `data` to `out` with its missing feature cells filled: every other cell, the
    /// column order and the id column stay as they were (CSV input is copied cell for cell).
    /// `out` is CSV, or `.npy` when every column of `data` is a feature. Rows whose features
    /// are all missing cannot be filled: an error, or with `skip_bad` copied unchanged.
    /// Returns rows written and cells filled.
    pub fn impute_file(
        &self,
        data: &Path,
        out: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
    ) -> Result<(usize, usize)> {
        let out_format = TableFormat::require(out)?;
        let (reader, layout) = self.open(data, true)?;
        let header: Vec<String> = reader.header().to_vec();
        let d = layout.features.len();
        if out_format == TableFormat::Npy
            && (layout.columns != d || (0..d).any(|k| layout.feature_column(k) != k))
        {
            return Err(Error::Invalid(format!(
                "{}: .npy output needs every column of {} to be a feature in model order; \
                 write .csv to keep the other columns",
                out.display(),
                data.display()
            )));
        }
        if out_format == TableFormat::Parquet {
            return Err(Error::Invalid(format!(
                "{}: impute writes .csv or .npy",
                out.display()
            )));
        }
        let mut written = 0;
        let mut filled = 0;
        crate::io::write_atomic(out, |tmp| {
            let mut csv_out = match out_format {
                TableFormat::Csv { delimiter } => {
                    let mut w = csv::WriterBuilder::new()
                        .delimiter(delimiter)
                        .terminator(line_ending(data))
                        .from_path(tmp)
                        .map_err(|e| csv_error(tmp, e))?;
                    w.write_record(&header).map_err(|e| csv_error(tmp, e))?;
                    Some(w)
                }
                _ => None,
            };
            let mut npy_out = match out_format {
                TableFormat::Npy => Some(TableWriter::create(out, tmp, "row", &header)?),
                _ => None,
            };
            self.stream(
                (reader, layout),
                data,
                skip_bad,
                "imputing",
                progress,
                |layout, chunk, rows| {
                    let values = self.impute_rows(&rows);
                    filled += rows.values.iter().filter(|v| v.is_nan()).count();
                    // Cells of every row of the chunk, as text, with filled features put in.
                    let cols = layout.columns;
                    let mut kept = rows.kept.iter().enumerate().peekable();
                    for r in 0..chunk.rows {
                        let mut cells: Vec<String> = match &chunk.records {
                            Some(recs) => recs[r].iter().map(|c| c.to_string()).collect(),
                            None => chunk.cells[r * cols..(r + 1) * cols]
                                .iter()
                                .map(|c| c.text())
                                .collect(),
                        };
                        let mut numbers: Vec<f32> = Vec::new();
                        if let Some(&(i, &kr)) = kept.peek()
                            && kr == r
                        {
                            kept.next();
                            let row = &values[i * d..(i + 1) * d];
                            for k in 0..d {
                                if rows.values[i * d + k].is_nan() {
                                    cells[layout.feature_column(k)] = format!("{}", row[k]);
                                }
                            }
                            numbers = row.to_vec();
                        }
                        if let Some(w) = csv_out.as_mut() {
                            w.write_record(&cells).map_err(|e| csv_error(tmp, e))?;
                        }
                        if let Some(w) = npy_out.as_mut() {
                            if numbers.is_empty() {
                                numbers = chunk.cells[r * cols..(r + 1) * cols]
                                    .iter()
                                    .map(|c| match c {
                                        crate::data::table::Cell::Number(v) => *v as f32,
                                        _ => f32::NAN,
                                    })
                                    .collect();
                            }
                            w.write(&[String::new()], &numbers)?;
                        }
                        written += 1;
                    }
                    Ok(())
                },
            )?;
            if let Some(mut w) = csv_out {
                w.flush().map_err(|e| Error::io(tmp, e))?;
            }
            if let Some(w) = npy_out {
                w.finish()?;
            }
            Ok(())
        })?;
        Ok((written, filled))
    }
}

/// The line ending of the text file at `path` (CRLF when its first line ends so), so a
/// copied table keeps it.
fn line_ending(path: &Path) -> csv::Terminator {
    use std::io::Read;
    let mut head = [0u8; 65536];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    match head[..n].iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && head[i - 1] == b'\r' => csv::Terminator::CRLF,
        _ => csv::Terminator::Any(b'\n'),
    }
}

/// Column names of codes: `z0, z1, ...`.
pub fn code_columns(latent: usize) -> Vec<String> {
    (0..latent).map(|j| format!("z{j}")).collect()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensors give f32 data")
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Invalid(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SENSORS, sensor_rows};
    use crate::progress::Silent;
    use crate::score::ThresholdRule;
    use crate::testing::scratch;

    /// Writes sensor rows as CSV with an id and a text column; `order` permutes the sensors.
    fn write_csv(path: &Path, rows: &[([f32; 8], Option<usize>)], order: &[usize], gap: f32) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut text = String::from("id,site");
        for &j in order {
            text.push(',');
            text.push_str(SENSORS[j]);
        }
        text.push('\n');
        for (i, (row, _)) in rows.iter().enumerate() {
            text.push_str(&format!("{i:04},plant-a"));
            for &j in order {
                if rand::Rng::random::<f32>(&mut rng) < gap {
                    text.push_str(",NA");
                } else {
                    text.push_str(&format!(",{}", row[j]));
                }
            }
            text.push('\n');
        }
        std::fs::write(path, text).unwrap();
    }

    fn params() -> TableParams {
        TableParams {
            selection: ColumnSelection {
                id_column: Some("id".into()),
                exclude: vec!["site".into()],
                ..Default::default()
            },
            epochs: Some(60),
            ..Default::default()
        }
    }

    fn read(path: &Path) -> Vec<Vec<String>> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn faulty_rows_score_high_are_explained_and_survive_a_reload() {
        let dir = scratch("tabletask-detect");
        let order: Vec<usize> = (0..8).collect();
        write_csv(
            &dir.join("train.csv"),
            &sensor_rows(600, false, 1),
            &order,
            0.05,
        );
        let normal = sensor_rows(100, false, 2);
        let faulty = sensor_rows(100, true, 3);
        let test: Vec<_> = normal.iter().chain(&faulty).cloned().collect();
        // Columns shuffled: scoring finds them by name.
        let shuffled = [3, 1, 7, 0, 5, 2, 6, 4];
        write_csv(&dir.join("test.csv"), &test, &shuffled, 0.0);
        let model =
            TableModel::fit(&dir.join("train.csv"), &params(), &Device::flex(), &Silent).unwrap();
        assert_eq!(model.meta().prep.features, SENSORS.to_vec());
        let out = dir.join("scores.csv");
        let (n, skipped) = model
            .score_file(&dir.join("test.csv"), &out, 1, false, &Silent, |_| Ok(()))
            .unwrap();
        assert_eq!((n, skipped), (200, 0));
        let rows = read(&out);
        assert_eq!(
            rows[0],
            [
                "id",
                "score",
                "p_value",
                "is_anomaly",
                "explain_1",
                "share_1"
            ]
        );
        // Ids come back as written, leading zeros and all.
        assert_eq!(rows[1][0], "0000");
        let scores: Vec<f32> = rows[1..].iter().map(|r| r[1].parse().unwrap()).collect();
        let labels: Vec<bool> = (0..200).map(|i| i >= 100).collect();
        let auroc = crate::metrics::auroc(&scores, &labels).unwrap();
        assert!(auroc > 0.95, "AUROC {auroc}");
        // The broken sensor is the top explanation for most faulty rows.
        let named = faulty
            .iter()
            .zip(&rows[101..])
            .filter(|((_, broken), r)| r[4] == SENSORS[broken.unwrap()])
            .count();
        assert!(named >= 70, "broken sensor named first in {named}/100 rows");
        // Few false alarms on normal rows at the conformal threshold.
        let alarms = rows[1..101].iter().filter(|r| r[3] == "1").count();
        assert!(alarms <= 10, "{alarms} false alarms in 100 normal rows");

        let path = dir.join("model.safetensors");
        model.save(&path).unwrap();
        let again = TableModel::load(&path, &Device::flex()).unwrap();
        let out2 = dir.join("scores2.csv");
        again
            .score_file(&dir.join("test.csv"), &out2, 1, false, &Silent, |_| Ok(()))
            .unwrap();
        assert_eq!(read(&out), read(&out2));
        assert_eq!(again.meta(), model.meta());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn impute_fills_gaps_better_than_the_median_and_keeps_other_cells_verbatim() {
        let dir = scratch("tabletask-impute");
        let order: Vec<usize> = (0..8).collect();
        write_csv(
            &dir.join("train.csv"),
            &sensor_rows(800, false, 4),
            &order,
            0.1,
        );
        let truth = sensor_rows(200, false, 5);
        let gappy = dir.join("gappy.csv");
        write_csv(&gappy, &truth, &order, 0.2);
        let model =
            TableModel::fit(&dir.join("train.csv"), &params(), &Device::flex(), &Silent).unwrap();
        let out = dir.join("filled.csv");
        let (n, filled) = model.impute_file(&gappy, &out, false, &Silent).unwrap();
        let before = read(&gappy);
        let after = read(&out);
        assert_eq!(n, 200);
        assert_eq!(before.len(), after.len());
        let mut count = 0;
        let (mut err_model, mut err_median) = (0f64, 0f64);
        for (r, (b, a)) in before.iter().zip(&after).enumerate() {
            for (c, (x, y)) in b.iter().zip(a).enumerate() {
                if x != "NA" {
                    assert_eq!(x, y, "row {r} column {c} changed");
                    continue;
                }
                count += 1;
                let j = c - 2;
                let v: f32 = y.parse().unwrap();
                let t = truth[r - 1].0[j];
                let scale = model.meta().prep.scale[j];
                err_model += ((v - t) / scale).powi(2) as f64;
                err_median += ((model.meta().prep.center[j] - t) / scale).powi(2) as f64;
            }
        }
        assert_eq!(count, filled);
        assert!(count > 200, "{count} gaps");
        assert!(
            err_model < 0.5 * err_median,
            "model {err_model} vs median {err_median}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scoring_streams_in_chunks_like_one_batch_and_names_missing_columns() {
        let dir = scratch("tabletask-stream");
        let order: Vec<usize> = (0..8).collect();
        write_csv(
            &dir.join("train.csv"),
            &sensor_rows(300, false, 6),
            &order,
            0.0,
        );
        let mut p = params();
        p.epochs = Some(5);
        p.contamination = Some(0.05);
        let model = TableModel::fit(&dir.join("train.csv"), &p, &Device::flex(), &Silent).unwrap();
        assert!(matches!(
            model.meta().calibration.rule,
            ThresholdRule::Contamination { .. }
        ));
        let big = sensor_rows(CHUNK_ROWS + 500, false, 7);
        write_csv(&dir.join("big.csv"), &big, &order, 0.01);
        let out = dir.join("big_scores.csv");
        let (n, _) = model
            .score_file(&dir.join("big.csv"), &out, 0, false, &Silent, |_| Ok(()))
            .unwrap();
        assert_eq!(n, CHUNK_ROWS + 500);
        let streamed: Vec<f32> = read(&out)[1..]
            .iter()
            .map(|r| r[1].parse().unwrap())
            .collect();
        let (layout, rows) =
            read_training_table(&dir.join("big.csv"), &p.selection, false).unwrap();
        assert_eq!(layout.features.len(), 8);
        let whole: Vec<f32> = model.score_rows(&rows).iter().map(|r| r.score).collect();
        for (i, (a, b)) in streamed.iter().zip(&whole).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "row {i}: {a} vs {b}"
            );
        }
        write_csv(&dir.join("short.csv"), &big[..3], &[0, 1, 2, 3, 4, 5], 0.0);
        let err = model
            .score_file(&dir.join("short.csv"), &out, 0, false, &Silent, |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing columns the model was trained on: speed, noise_db"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
