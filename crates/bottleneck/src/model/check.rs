//! Checking a model file's metadata before anything is built from it. A file can be damaged
//! on the way or edited by hand; every number the scoring code sizes an allocation with,
//! loops over or compares against is checked here, naming the field, so that a bad file
//! is a clear error instead of a panic, an abort, an endless loop or verdicts that are
//! silently wrong. The weights the metadata describes are counted ([`CheckMeta::weight_values`])
//! and compared with what the file holds before the network is built, so no size in the
//! metadata can make the loader allocate more than the file brings.

use std::collections::HashSet;
use std::fmt::Display;

use crate::data::audio::SAMPLE_RATES;
use crate::data::images::ImagePrep;
use crate::data::scaling::{Scaling, TablePrep};
use crate::data::spectral::MelSpec;
use crate::model::file::{
    AudioDenoiseMeta, AudioMeta, AudioScoring, DataKind, DenoiseMeta, FORMAT_VERSION,
    KNN_JOIN_FORMAT_VERSION, KnnJoin, ModelMeta, NetworkScoring, ScoreSettings, SpectrumFeatures,
    TILED_FORMAT_VERSION, TableMeta, Task, TrainingSummary,
};
use crate::model::{ConvSpec, DenoiseSpec, DenseSpec, SegmentSpec};
use crate::score::calibration::ThresholdRule;
use crate::score::{Calibration, Reduction};

/// What is wrong, naming the field (`scoring.smoothing_sigma: ...`).
pub type Problem = String;
type Checked = std::result::Result<(), Problem>;

/// Widest layer (channels or units) a model file may describe.
pub const MAX_WIDTH: usize = 1 << 14;
/// Largest image side a model file may describe.
pub const MAX_IMAGE_SIZE: usize = 8192;
/// Most table columns a model file may describe.
pub const MAX_FEATURES: usize = 1 << 20;
/// Most hidden layers of a dense network.
pub const MAX_LAYERS: usize = 32;
/// Most refinement passes of `impute`.
pub const MAX_IMPUTE_ITERATIONS: usize = 1000;
/// Longest STFT frame.
pub const MAX_FFT: usize = 1 << 16;
/// Most frames stacked into one network input.
pub const MAX_CONTEXT: usize = 256;

/// A model file's metadata that can say what in it cannot work.
pub trait CheckMeta {
    /// The first problem found, naming its field; `Ok` when every number is in range and
    /// every length agrees with the others.
    fn check(&self) -> Checked;

    /// Number of `f32` values the weights of this metadata's network hold (with stored
    /// training codes), `None` when it does not fit in a `u64`. Called after [`check`].
    ///
    /// [`check`]: CheckMeta::check
    fn weight_values(&self) -> Option<u64>;
}

fn fail<T>(field: &str, what: impl Display) -> std::result::Result<T, Problem> {
    Err(format!("{field}: {what}"))
}

fn finite(field: &str, v: f32) -> Checked {
    if v.is_finite() {
        Ok(())
    } else {
        fail(field, format!("{v} is not a finite number"))
    }
}

fn positive(field: &str, v: f32) -> Checked {
    finite(field, v)?;
    if v > 0.0 {
        Ok(())
    } else {
        fail(field, format!("{v} must be above 0"))
    }
}

fn non_negative(field: &str, v: f64) -> Checked {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        fail(field, format!("{v} must be a finite number at least 0"))
    }
}

fn within<T: PartialOrd + Display + Copy>(field: &str, v: T, lo: T, hi: T) -> Checked {
    if lo <= v && v <= hi {
        Ok(())
    } else {
        fail(field, format!("{v} is outside {lo} to {hi}"))
    }
}

fn length(field: &str, found: usize, expected: usize) -> Checked {
    if found == expected {
        Ok(())
    } else {
        fail(field, format!("{found} values where {expected} are needed"))
    }
}

fn all_finite(field: &str, v: &[f32]) -> Checked {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => fail(&format!("{field}[{i}]"), format!("{} is not finite", v[i])),
    }
}

fn all_positive(field: &str, v: &[f32]) -> Checked {
    match v.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
        None => Ok(()),
        Some(i) => fail(
            &format!("{field}[{i}]"),
            format!("{} must be above 0", v[i]),
        ),
    }
}

