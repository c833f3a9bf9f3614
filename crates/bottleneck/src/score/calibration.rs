//! Thresholds without labelled anomalies: split-conformal p-values against held-out normal
//! scores, cross-conformal p-values against the out-of-fold scores of an ensemble, or
//! PyOD's contamination quantile when the user knows the rate.
//!
//! Cross-conformal (Vovk 2015; for anomaly detection Hennhöfer & Preisach 2024): the normal
//! samples are cut into K folds and network k is trained without fold k, so every sample
//! has an out-of-fold score. A new sample x is scored by every network, and its p-value is
//! `(1 + sum_k #{i in fold k: s_k(i) >= s_k(x)}) / (n + 1)`. Unlike split-conformal, whose
//! p-values are exactly valid (`P(p <= a) <= a` on normal data), this is valid up to a
//! factor: `P(p <= a) <= 2a` in the worst case (the jackknife+ / CV+ bound of Barber et
//! al. 2021), and close to `a` in practice (Vovk 2015; measured in bench/calibration.sh).

use serde::{Deserialize, Serialize};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::check::MAX_FOLDS;
use crate::progress::Progress;

/// How the threshold was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// Flag when the conformal p-value is at most `fpr` (bounds false alarms on normal data).
    Conformal { fpr: f64 },
    /// Flag the top `contamination` fraction of the calibration scores' distribution.
    Contamination { contamination: f64 },
}

/// Held-out normal scores and the threshold derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Scores of the held-out normal samples, ascending.
    pub scores: Vec<f32>,
    pub rule: ThresholdRule,
    /// A sample is anomalous when its score is strictly above this.
    pub threshold: f32,
    /// The false-alarm bound the threshold really gives: `fpr`, or the smallest p-value
    /// reachable with this many calibration scores when that is larger.
    pub effective_fpr: f64,
    /// Cross-conformal calibration: the out-of-fold scores of each network of the
    /// ensemble, each ascending (`scores` holds them all); empty for a single split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Vec<f32>>,
}

