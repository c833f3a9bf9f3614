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
pub use crate::score::calibration::DEFAULT_FOLDS;
use crate::score::calibration::{CalibrationPlan, check_folds, networks_for};
use crate::task::api::Verdict;
use crate::train::{DenseTrainOptions, default_epochs, side_by_side, train_dense};

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
    /// Passes over the rows, for each network; default about 6,000 optimizer steps (5 to
    /// 300 passes); each network of an ensemble of K gets its share (6,000 / K steps) but
    /// at least 185 passes, within 12,000 / K steps.
    pub epochs: Option<usize>,
    /// Networks of a cross-conformal ensemble, each trained without one fold of the rows
    /// (every row then calibrates); 1: one network and a held-out share
    /// (`calibration_fraction`). Default: [`DEFAULT_FOLDS`] up to [`CROSS_CONFORMAL_ROWS`]
    /// rows, then 1.
    pub folds: Option<usize>,
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
            folds: None,
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
        check_folds(self.folds)?;
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
/// Largest table calibrated cross-conformally by default: above it a single split holds
/// out enough rows (150 of 1,000 at 15%), and each network's share of the steps would
/// fall below the passes a table needs (digits' imputation with 1,437 rows, 67 passes
/// per network: RMSE 0.593 against 0.559 for one network; bench/tables.sh).
pub const CROSS_CONFORMAL_ROWS: usize = 1000;
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

/// Scores of a batch of rows (see [`TableModel::score_raw`]).
struct Scored {
    verdicts: Vec<Verdict>,
    parts: Vec<Vec<f32>>,
}

/// What the network reads for standardised rows (NaN missing): the rows with missing
/// cells as 0, and the mask of observed cells.
fn network_inputs(device: &Device, d: usize, values: &[f32]) -> (Tensor<2>, Tensor<2>) {
    let n = values.len() / d;
    let mask: Vec<f32> = values.iter().map(|v| (!v.is_nan()) as u8 as f32).collect();
    let shown: Vec<f32> = values
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { v })
        .collect();
    // Inputs are made on the inference device itself: tensors moved over from an
    // autodiff device leak on every forward.
    let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [n, d]), device);
    (t(shown), t(mask))
}

/// Codes (means for a VAE) and, for a VAE, log-variances of standardised rows (NaN
/// missing) from network `model`: the network is shown missing cells as 0 beside the mask
/// of observed ones.
fn encode_with(model: &DenseAutoencoder, device: &Device, d: usize, values: &[f32]) -> Encoded {
    let (shown, mask) = network_inputs(device, d, values);
    model.encode(shown, Some(mask))
}

/// Runs network `model` on standardised rows (NaN missing), in the order given.
fn network_pass(model: &DenseAutoencoder, device: &Device, d: usize, values: &[f32]) -> Pass {
    if model.to_log_var.is_none() {
        // No KL term to compute: the whole network in one pass (one operation on the CPU).
        let (shown, mask) = network_inputs(device, d, values);
        return Pass {
            recon: to_vec(model.forward(shown, Some(mask))),
            kl: None,
        };
    }
    let enc = encode_with(model, device, d, values);
    let kl = enc.log_var.map(|lv| {
        let kl = (lv.clone().exp() + enc.mean.clone().powi_scalar(2) - lv - 1.0).sum_dim(1) * 0.5;
        to_vec(kl)
    });
    Pass {
        recon: to_vec(model.decode(enc.mean)),
        kl,
    }
}

/// Network `model`'s scores of standardised rows (NaN missing) and each row's
/// per-feature error contributions.
fn member_scores(
    model: &DenseAutoencoder,
    spec: &DenseSpec,
    score: TableScore,
    device: &Device,
    values: &[f32],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d = spec.features;
    let pass = network_pass(model, device, d, values);
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
        scores.push(match (score, &pass.kl) {
            // Gaussian decoder of unit variance, at the mean code, missing cells
            // counted at the row's mean error.
            (TableScore::Elbo, Some(kl)) => 0.5 * mean * d as f32 + kl[r],
            _ => mean,
        });
        parts.push(contrib);
    }
    (scores, parts)
}