fn kind_is(data: DataKind, task: Task, expected: (DataKind, Task)) -> Checked {
    if (data, task) == expected {
        Ok(())
    } else {
        fail(
            "kind",
            format!(
                "{} for {} in a file of another kind",
                data.name(),
                task.name()
            ),
        )
    }
}

/// Held-out scores: present, finite, ascending, and the threshold and false-alarm bound
/// are the ones the rule gives on them (an edited threshold would silently flip verdicts).
fn check_calibration(c: &Calibration) -> Checked {
    if c.scores.is_empty() {
        return fail("calibration.scores", "empty (no held-out scores)");
    }
    all_finite("calibration.scores", &c.scores)?;
    if let Some(i) = c.scores.windows(2).position(|w| w[0] > w[1]) {
        return fail(
            "calibration.scores",
            format!(
                "not ascending at {}: {} > {}",
                i,
                c.scores[i],
                c.scores[i + 1]
            ),
        );
    }
    let (name, rate) = match c.rule {
        ThresholdRule::Conformal { fpr } => ("calibration.rule.fpr", fpr),
        ThresholdRule::Contamination { contamination } => {
            ("calibration.rule.contamination", contamination)
        }
    };
    if !(rate > 0.0 && rate < 1.0) {
        return fail(name, format!("{rate} must be above 0 and below 1"));
    }
    let expected = match c.folds.is_empty() {
        true => Calibration::fit(c.scores.clone(), c.rule),
        false => {
            check_folds(c)?;
            Calibration::fit_folds(c.folds.clone(), c.rule)
        }
    }
    .map_err(|e| e.to_string())?;
    if expected.threshold.to_bits() != c.threshold.to_bits() {
        return fail(
            "calibration.threshold",
            format!(
                "{} does not follow from the calibration scores and rule (they give {})",
                c.threshold, expected.threshold
            ),
        );
    }
    if expected.effective_fpr.to_bits() != c.effective_fpr.to_bits() {
        return fail(
            "calibration.effective_fpr",
            format!(
                "{} does not follow from the calibration scores and rule (they give {})",
                c.effective_fpr, expected.effective_fpr
            ),
        );
    }
    Ok(())
}

/// A model kind that holds one network has no out-of-fold scores.
fn check_single(c: &Calibration) -> Checked {
    match c.folds.is_empty() {
        true => Ok(()),
        false => fail("calibration.folds", "this kind of model holds one network"),
    }
}

/// Most networks of a cross-conformal ensemble a model file may hold.
pub const MAX_FOLDS: usize = 64;

/// The out-of-fold scores of an ensemble: 2 to [`MAX_FOLDS`] folds, none empty, each
/// ascending, and together exactly the calibration scores.
fn check_folds(c: &Calibration) -> Checked {
    within("calibration.folds", c.folds.len(), 2, MAX_FOLDS)?;
    for (k, fold) in c.folds.iter().enumerate() {
        let field = format!("calibration.folds[{k}]");
        if fold.is_empty() {
            return fail(&field, "empty");
        }
        all_finite(&field, fold)?;
        if fold.windows(2).any(|w| w[0] > w[1]) {
            return fail(&field, "not ascending");
        }
    }
    let mut all = c.folds.concat();
    all.sort_by(f32::total_cmp);
    if all.len() != c.scores.len()
        || all
            .iter()
            .zip(&c.scores)
            .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        return fail(
            "calibration.folds",
            "together are not the calibration scores",
        );
    }
    Ok(())
}

fn check_training(t: &TrainingSummary) -> Checked {
    non_negative("training.learning_rate", t.learning_rate)?;
    non_negative("training.seconds", t.seconds)?;
    all_finite("training.loss_curve", &t.loss_curve)?;
    all_finite("training.validation_curve", &t.validation_curve)?;
    if let Some(c) = &t.latent_check {
        within("training.latent_check.clean", c.clean, 1, usize::MAX)?;
        within("training.latent_check.auroc", c.auroc, 0.0, 1.0)?;
        within("training.latent_check.bar", c.bar, 0.0, 1.0)?;
        if c.kept != (c.auroc >= c.bar) {
            return fail(
                "training.latent_check.kept",
                format!(
                    "{} does not follow from auroc {} and bar {}",
                    c.kept, c.auroc, c.bar
                ),
            );
        }
    }
    Ok(())
}