impl Calibration {
    /// Calibrates on held-out normal `scores` with the given rule. Fails on an empty set or a
    /// rate outside (0, 1).
    pub fn fit(mut scores: Vec<f32>, rule: ThresholdRule) -> Result<Self> {
        if scores.is_empty() {
            return Err(Error::Invalid(
                "no calibration samples: hold out at least one normal sample".into(),
            ));
        }
        if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
            return Err(Error::Invalid(format!(
                "calibration score {bad} is not finite; the model diverged"
            )));
        }
        scores.sort_by(f32::total_cmp);
        let n = scores.len();
        let effective_fpr = match rule {
            ThresholdRule::Conformal { fpr } => {
                check_rate("fpr", fpr)?;
                fpr.max(1.0 / (n as f64 + 1.0))
            }
            ThresholdRule::Contamination { contamination } => {
                check_rate("contamination", contamination)?;
                contamination
            }
        };
        // Flagged <=> #{c >= s} <= m <=> s > the (m+1)-th largest calibration score.
        let threshold = scores[n - 1 - flag_count(rule, effective_fpr, n)];
        Ok(Self {
            scores,
            rule,
            threshold,
            effective_fpr,
            folds: Vec::new(),
        })
    }

    /// Cross-conformal calibration on the out-of-fold scores of each network (`folds[k]`:
    /// the scores of the samples network k was not trained on). The threshold is the one
    /// the rule gives on all the scores together: the verdict of a sample every network
    /// scores alike. Fails as [`Calibration::fit`] does, or when a fold is empty.
    pub fn fit_folds(mut folds: Vec<Vec<f32>>, rule: ThresholdRule) -> Result<Self> {
        if folds.len() < 2 || folds.iter().any(Vec::is_empty) {
            return Err(Error::Invalid(
                "cross-conformal calibration needs at least 2 folds, none empty".into(),
            ));
        }
        let mut this = Self::fit(folds.concat(), rule)?;
        for fold in &mut folds {
            fold.sort_by(f32::total_cmp);
        }
        this.folds = folds;
        Ok(this)
    }

    /// Number of networks whose scores a sample's p-value needs: K for a cross-conformal
    /// ensemble, else 1.
    pub fn members(&self) -> usize {
        self.folds.len().max(1)
    }

    /// The most calibration scores at or above a sample's that still flag it (see
    /// [`flag_count`]).
    pub(crate) fn flag_count(&self) -> usize {
        flag_count(self.rule, self.effective_fpr, self.scores.len())
    }

    /// Calibration scores at or above a sample scored `members` (one score per network;
    /// see [`Calibration::members`]): per fold for an ensemble. `None` when a score is
    /// not a number.
    fn at_or_above(&self, members: &[f32]) -> Option<usize> {
        if members.iter().any(|s| s.is_nan()) {
            return None;
        }
        Some(if self.folds.is_empty() {
            count_at_or_above(&self.scores, members[0])
        } else {
            self.folds
                .iter()
                .zip(members)
                .map(|(fold, &s)| count_at_or_above(fold, s))
                .sum()
        })
    }

    /// Conformal p-value of a sample from each network's score (see
    /// [`Calibration::members`]): split-conformal for one network, cross-conformal for an
    /// ensemble. A score that is not a number gets the smallest.
    pub fn p_value_of(&self, members: &[f32]) -> f64 {
        let n = self.scores.len() as f64;
        match self.at_or_above(members) {
            Some(c) => (1 + c) as f64 / (n + 1.0),
            None => 1.0 / (n + 1.0),
        }
    }

    /// Whether a sample scored `members` by the networks is anomalous: its p-value is at
    /// most the effective rate (conformal rule) or its scores are in the top
    /// `contamination` share. A score that is not a number is anomalous.
    pub fn is_anomaly_of(&self, members: &[f32]) -> bool {
        self.at_or_above(members)
            .is_none_or(|c| c <= self.flag_count())
    }

    /// Conformal p-value of `score` against all the calibration scores:
    /// (1 + #calibration scores >= score) / (n + 1). A score that is not a number (the
    /// input overflowed the network) gets the smallest. For an ensemble use
    /// [`Calibration::p_value_of`].
    pub fn p_value(&self, score: f32) -> f64 {
        let n = self.scores.len();
        match score.is_nan() {
            true => 1.0 / (n + 1) as f64,
            false => (1 + count_at_or_above(&self.scores, score)) as f64 / (n + 1) as f64,
        }
    }

    /// Whether `score` is above the threshold; a score that is not a number is anomalous
    /// (nothing normal overflows the network). For an ensemble use
    /// [`Calibration::is_anomaly_of`].
    pub fn is_anomaly(&self, score: f32) -> bool {
        score > self.threshold || score.is_nan()
    }
}

impl Calibration {
    /// The warning to give when too few calibration samples were held out for the
    /// requested false-alarm rate (the conformal bound had to widen), or `None`. `what` names
    /// the samples (`images`, `rows`); `fraction` is the share held out.
    pub fn shortfall(&self, what: &str, fraction: f64) -> Option<String> {
        let ThresholdRule::Conformal { fpr } = self.rule else {
            return None;
        };
        if self.effective_fpr <= fpr {
            return None;
        }
        let n = self.scores.len();
        Some(format!(
            "only {n} calibration {what}: the smallest p-value is {:.4}, so {what} are flagged \
             at p <= {:.4} instead of the requested fpr {fpr}; add normal {what} (>= {} in all) for the \
             requested rate",
            1.0 / (n as f64 + 1.0),
            self.effective_fpr,
            ((1.0 / fpr - 1.0) / fraction).ceil()
        ))
    }
}

/// Of `n` calibration scores, the most that may be at or above a sample's score for the
/// sample to be flagged: flagged <=> `#{c >= s} <= m`. Conformal rule at effective rate
/// `a`: p(s) = (1 + #{c >= s}) / (n + 1) <= a <=> #{c >= s} <= floor(a(n + 1)) - 1.
/// Contamination rule: the scores above the (1 - contamination) quantile.
fn flag_count(rule: ThresholdRule, effective_fpr: f64, n: usize) -> usize {
    match rule {
        ThresholdRule::Conformal { .. } => {
            (((effective_fpr * (n as f64 + 1.0)).floor() as usize).saturating_sub(1)).min(n - 1)
        }
        ThresholdRule::Contamination { contamination } => {
            n - (((1.0 - contamination) * n as f64).ceil() as usize).clamp(1, n)
        }
    }
}

