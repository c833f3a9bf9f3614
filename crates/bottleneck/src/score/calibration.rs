//! Thresholds without labelled anomalies: split-conformal p-values against held-out normal
//! scores, or PyOD's contamination quantile when the user knows the rate.

use serde::{Deserialize, Serialize};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
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
        let (threshold, effective_fpr) = match rule {
            ThresholdRule::Conformal { fpr } => {
                check_rate("fpr", fpr)?;
                // p(s) = (1 + #{c >= s}) / (n + 1) <= a  <=>  #{c >= s} <= m, m = floor(a(n+1)) - 1
                // <=> s > the (m+1)-th largest calibration score.
                let a = fpr.max(1.0 / (n as f64 + 1.0));
                let m = ((a * (n as f64 + 1.0)).floor() as usize).saturating_sub(1);
                let m = m.min(n - 1);
                (scores[n - 1 - m], a)
            }
            ThresholdRule::Contamination { contamination } => {
                check_rate("contamination", contamination)?;
                let k = ((1.0 - contamination) * n as f64).ceil() as usize;
                (scores[k.clamp(1, n) - 1], contamination)
            }
        };
        Ok(Self {
            scores,
            rule,
            threshold,
            effective_fpr,
        })
    }

    /// Conformal p-value of `score`: (1 + #calibration scores >= score) / (n + 1).
    /// A score that is not a number (the input overflowed the network) gets the smallest.
    pub fn p_value(&self, score: f32) -> f64 {
        if score.is_nan() {
            return 1.0 / (self.scores.len() + 1) as f64;
        }
        let below = self.scores.partition_point(|&c| c < score);
        let at_or_above = self.scores.len() - below;
        (1 + at_or_above) as f64 / (self.scores.len() + 1) as f64
    }

    /// Whether `score` is above the threshold; a score that is not a number is anomalous
    /// (nothing normal overflows the network).
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
    fn contamination_is_a_quantile() {
        let scores: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        let c =
            Calibration::fit(scores, ThresholdRule::Contamination { contamination: 0.1 }).unwrap();
        assert_eq!(c.threshold, 90.0);
        assert!(Calibration::fit(vec![1.0], ThresholdRule::Conformal { fpr: 1.5 }).is_err());
        assert!(Calibration::fit(vec![], ThresholdRule::Conformal { fpr: 0.1 }).is_err());
    }
}