fn check_reduction(field: &str, r: &Reduction) -> Checked {
    match *r {
        Reduction::TopK { fraction } if !(fraction > 0.0 && fraction <= 1.0) => fail(
            &format!("{field}.fraction"),
            format!("{fraction} must be above 0 and at most 1"),
        ),
        _ => Ok(()),
    }
}

fn check_conv(spec: &ConvSpec) -> Checked {
    if !(spec.channels == 1 || spec.channels == 3) {
        return fail("spec.channels", format!("{} must be 1 or 3", spec.channels));
    }
    within("spec.image_size", spec.image_size, 8, MAX_IMAGE_SIZE)?;
    within("spec.widths (depth)", spec.widths.len(), 1, 12)?;
    for (i, &w) in spec.widths.iter().enumerate() {
        within(&format!("spec.widths[{i}]"), w, 1, MAX_WIDTH)?;
    }
    let step = 1usize << spec.widths.len();
    if !spec.image_size.is_multiple_of(step) || spec.image_size / step < 1 {
        return fail(
            "spec.image_size",
            format!(
                "{} cannot be halved {} times (one per width)",
                spec.image_size,
                spec.widths.len()
            ),
        );
    }
    within("spec.latent", spec.latent, 1, MAX_WIDTH)
}

fn check_dense(spec: &DenseSpec) -> Checked {
    within("spec.features", spec.features, 1, MAX_FEATURES)?;
    within("spec.hidden (layers)", spec.hidden.len(), 0, MAX_LAYERS)?;
    for (i, &w) in spec.hidden.iter().enumerate() {
        within(&format!("spec.hidden[{i}]"), w, 1, MAX_WIDTH)?;
    }
    within("spec.latent", spec.latent, 1, MAX_WIDTH)
}

fn linear(inputs: u64, outputs: u64) -> Option<u64> {
    inputs.checked_mul(outputs)?.checked_add(outputs)
}

fn conv(inputs: u64, outputs: u64, kernel: u64) -> Option<u64> {
    inputs
        .checked_mul(outputs)?
        .checked_mul(kernel * kernel)?
        .checked_add(outputs)
}

/// Values in a [`crate::model::ConvAutoencoder`] of `spec`.
fn conv_values(spec: &ConvSpec) -> Option<u64> {
    let mut total = 0u64;
    let mut in_ch = spec.channels as u64;
    for &w in &spec.widths {
        total = total.checked_add(conv(in_ch, w as u64, 4)?)?;
        in_ch = w as u64;
    }
    let grid = (spec.image_size >> spec.widths.len()) as u64;
    let flat = in_ch.checked_mul(grid)?.checked_mul(grid)?;
    let latent = spec.latent as u64;
    total = total.checked_add(linear(flat, latent)?)?;
    total = total.checked_add(linear(latent, flat)?)?;
    let mut widths: Vec<u64> = spec.widths.iter().rev().map(|&w| w as u64).collect();
    widths.push(spec.widths[0] as u64);
    for pair in widths.windows(2) {
        total = total.checked_add(conv(pair[0], pair[1], 4)?)?;
    }
    total.checked_add(conv(spec.widths[0] as u64, spec.channels as u64, 3)?)
}

/// Values in a [`crate::model::DenseAutoencoder`] of `spec` (batch normalisation keeps four
/// per unit: scale, shift and the running mean and variance).
fn dense_values(spec: &DenseSpec) -> Option<u64> {
    let features = spec.features as u64;
    let mut width = features.checked_mul(if spec.mask_input { 2 } else { 1 })?;
    let mut total = 0u64;
    let norm = |w: u64| if spec.batch_norm { 4 * w } else { 0 };
    for &h in &spec.hidden {
        total = total
            .checked_add(linear(width, h as u64)?)?
            .checked_add(norm(h as u64))?;
        width = h as u64;
    }
    let latent = spec.latent as u64;
    total = total.checked_add(linear(width, latent)?)?;
    if spec.variational {
        total = total.checked_add(linear(width, latent)?)?;
    }
    let mut width = latent;
    for &h in spec.hidden.iter().rev() {
        total = total
            .checked_add(linear(width, h as u64)?)?
            .checked_add(norm(h as u64))?;
        width = h as u64;
    }
    total.checked_add(linear(width, features)?)
}