/// Number of ascending `scores` at or above `s`.
fn count_at_or_above(scores: &[f32], s: f32) -> usize {
    scores.len() - scores.partition_point(|&c| c < s)
}

/// Fails unless `v` is strictly between 0 and 1, naming the field.
pub(crate) fn check_rate(field: &'static str, v: f64) -> Result<()> {
    if v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(Error::param(
            field,
            format!("must be between 0 and 1, got {v}"),
        ))
    }
}

/// Networks of the default cross-conformal ensemble for tables (images: see
/// `task::detect::DEFAULT_IMAGE_FOLDS`). Measured in bench/calibration.sh (20
/// draws of Fashion-MNIST as a 784-column table): every K from 2 to 5 meets issue 17's
/// false-alarm target, but only 5 ranks at least as well as one network at 100 and 300
/// rows (AUROC 0.9007 and 0.9113 against one network's 0.9000 and 0.9105; K = 4 0.8986
/// and 0.9107, K = 2 0.8957 and 0.9085). Fewer networks train faster (K = 2 in less than
/// one network's time), at that cost in rank.
pub const DEFAULT_FOLDS: usize = 5;

/// Checks a `folds` setting before any work: 1 (one network on a single split) to
/// [`MAX_FOLDS`].
pub fn check_folds(folds: Option<usize>) -> Result<()> {
    match folds {
        Some(k) if !(1..=MAX_FOLDS).contains(&k) => Err(Error::param(
            "folds",
            format!("{k} must be from 1 (one network) to {MAX_FOLDS}"),
        )),
        _ => Ok(()),
    }
}

/// How many networks to train on `n` samples: `folds` when given, else `default_folds`
/// (at most `n`) up to `cross_conformal_up_to` samples and one above.
pub fn networks_for(
    n: usize,
    folds: Option<usize>,
    default_folds: usize,
    cross_conformal_up_to: usize,
) -> usize {
    folds.unwrap_or(match n <= cross_conformal_up_to {
        true => default_folds.min(n),
        false => 1,
    })
}

/// The calibration step every detector shares: the threshold rule and the share of the
/// normal samples held out for it, checked once; the seeded split; and the fit with its
/// warning when too few samples were held out for the rate asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationPlan {
    pub rule: ThresholdRule,
    /// Share of the normal samples held out of training to calibrate on.
    pub fraction: f64,
}

/// Which samples calibrate and which train, each in ascending order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub calibration: Vec<usize>,
    pub training: Vec<usize>,
}

impl CalibrationPlan {
    /// The plan for a target false-alarm rate `fpr`, or PyOD's `contamination` quantile
    /// when given, holding out `fraction` of the samples. Fails naming the field whose
    /// value is not strictly between 0 and 1.
    pub fn new(fpr: f64, contamination: Option<f64>, fraction: f64) -> Result<Self> {
        let rule = match contamination {
            Some(c) => {
                check_rate("contamination", c)?;
                ThresholdRule::Contamination { contamination: c }
            }
            None => {
                check_rate("fpr", fpr)?;
                ThresholdRule::Conformal { fpr }
            }
        };
        check_rate("calibration_fraction", fraction)?;
        Ok(Self { rule, fraction })
    }