/// Passes each network of an ensemble gets at least, where its share of one network's
/// steps gives fewer and [`ENSEMBLE_STEPS`] allows: five networks on 1,000 rows (800 each)
/// got 93 passes from their share and ranked 0.0010 below one network over 20 draws of
/// Fashion-MNIST as a table; with 185 they rank level with it (+0.0001, above on 11 of 20)
/// in two-thirds of the time the single network took when issue 17 was filed
/// (bench/calibration.sh, bench/RESULTS.md, "Small data").
const ENSEMBLE_MIN_EPOCHS: usize = 185;
/// ...as long as the ensemble's networks together take at most this many single networks'
/// steps ([`TARGET_STEPS`] each), so that `--folds K` on a large table stays affordable.
const ENSEMBLE_STEPS: usize = 2;

/// Passes over `rows` training rows (batches of `batch_size`) for each of `networks`
/// networks: a single network's schedule (~[`TARGET_STEPS`] optimizer steps, at most
/// [`MAX_EPOCHS`] passes), each network of an ensemble capped at its share of
/// [`TARGET_STEPS`] but given at least [`ENSEMBLE_MIN_EPOCHS`] passes where
/// [`ENSEMBLE_STEPS`] allows. Small tables, which one network learns in fewer steps, keep
/// their full passes per network: splitting the steps of one network among five cost
/// digits 0.006 detection AUROC (bench/tables.sh).
fn sized_epochs(rows: usize, batch_size: usize, networks: usize) -> usize {
    let networks = networks.max(1);
    let share = default_epochs(rows, batch_size, TARGET_STEPS / networks, MAX_EPOCHS);
    if networks == 1 {
        return share;
    }
    let most = default_epochs(
        rows,
        batch_size,
        ENSEMBLE_STEPS * TARGET_STEPS / networks,
        MAX_EPOCHS,
    );
    share.max(ENSEMBLE_MIN_EPOCHS.min(most))
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

/// A trained table model: one network, or the networks of a cross-conformal ensemble in
/// fold order (see [`crate::score::calibration`]).
pub struct TableModel {
    pub(crate) members: Vec<DenseAutoencoder>,
    meta: TableMeta,
    device: Device,
    /// Each network's standardisation (`meta.prep`, then `meta.ensemble_scaling`).
    pub(crate) preps: Vec<TablePrep>,
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
        let values = rows.values;
        let spec = DenseSpec::for_table(
            d,
            params.latent,
            params.hidden.clone(),
            params.variational,
            params.batch_norm,
        )?;
        let k = networks_for(n, params.folds, DEFAULT_FOLDS, CROSS_CONFORMAL_ROWS);
        // Each network's calibration rows and training rows.
        let plan_rows = plan.networks(n, k, params.seed, source, "rows")?;
        let train_len = plan_rows[0].training.len();
        let batch_size = params.batch_size.min(train_len);
        let epochs = params
            .epochs
            .unwrap_or_else(|| sized_epochs(train_len, batch_size, k));
        let gather = |values: &[f32], idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| values[i * d..(i + 1) * d].iter().copied())
                .collect()
        };
        let options = |f: usize| DenseTrainOptions {
            epochs,
            batch_size: params.batch_size.min(plan_rows[f].training.len()),
            learning_rate: params.learning_rate,
            seed: params.seed.wrapping_add(f as u64),
            mask_rate: params.mask_rate,
            kl_weight: params.kl_weight,
            // Measured with bench/tables.sh: stopping on 10% held-out rows lowered
            // digits' detection AUROC from 0.9805 to 0.9775 (below PCA); the schedule
            // is sized to the rows instead (`sized_epochs`).
            early_stopping: false,
        };
        // The networks train side by side (each on one core for a table of a few hundred
        // columns or fewer), under one progress stage of all their steps.
        let steps = (0..k)
            .map(|f| options(f).steps(&plan_rows[f].training))
            .sum::<Result<usize>>()?;
        if k > 1 {
            progress.status(&format!(
                "training {k} networks, each on {} rows and calibrated on the other {}",
                train_len,
                n - train_len
            ));
        }
        let trained = side_by_side(k, steps, progress, |f, progress| {
            let (cal_idx, train_idx) = (&plan_rows[f].calibration, &plan_rows[f].training);
            // Standardised by the rows it trains on only: fitted on the calibration rows
            // too, it would know them better than fresh rows, and the p-values would
            // flag too many fresh ones (measured in bench/calibration.sh).
            let prep = TablePrep::fit(
                features.clone(),
                id_column.clone(),
                &gather(&values, train_idx),
            );
            let mut standardized = values.clone();
            prep.standardize(&mut standardized);
            let (model, log) = train_dense(
                &spec,
                &standardized,
                train_idx,
                &options(f),
                device,
                progress,
            )?;
            let cal = gather(&standardized, cal_idx);
            let mut scores = Vec::with_capacity(cal_idx.len());
            for chunk in cal.chunks(CHUNK_ROWS * d) {
                scores.extend(member_scores(&model, &spec, params.score, device, chunk).0);
            }
            Ok((model, prep, scores, log))
        });
        let mut members = Vec::with_capacity(k);
        let mut preps = Vec::with_capacity(k);
        let mut cal_scores = Vec::with_capacity(k);
        let mut first_log = None;
        for (model, prep, scores, log) in trained? {
            members.push(model);
            preps.push(prep);
            cal_scores.push(scores);
            first_log.get_or_insert(log);
        }
        let calibration = match k {
            1 => plan.calibrate(cal_scores.concat(), "rows", progress)?,
            _ => plan.calibrate_folds(cal_scores, "rows", progress)?,
        };
        let calibration_samples = calibration.scores.len();
        Ok(Self {
            members,
            meta: TableMeta {
                format_version: FORMAT_VERSION,
                kind: ModelKind::TableDetector.data(),
                task: ModelKind::TableDetector.task(),
                spec,
                prep: preps[0].clone(),
                ensemble_scaling: preps[1..].iter().map(TablePrep::scaling).collect(),
                scoring: TableScoring {
                    score: params.score,
                    impute_iterations: params.impute_iterations,
                    mask_rate: params.mask_rate,
                },
                calibration,
                training: TrainingSummary::from_log(
                    first_log.unwrap_or_default(),
                    calibration_samples,
                    rows.skipped.len(),
                    batch_size,
                    params.learning_rate,
                    params.seed,
                ),
            },
            device: device.clone(),
            preps,
        })
    }

    /// Loads a table model file for use on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_table(path, device)?;
        Ok(Self::from_weights(weights, meta, device))
    }

    /// Loads a table model from its model file's bytes (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_table_bytes(path, bytes, device)?;
        Ok(Self::from_weights(weights, meta, device))
    }

    fn from_weights(weights: DenseWeights, meta: TableMeta, device: &Device) -> Self {
        let mut members = vec![weights.autoencoder];
        members.extend(weights.ensemble);
        let mut preps = vec![meta.prep.clone()];
        preps.extend(
            meta.ensemble_scaling
                .iter()
                .map(|s| meta.prep.with_scaling(s)),
        );
        Self {
            members,
            meta,
            device: device.clone(),
            preps,
        }
    }

    /// Writes the model file to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = DenseWeights {
            autoencoder: self.members[0].clone(),
            ensemble: self.members[1..].to_vec(),
        };
        file::save_table(path, &weights, &self.meta)
    }

    /// The model file's metadata.
    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    /// Number of networks: K for a cross-conformal ensemble, else 1.
    pub fn networks(&self) -> usize {
        self.members.len()
    }

    /// Codes (means for a VAE) of rows of raw values (NaN missing) from the first network:
    /// the networks of an ensemble each have their own code space.
    fn encode_raw(&self, raw: &[f32]) -> Encoded {
        let mut values = raw.to_vec();
        self.preps[0].standardize(&mut values);
        encode_with(
            &self.members[0],
            &self.device,
            self.meta.spec.features,
            &values,
        )
    }

    /// The reconstruction of rows of raw values (NaN missing), in the order given and in
    /// the table's units: the mean of the networks' reconstructions.
    fn reconstruct_raw(&self, raw: &[f32]) -> Vec<f32> {
        let d = self.meta.spec.features;
        let mut sum = vec![0.0f32; raw.len()];
        for (m, prep) in self.members.iter().zip(&self.preps) {
            let mut values = raw.to_vec();
            prep.standardize(&mut values);
            let pass = network_pass(m, &self.device, d, &values);
            for (i, (s, r)) in sum.iter_mut().zip(pass.recon).enumerate() {
                *s += prep.unstandardize(i % d, r);
            }
        }
        let k = self.members.len() as f32;
        sum.iter_mut().for_each(|s| *s /= k);
        sum
    }

    /// Verdicts on rows of raw values (NaN missing): the score is the mean of the networks'
    /// scores, the p-value and flag come from each network's score (cross-conformal for an
    /// ensemble); and each row's per-feature error contributions (the mean of the
    /// networks', each in its own standardised units).
    fn score_raw(&self, raw: &[f32]) -> Scored {
        let d = self.meta.spec.features;
        let k = self.members.len();
        let n = raw.len() / d;
        let mut per_network = vec![0.0f32; n * k];
        let mut parts = vec![vec![0.0f32; d]; n];
        for (j, (m, prep)) in self.members.iter().zip(&self.preps).enumerate() {
            let mut values = raw.to_vec();
            prep.standardize(&mut values);
            let (scores, contribs) = member_scores(
                m,
                &self.meta.spec,
                self.meta.scoring.score,
                &self.device,
                &values,
            );
            for (r, (score, contrib)) in scores.into_iter().zip(contribs).enumerate() {
                per_network[r * k + j] = score;
                parts[r].iter_mut().zip(contrib).for_each(|(p, c)| *p += c);
            }
        }
        for row in &mut parts {
            row.iter_mut().for_each(|p| *p /= k as f32);
        }
        let cal = &self.meta.calibration;
        let verdicts = per_network
            .chunks(k)
            .map(|networks| cal.verdict_of(networks))
            .collect();
        Scored { verdicts, parts }
    }

    /// Scores rows of raw feature values (`rows x features`, the model's column order, NaN
    /// missing). The p-value is cross-conformal for an ensemble.
    pub fn score_rows(&self, rows: &Rows) -> Vec<ScoredRow> {
        let scored = self.score_raw(&rows.values);
        scored
            .verdicts
            .into_iter()
            .zip(scored.parts)
            .zip(&rows.ids)
            .map(|((v, contrib), id)| {
                let total: f32 = contrib.iter().sum::<f32>().max(f32::MIN_POSITIVE);
                ScoredRow {
                    id: id.clone(),
                    score: v.score,
                    p_value: v.p_value,
                    is_anomaly: v.is_anomaly,
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
        self.encode_values(&rows.values)
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
        let missing: Vec<usize> = (0..raw.len()).filter(|&i| raw[i].is_nan()).collect();
        if missing.is_empty() {
            return raw.to_vec();
        }
        let mut filled = raw.to_vec();
        let recon = self.reconstruct_raw(raw);
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
                let recon = self.reconstruct_raw(&shown);
                for &i in &missing {
                    if group[i % d] == g {
                        filled[i] = recon[i];
                    }
                }
            }
        }
        filled
    }

    /// Verdicts on rows of raw values, [`CHUNK_ROWS`] at a time as files are scored.
    pub(crate) fn verdicts_chunked(&self, values: &[f32]) -> Vec<Verdict> {
        let d = self.meta.spec.features;
        let mut out = Vec::with_capacity(values.len() / d.max(1));
        for chunk in values.chunks(CHUNK_ROWS * d) {
            out.extend(self.score_raw(chunk).verdicts);
        }
        out
    }

    /// Bottleneck codes of rows of raw values (`rows x features`, NaN missing).
    pub(crate) fn encode_values(&self, raw: &[f32]) -> Vec<f32> {
        to_vec(self.encode_raw(raw).mean)
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
    fn ensemble_networks_get_enough_passes_within_two_networks_steps() {
        let steps = |rows: usize, k: usize| sized_epochs(rows, 64, k) * rows.div_ceil(64);
        // One network keeps its schedule: 300 passes on 850 rows, ~6,000 steps on 10,000.
        assert_eq!(sized_epochs(850, 64, 1), MAX_EPOCHS);
        assert_eq!(sized_epochs(10_000, 64, 1), 39);
        // Five networks on 1,000 rows train on 800 each: their share of one network's
        // steps would be 93 passes; they get the floor.
        assert_eq!(sized_epochs(800, 64, 5), ENSEMBLE_MIN_EPOCHS);
        assert_eq!(sized_epochs(400, 64, 5), ENSEMBLE_MIN_EPOCHS);
        // 300 rows (240 per network) keep a single network's full passes.
        assert_eq!(sized_epochs(240, 64, 5), MAX_EPOCHS);
        // On a large table the floor gives way to two networks' steps in all.
        assert_eq!(sized_epochs(8_000, 64, 5), 20);
        assert!(5 * steps(8_000, 5) <= 2 * TARGET_STEPS + 5 * 125);
        // Two networks (`--folds 2`) get one network's steps each, not more.
        assert_eq!(sized_epochs(10_000, 64, 2), sized_epochs(10_000, 64, 1));
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
        // 600 rows: a cross-conformal ensemble, every row calibrating out of fold, each
        // network standardised by its own training rows.
        let meta = model.meta();
        assert_eq!(model.networks(), DEFAULT_FOLDS);
        assert_eq!(meta.calibration.folds.len(), DEFAULT_FOLDS);
        assert_eq!(meta.calibration.scores.len(), 600);
        assert_eq!(meta.ensemble_scaling.len(), DEFAULT_FOLDS - 1);
        assert_ne!(meta.ensemble_scaling[0].center, meta.prep.center);
        assert_eq!(meta.training.train_samples, 480);
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

    /// Counts what a run reports: each stage's label, steps and steps done; status lines.
    #[derive(Default)]
    struct Tally {
        stages: std::sync::Mutex<Vec<(String, u64, u64)>>,
        lines: std::sync::Mutex<Vec<String>>,
    }

    impl Progress for Tally {
        fn stage(&self, label: &str, total: u64) {
            self.stages.lock().unwrap().push((label.into(), total, 0));
        }
        fn advance(&self, n: u64) {
            self.stages.lock().unwrap().last_mut().unwrap().2 += n;
        }
        fn status(&self, message: &str) {
            self.lines.lock().unwrap().push(message.to_string());
        }
    }

    #[test]
    fn networks_trained_side_by_side_equal_those_trained_in_turn() {
        let dir = scratch("tabletask-side");
        let order: Vec<usize> = (0..8).collect();
        let train = dir.join("train.csv");
        write_csv(&train, &sensor_rows(103, false, 8), &order, 0.05);
        let p = TableParams {
            epochs: Some(7),
            ..params()
        };
        let fit_on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let tally = Tally::default();
            let model = pool
                .install(|| TableModel::fit(&train, &p, &Device::flex(), &tally))
                .unwrap();
            (model, tally)
        };
        // A pool of one trains the networks one after another; of three, three at a time.
        let (turns, _) = fit_on(1);
        let (side, tally) = fit_on(3);
        assert_eq!(side.networks(), DEFAULT_FOLDS);
        // The same model, bit for bit, but for the time training took.
        let timeless = |m: &TableModel| {
            let mut meta = m.meta().clone();
            meta.training.seconds = 0.0;
            meta
        };
        assert_eq!(timeless(&side), timeless(&turns));
        let rows: Vec<f32> = sensor_rows(20, true, 9)
            .iter()
            .flat_map(|(r, _)| r.iter().copied())
            .collect();
        assert_eq!(side.reconstruct_raw(&rows), turns.reconstruct_raw(&rows));
        // One stage counts every network's steps, and it is filled exactly: 103 rows in
        // 5 folds train on 82 or 83 rows, 2 batches of 64 a pass.
        let stages = tally.stages.lock().unwrap().clone();
        let training: Vec<_> = stages.iter().filter(|s| s.0 == "training").collect();
        let steps = (DEFAULT_FOLDS * 2 * 7) as u64;
        assert_eq!(training, [&("training".to_string(), steps, steps)]);
        let lines = tally.lines.lock().unwrap();
        for f in 1..=DEFAULT_FOLDS {
            let tag = format!("network {f}/{DEFAULT_FOLDS}: epoch 7/7");
            assert!(
                lines.iter().any(|l| l.starts_with(&tag)),
                "{tag}: {lines:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_fold_holds_out_a_share_and_bad_fold_counts_are_refused() {
        let dir = scratch("tabletask-folds");
        let order: Vec<usize> = (0..8).collect();
        let train = dir.join("train.csv");
        write_csv(&train, &sensor_rows(100, false, 4), &order, 0.0);
        let one = TableParams {
            folds: Some(1),
            epochs: Some(5),
            ..params()
        };
        let model = TableModel::fit(&train, &one, &Device::flex(), &Silent).unwrap();
        assert_eq!(model.networks(), 1);
        let meta = model.meta();
        assert!(meta.calibration.folds.is_empty() && meta.ensemble_scaling.is_empty());
        assert_eq!(meta.calibration.scores.len(), 15);
        assert_eq!(meta.training.train_samples, 85);
        let few = dir.join("few.csv");
        write_csv(&few, &sensor_rows(10, false, 5), &order, 0.0);
        for (k, data, what) in [
            (0, &train, "from 1"),
            (crate::model::check::MAX_FOLDS + 1, &train, "from 1"),
            (20, &few, "needs at least 20 rows"),
        ] {
            let bad = TableParams {
                folds: Some(k),
                ..one.clone()
            };
            let e = TableModel::fit(data, &bad, &Device::flex(), &Silent)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("folds") && e.contains(what), "{k}: {e}");
        }
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