/// Values in a [`crate::model::DenoiseNet`] of `spec`.
fn denoise_values(spec: &DenoiseSpec) -> Option<u64> {
    let ch = spec.channels as u64;
    unet_values(ch, spec.width, spec.levels)?.checked_add(conv(spec.width as u64, ch, 3)?)
}

/// Values in a [`crate::model::SegmentNet`] of `spec`.
fn segment_values(spec: &SegmentSpec) -> Option<u64> {
    let ch = 2 * spec.channels as u64;
    unet_values(ch, spec.width, spec.levels)?.checked_add(conv(spec.width as u64, 1, 3)?)
}

/// Values in the U-Net layers (`denoise::unet_layers`) reading `channels`, without their
/// output convolution.
fn unet_values(channels: u64, width: usize, levels: usize) -> Option<u64> {
    let width = |level: usize| (width as u64).checked_shl(level as u32);
    let block = |i: u64, o: u64| conv(i, o, 3)?.checked_add(conv(o, o, 3)?);
    let mut total = block(channels, width(0)?)?;
    for level in 1..=levels {
        let (above, here) = (width(level - 1)?, width(level)?);
        total = total.checked_add(block(above, here)?)?;
        total = total.checked_add(conv(here, above, 2)?)?;
        total = total.checked_add(conv(above, above, 3)?)?;
    }
    Some(total)
}

/// A discriminative head that fits the autoencoder `spec`: the image's channels, a usable
/// width, and levels that halve the image evenly.
fn check_head(head: &SegmentSpec, spec: &ConvSpec) -> Checked {
    length("head.channels", head.channels, spec.channels)?;
    within("head.width", head.width, 1, MAX_WIDTH)?;
    within("head.levels", head.levels, 1, 5)?;
    if !spec.image_size.is_multiple_of(1 << head.levels) {
        return fail(
            "head.levels",
            format!(
                "{} levels cannot halve the image size {} evenly",
                head.levels, spec.image_size
            ),
        );
    }
    Ok(())
}

/// Most cells along a side of a tiled model's position statistics (it writes at most
/// [`crate::task::detect::POSITION_CELLS`]).
const MAX_POSITION_CELLS: usize = 1024;

fn check_image_prep(prep: &ImagePrep, spec: &ConvSpec) -> Checked {
    length("prep.channels", prep.channels, spec.channels)?;
    length("prep.image_size", prep.image_size, spec.image_size)?;
    if let Some(t) = &prep.tiles {
        finite("prep.tiles.scale", t.scale)?;
        if !(t.scale > 0.0 && t.scale <= 1.0) {
            return fail("prep.tiles.scale", format!("{} is outside (0, 1]", t.scale));
        }
    }
    Ok(())
}

fn check_image_scoring(s: &ScoreSettings, spec: &ConvSpec) -> Checked {
    let side = spec.image_size as f32;
    finite("scoring.smoothing_sigma", s.smoothing_sigma)?;
    if !(0.0..=side).contains(&s.smoothing_sigma) {
        return fail(
            "scoring.smoothing_sigma",
            format!(
                "{} is outside 0 to the image size {side}",
                s.smoothing_sigma
            ),
        );
    }
    check_reduction("scoring.reduction", &s.reduction)?;
    positive("scoring.map_scale", s.map_scale)?;
    check_network_scoring("scoring", &s.network, spec)?;
    for (k, n) in s.ensemble.iter().enumerate() {
        check_network_scoring(&format!("scoring.ensemble[{k}]"), n, spec)?;
    }
    Ok(())
}