    /// Splits `n` samples (at least 2) by a shuffle seeded from `seed`: `fraction` of them,
    /// rounded, at least one and leaving at least one, calibrate.
    pub fn split(&self, n: usize, seed: u64) -> Split {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xca1));
        let n_cal = ((n as f64 * self.fraction).round() as usize).clamp(1, n.max(2) - 1);
        let (cal, train) = order.split_at(n_cal.min(n));
        let (mut calibration, mut training) = (cal.to_vec(), train.to_vec());
        calibration.sort_unstable();
        training.sort_unstable();
        Split {
            calibration,
            training,
        }
    }

    /// Cuts `n` samples (at least `k`) into `k` folds by a shuffle seeded from `seed`, each
    /// in ascending order, their sizes differing by at most one.
    pub fn folds(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
        let k = k.max(1);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xf01d));
        let mut folds = vec![Vec::with_capacity(n.div_ceil(k)); k];
        for (rank, &i) in order.iter().enumerate() {
            folds[rank % k].push(i);
        }
        for fold in &mut folds {
            fold.sort_unstable();
        }
        folds
    }

    /// Each network's calibration and training samples for `k` networks over `n` samples
    /// (named `source`, counted as `what` in errors): one seeded split for `k = 1`, else
    /// `k` folds, network `f` calibrating on fold `f` and training on the others. Fails
    /// when there are fewer samples than folds.
    pub fn networks(
        &self,
        n: usize,
        k: usize,
        seed: u64,
        source: &str,
        what: &str,
    ) -> Result<Vec<Split>> {
        if k == 1 {
            return Ok(vec![self.split(n, seed)]);
        }
        if k == 0 || k > n {
            return Err(Error::param(
                "folds",
                format!("{k} needs at least {k} {what}; got {n} from {source}"),
            ));
        }
        let folds = Self::folds(n, k, seed);
        Ok((0..k)
            .map(|f| {
                let mut training: Vec<usize> = (0..k)
                    .filter(|&g| g != f)
                    .flat_map(|g| folds[g].iter().copied())
                    .collect();
                training.sort_unstable();
                Split {
                    calibration: folds[f].clone(),
                    training,
                }
            })
            .collect())
    }

    /// Cross-conformal calibration on the out-of-fold scores of each network; when all
    /// of them together are too few for the rate asked, says so to `progress`, naming the
    /// samples as `what`.
    pub fn calibrate_folds(
        &self,
        folds: Vec<Vec<f32>>,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<Calibration> {
        let calibration = Calibration::fit_folds(folds, self.rule)?;
        if let Some(w) = calibration.shortfall(what, 1.0) {
            progress.warn(&w);
        }
        Ok(calibration)
    }

    /// A calibration on one score, standing in until the held-out scores are known.
    pub fn placeholder(&self) -> Calibration {
        Calibration::fit(vec![0.0], self.rule).expect("a checked rule calibrates one score")
    }

    /// Calibrates on the held-out normal `scores`; when they are too few for the rate asked,
    /// says so to `progress`, naming the samples as `what` (`images`, `rows`).
    pub fn calibrate(
        &self,
        scores: Vec<f32>,
        what: &str,
        progress: &dyn Progress,
    ) -> Result<Calibration> {
        let calibration = Calibration::fit(scores, self.rule)?;
        if let Some(w) = calibration.shortfall(what, self.fraction) {
            progress.warn(&w);
        }
        Ok(calibration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_values_and_threshold_agree() {
        // 99 calibration scores 1..=99: p(s) = (1 + #{c >= s}) / 100.
        let scores: Vec<f32> = (1..=99).map(|v| v as f32).collect();
        let c = Calibration::fit(scores, ThresholdRule::Conformal { fpr: 0.05 }).unwrap();
        assert_eq!(c.p_value(100.0), 0.01);
        assert_eq!(c.p_value(99.0), 0.02);
        assert_eq!(c.p_value(0.0), 1.0);
        // p <= 0.05 <=> at most 4 calibration scores >= s <=> s > 95.
        assert_eq!(c.threshold, 95.0);
        for s in [94.5f32, 95.0, 95.5, 96.0, 120.0, f32::INFINITY, f32::NAN] {
            assert_eq!(c.is_anomaly(s), c.p_value(s) <= 0.05, "score {s}");
        }
        assert!(c.is_anomaly(f32::NAN));
        assert_eq!(c.p_value(f32::NAN), 0.01);
    }

    #[test]
    fn too_few_calibration_scores_widen_the_bound_honestly() {
        let c =
            Calibration::fit(vec![1.0, 2.0, 3.0], ThresholdRule::Conformal { fpr: 0.01 }).unwrap();
        assert_eq!(c.effective_fpr, 0.25);
        assert_eq!(c.threshold, 3.0);
        let warning = c.shortfall("rows", 0.15).unwrap();
        assert!(warning.starts_with("only 3 calibration rows"), "{warning}");
        assert!(warning.contains(">= 660 in all"), "{warning}");
        assert!(c.is_anomaly(3.5) && !c.is_anomaly(3.0));
    }

    #[test]
    fn cross_conformal_counts_each_fold_against_its_own_network() {
        // Fold 0's samples were scored 1, 3, 5 by network 0; fold 1's 2, 4 by network 1.
        let rule = ThresholdRule::Conformal { fpr: 0.2 };
        let c = Calibration::fit_folds(vec![vec![5.0, 1.0, 3.0], vec![4.0, 2.0]], rule).unwrap();
        assert_eq!(c.scores, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(c.folds, [vec![1.0, 3.0, 5.0], vec![2.0, 4.0]]);
        assert_eq!(c.members(), 2);
        // Network 0 scores the sample 4 (fold 0 has 5 above), network 1 scores it 3 (fold
        // 1 has 4 above): p = (1 + 1 + 1) / 6. The merged scores would give (1 + 2) / 6
        // for either score alone: the count is per fold.
        assert_eq!(c.p_value_of(&[4.0, 3.0]), 0.5);
        assert_eq!(c.p_value_of(&[4.0, 4.0]), 0.5);
        assert_eq!(c.p_value_of(&[3.0, 4.0]), 4.0 / 6.0);
        // p <= 0.2 <=> no calibration score at or above (m = floor(0.2 * 6) - 1 = 0).
        assert_eq!(c.effective_fpr, 0.2);
        assert!(c.is_anomaly_of(&[6.0, 5.0]) && c.p_value_of(&[6.0, 5.0]) == 1.0 / 6.0);
        assert!(!c.is_anomaly_of(&[6.0, 4.0]));
        // Networks that agree give the verdict of the merged threshold.
        assert_eq!(c.threshold, 5.0);
        for s in [4.5f32, 5.0, 5.5] {
            assert_eq!(c.is_anomaly_of(&[s, s]), c.is_anomaly(s), "score {s}");
        }
        // A network that overflows makes the sample anomalous, with the smallest p-value.
        assert!(c.is_anomaly_of(&[0.0, f32::NAN]));
        assert_eq!(c.p_value_of(&[0.0, f32::NAN]), 1.0 / 6.0);
        // The contamination rule flags the top share the same way.
        let q = Calibration::fit_folds(
            vec![
                (1..=50).map(|v| v as f32).collect(),
                (51..=100).map(|v| v as f32).collect(),
            ],
            ThresholdRule::Contamination { contamination: 0.1 },
        )
        .unwrap();
        assert_eq!(q.threshold, 90.0);
        assert!(q.is_anomaly_of(&[51.0, 100.5]) && !q.is_anomaly_of(&[50.5, 89.5]));
        for s in [89.5f32, 90.0, 90.5, 91.0] {
            assert_eq!(q.is_anomaly_of(&[s, s]), q.is_anomaly(s), "score {s}");
        }
        assert!(Calibration::fit_folds(vec![vec![1.0]], rule).is_err());
        assert!(Calibration::fit_folds(vec![vec![1.0], vec![]], rule).is_err());
    }

    #[test]
    fn folds_cover_every_sample_once() {
        let folds = CalibrationPlan::folds(23, 5, 7);
        assert_eq!(
            folds.iter().map(Vec::len).collect::<Vec<_>>(),
            [5, 5, 5, 4, 4]
        );
        let mut all = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert_eq!(folds, CalibrationPlan::folds(23, 5, 7));
        assert_ne!(folds, CalibrationPlan::folds(23, 5, 8));
    }

    #[test]
    fn contamination_is_a_quantile() {
        let scores: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        let c =
            Calibration::fit(scores, ThresholdRule::Contamination { contamination: 0.1 }).unwrap();
        assert_eq!(c.threshold, 90.0);
        assert!(Calibration::fit(vec![1.0], ThresholdRule::Conformal { fpr: 1.5 }).is_err());
        assert!(Calibration::fit(vec![], ThresholdRule::Conformal { fpr: 0.1 }).is_err());
    }
}