/// One image network's statistics (under `field`): a finite mean and a positive spread
/// for every pixel when maps are standardised, and a usable nearest-neighbour part.
fn check_network_scoring(field: &str, s: &NetworkScoring, spec: &ConvSpec) -> Checked {
    let f = |name: &str| format!("{field}.{name}");
    let pixels = spec.image_size * spec.image_size;
    if !(s.pixel_mean.is_empty() && s.pixel_std.is_empty()) {
        length(&f("pixel_mean"), s.pixel_mean.len(), pixels)?;
        length(&f("pixel_std"), s.pixel_std.len(), pixels)?;
        all_finite(&f("pixel_mean"), &s.pixel_mean)?;
        all_positive(&f("pixel_std"), &s.pixel_std)?;
    }
    if let Some(h) = &s.head {
        finite(&f("head.error_center"), h.error_center)?;
        finite(&f("head.head_center"), h.head_center)?;
        positive(&f("head.error_spread"), h.error_spread)?;
        positive(&f("head.head_spread"), h.head_spread)?;
    }
    if let Some(k) = &s.knn {
        within(&f("knn.codes"), k.codes, 1, usize::MAX)?;
        within(&f("knn.k"), k.k, 1, k.codes)?;
        finite(&f("knn.map_center"), k.map_center)?;
        finite(&f("knn.knn_center"), k.knn_center)?;
        positive(&f("knn.map_spread"), k.map_spread)?;
        positive(&f("knn.knn_spread"), k.knn_spread)?;
    }
    Ok(())
}

impl CheckMeta for ModelMeta {
    fn check(&self) -> Checked {
        kind_is(self.kind, self.task, (DataKind::Images, Task::Detect))?;
        check_conv(&self.spec)?;
        if let Some(head) = &self.head {
            check_head(head, &self.spec)?;
        }
        for (j, n) in self.scoring.networks().enumerate() {
            if n.head.is_some() != self.head.is_some() {
                return fail(
                    &format!("scoring network {j}'s head"),
                    "must be given exactly when the model has a head",
                );
            }
        }
        check_image_prep(&self.prep, &self.spec)?;
        check_image_scoring(&self.scoring, &self.spec)?;
        let joins: Vec<KnnJoin> = self
            .scoring
            .networks()
            .filter_map(|n| n.knn.as_ref().map(|k| k.join))
            .collect();
        if let Some(j) = joins.iter().position(|&j| j != joins[0]) {
            return fail(
                &format!("scoring network {j}'s knn.join"),
                "every network of a model joins its parts the same way",
            );
        }
        if let Some(c) = &self.training.latent_check
            && !c.kept
            && let Some(j) = self.scoring.networks().position(|n| n.knn.is_some())
        {
            return fail(
                &format!("scoring network {j}'s knn"),
                "training.latent_check dropped the nearest-neighbour part",
            );
        }
        let want = self.required_format_version();
        if self.format_version != want {
            return fail(
                "format_version",
                format!(
                    "{} does not match prep.tiles and knn.join (tiled models are version \
                     {TILED_FORMAT_VERSION}, those joining by log_sum_exp \
                     {KNN_JOIN_FORMAT_VERSION}, others {FORMAT_VERSION})",
                    self.format_version,
                ),
            );
        }
        if self.prep.tiles.is_some()
            && let Some(j) = self.scoring.networks().position(|n| n.knn.is_some())
        {
            return fail(
                &format!("scoring network {j}'s knn"),
                "a tiled model has no nearest-neighbour part",
            );
        }
        for (j, n) in self.scoring.networks().enumerate() {
            let Some(p) = &n.positions else { continue };
            let f = |name: &str| format!("scoring network {j}'s positions.{name}");
            if self.prep.tiles.is_none() {
                return fail(&f("width"), "only a tiled model has position statistics");
            }
            within(&f("width"), p.width, 1, MAX_POSITION_CELLS)?;
            within(&f("height"), p.height, 1, MAX_POSITION_CELLS)?;
            length(&f("mean"), p.mean.len(), p.width * p.height)?;
            length(&f("std"), p.std.len(), p.width * p.height)?;
            all_finite(&f("mean"), &p.mean)?;
            all_positive(&f("std"), &p.std)?;
        }
        length(
            "scoring.ensemble",
            self.scoring.ensemble.len(),
            self.calibration.members() - 1,
        )?;
        check_calibration(&self.calibration)?;
        check_training(&self.training)
    }

    fn weight_values(&self) -> Option<u64> {
        let head = match &self.head {
            Some(h) => segment_values(h)?,
            None => 0,
        };
        let network = conv_values(&self.spec)?.checked_add(head)?;
        self.scoring.networks().try_fold(0u64, |total, s| {
            let codes = match &s.knn {
                Some(k) => (k.codes as u64).checked_mul(self.spec.latent as u64)?,
                None => 0,
            };
            total.checked_add(network.checked_add(codes)?)
        })
    }
}

impl CheckMeta for DenoiseMeta {
    fn check(&self) -> Checked {
        kind_is(self.kind, self.task, (DataKind::Images, Task::Denoise))?;
        let s = &self.spec;
        if !(s.channels == 1 || s.channels == 3) {
            return fail("spec.channels", format!("{} must be 1 or 3", s.channels));
        }
        within("spec.levels", s.levels, 0, 8)?;
        within("spec.width", s.width, 1, MAX_WIDTH >> s.levels)?;
        within("spec.patch", s.patch, 2 * s.multiple(), MAX_IMAGE_SIZE)?;
        if !s.patch.is_multiple_of(s.multiple()) {
            return fail(
                "spec.patch",
                format!("{} is not a multiple of {}", s.patch, s.multiple()),
            );
        }
        if let Some(v) = &self.validation {
            non_negative("validation.psnr_noisy", v.psnr_noisy.abs())?;
            non_negative("validation.psnr_denoised", v.psnr_denoised.abs())?;
        }
        check_training(&self.training)
    }

    fn weight_values(&self) -> Option<u64> {
        denoise_values(&self.spec)
    }
}

fn check_table_prep(prep: &TablePrep, spec: &DenseSpec) -> Checked {
    length("prep.features", prep.features.len(), spec.features)?;
    let mut seen = HashSet::new();
    for (i, f) in prep.features.iter().enumerate() {
        if f.is_empty() {
            return fail(&format!("prep.features[{i}]"), "empty name");
        }
        if !seen.insert(f.as_str()) {
            return fail(
                &format!("prep.features[{i}]"),
                format!("'{f}' appears twice"),
            );
        }
    }
    if let Some(id) = &prep.id_column
        && (id.is_empty() || seen.contains(id.as_str()))
    {
        return fail(
            "prep.id_column",
            format!("'{id}' is empty or also a feature"),
        );
    }
    check_scaling("prep", &prep.scaling(), spec.features)
}

/// A standardisation (under `field`) of `features` columns: a finite centre and a positive
/// scale for each.
fn check_scaling(field: &str, s: &Scaling, features: usize) -> Checked {
    length(&format!("{field}.center"), s.center.len(), features)?;
    length(&format!("{field}.scale"), s.scale.len(), features)?;
    all_finite(&format!("{field}.center"), &s.center)?;
    all_positive(&format!("{field}.scale"), &s.scale)
}

impl CheckMeta for TableMeta {
    fn check(&self) -> Checked {
        kind_is(self.kind, self.task, (DataKind::Table, Task::Detect))?;
        check_dense(&self.spec)?;
        check_table_prep(&self.prep, &self.spec)?;
        length(
            "ensemble_scaling",
            self.ensemble_scaling.len(),
            self.calibration.members() - 1,
        )?;
        for (k, s) in self.ensemble_scaling.iter().enumerate() {
            check_scaling(&format!("ensemble_scaling[{k}]"), s, self.spec.features)?;
        }
        within(
            "scoring.impute_iterations",
            self.scoring.impute_iterations,
            0,
            MAX_IMPUTE_ITERATIONS,
        )?;
        finite("scoring.mask_rate", self.scoring.mask_rate)?;
        if !(0.0..1.0).contains(&self.scoring.mask_rate) {
            return fail(
                "scoring.mask_rate",
                format!("{} must be at least 0 and below 1", self.scoring.mask_rate),
            );
        }
        if self.scoring.score == crate::model::file::TableScore::Elbo && !self.spec.variational {
            return fail("scoring.score", "elbo needs a variational network");
        }
        check_calibration(&self.calibration)?;
        check_training(&self.training)
    }

    fn weight_values(&self) -> Option<u64> {
        dense_values(&self.spec)?.checked_mul(self.calibration.members() as u64)
    }
}

fn check_stft(field: &str, sample_rate: u32, n_fft: usize, hop: usize, context: usize) -> Checked {
    within(
        &format!("{field}.sample_rate"),
        sample_rate,
        *SAMPLE_RATES.start(),
        *SAMPLE_RATES.end(),
    )?;
    within(&format!("{field}.n_fft"), n_fft, 16, MAX_FFT)?;
    if !n_fft.is_power_of_two() {
        return fail(
            &format!("{field}.n_fft"),
            format!("{n_fft} is not a power of two"),
        );
    }
    within(&format!("{field}.hop"), hop, 1, n_fft)?;
    within(&format!("{field}.context"), context, 1, MAX_CONTEXT)
}

fn check_mel(mel: &MelSpec) -> Checked {
    within("features.mel.n_mels", mel.n_mels, 1, mel.n_fft / 2 + 1)?;
    let nyquist = mel.sample_rate as f32 / 2.0;
    finite("features.mel.fmin", mel.fmin)?;
    let fmax = mel.fmax.unwrap_or(nyquist);
    finite("features.mel.fmax", fmax)?;
    if !(0.0 <= mel.fmin && mel.fmin < fmax && fmax <= nyquist) {
        return fail(
            "features.mel",
            format!(
                "bands from {} to {fmax} Hz do not fit 0 to {nyquist} Hz",
                mel.fmin
            ),
        );
    }
    Ok(())
}

fn check_audio_scoring(s: &AudioScoring, bands: usize) -> Checked {
    check_reduction("scoring.reduction", &s.reduction)?;
    positive("scoring.map_scale", s.map_scale)?;
    if let Some(b) = &s.band_normalized {
        length(
            "scoring.band_normalized.band_error",
            b.band_error.len(),
            bands,
        )?;
        all_positive("scoring.band_normalized.band_error", &b.band_error)?;
        finite("scoring.band_normalized.plain_center", b.plain_center)?;
        finite(
            "scoring.band_normalized.normalized_center",
            b.normalized_center,
        )?;
        positive("scoring.band_normalized.plain_spread", b.plain_spread)?;
        positive(
            "scoring.band_normalized.normalized_spread",
            b.normalized_spread,
        )?;
    }
    Ok(())
}

impl CheckMeta for AudioMeta {
    fn check(&self) -> Checked {
        kind_is(self.kind, self.task, (DataKind::Audio, Task::Detect))?;
        let f = &self.features;
        check_stft(
            "features.mel",
            f.mel.sample_rate,
            f.mel.n_fft,
            f.mel.hop,
            f.context,
        )?;
        check_mel(&f.mel)?;
        check_dense(&self.spec)?;
        length(
            "spec.features",
            self.spec.features,
            f.mel.n_mels * f.context,
        )?;
        length("features.band_mean", f.band_mean.len(), f.mel.n_mels)?;
        length("features.band_std", f.band_std.len(), f.mel.n_mels)?;
        all_finite("features.band_mean", &f.band_mean)?;
        all_positive("features.band_std", &f.band_std)?;
        check_audio_scoring(&self.scoring, f.mel.n_mels)?;
        check_single(&self.calibration)?;
        check_calibration(&self.calibration)?;
        check_training(&self.training)
    }

    fn weight_values(&self) -> Option<u64> {
        dense_values(&self.spec)
    }
}

fn check_spectrum(f: &SpectrumFeatures, spec: &DenseSpec) -> Checked {
    check_stft("features", f.sample_rate, f.n_fft, f.hop, f.context)?;
    // As in training: a longer hop leaves samples under too thin a window to rebuild.
    within("features.hop", f.hop, 1, f.n_fft / 4)?;
    let bins = f.n_fft / 2 + 1;
    length("spec.features", spec.features, bins * f.context)?;
    length("features.bin_mean", f.bin_mean.len(), bins)?;
    length("features.bin_std", f.bin_std.len(), bins)?;
    all_finite("features.bin_mean", &f.bin_mean)?;
    all_positive("features.bin_std", &f.bin_std)
}

impl CheckMeta for AudioDenoiseMeta {
    fn check(&self) -> Checked {
        kind_is(self.kind, self.task, (DataKind::Audio, Task::Denoise))?;
        check_dense(&self.spec)?;
        check_spectrum(&self.features, &self.spec)?;
        check_training(&self.training)
    }

    fn weight_values(&self) -> Option<u64> {
        dense_values(&self.spec)
    }
}
