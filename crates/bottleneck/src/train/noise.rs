//! Corruption for training denoisers: the noise models users name on the command line
//! (`gaussian:0.1`, `poisson:30`, `salt-pepper:0.05`, `speckle:0.2`, `mixed`), applied to
//! clean values in `[0, 1]` and clipped back into that range as a real sensor would.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_distr::{Distribution, Normal, Poisson};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Kinds of noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// Additive white Gaussian noise of standard deviation `level`.
    Gaussian,
    /// Shot noise: counts drawn from a Poisson law with `level` photons at full white.
    Poisson,
    /// A share `level` of pixels set to black or white.
    SaltPepper,
    /// Multiplicative noise: `x + x * n`, `n` Gaussian with standard deviation `level`.
    Speckle,
    /// Each patch gets one of the four above, at a level drawn from a wide range.
    Mixed,
}

/// A noise model: a kind and the range its level is drawn from for each patch (one value
/// when `low == high`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NoiseModel {
    pub kind: NoiseKind,
    pub low: f32,
    pub high: f32,
}

impl FromStr for NoiseModel {
    type Err = Error;

    /// Parses `KIND:LEVEL` or `KIND:LOW-HIGH` (or `mixed`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::param(
                "noise",
                format!(
                    "{s}: {why}; use gaussian:SIGMA, poisson:PEAK, salt-pepper:RATE, \
                     speckle:SIGMA (a level or a range LOW-HIGH) or mixed"
                ),
            )
        };
        let (name, level) = s.split_once(':').unwrap_or((s, ""));
        let kind = match name.trim().to_ascii_lowercase().as_str() {
            "gaussian" => NoiseKind::Gaussian,
            "poisson" => NoiseKind::Poisson,
            "salt-pepper" | "salt_pepper" | "s&p" => NoiseKind::SaltPepper,
            "speckle" => NoiseKind::Speckle,
            "mixed" => {
                if !level.is_empty() {
                    return Err(bad("mixed takes no level"));
                }
                return Ok(Self {
                    kind: NoiseKind::Mixed,
                    low: 0.0,
                    high: 0.0,
                });
            }
            _ => return Err(bad("unknown noise")),
        };
        if level.is_empty() {
            return Err(bad("missing level"));
        }
        let parse = |v: &str| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| bad("the level must be a positive number"))
        };
        // A plain number first, so that `5e-2` is a level and not a range.
        let (low, high) = match (level.trim().parse::<f32>(), level.split_once('-')) {
            (Ok(_), _) | (Err(_), None) => {
                let v = parse(level)?;
                (v, v)
            }
            (Err(_), Some((a, b))) => (parse(a)?, parse(b)?),
        };
        if low > high {
            return Err(bad("the range must go from low to high"));
        }
        if kind == NoiseKind::SaltPepper && high > 1.0 {
            return Err(bad(
                "a salt-and-pepper rate is a share of pixels, at most 1",
            ));
        }
        Ok(Self { kind, low, high })
    }
}

impl fmt::Display for NoiseModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            NoiseKind::Gaussian => "gaussian",
            NoiseKind::Poisson => "poisson",
            NoiseKind::SaltPepper => "salt-pepper",
            NoiseKind::Speckle => "speckle",
            NoiseKind::Mixed => return write!(f, "mixed"),
        };
        if self.low == self.high {
            write!(f, "{name}:{}", self.low)
        } else {
            write!(f, "{name}:{}-{}", self.low, self.high)
        }
    }
}

impl NoiseModel {
    /// Corrupts `values` (one patch, in `[0, 1]`) in place with a level drawn for this
    /// patch.
    pub fn apply(&self, values: &mut [f32], rng: &mut impl Rng) {
        let (kind, level) = match self.kind {
            NoiseKind::Mixed => match rng.random_range(0..4) {
                0 => (NoiseKind::Gaussian, rng.random_range(0.01..0.3)),
                // Log-uniform peak: from very dark (3 photons) to nearly clean (300).
                1 => (
                    NoiseKind::Poisson,
                    3.0f32 * 100f32.powf(rng.random::<f32>()),
                ),
                2 => (NoiseKind::SaltPepper, rng.random_range(0.005..0.15)),
                _ => (NoiseKind::Speckle, rng.random_range(0.05..0.4)),
            },
            kind if self.low < self.high => (kind, rng.random_range(self.low..self.high)),
            kind => (kind, self.low),
        };
        match kind {
            NoiseKind::Gaussian => {
                let n = Normal::new(0.0f32, level).expect("positive sigma");
                for v in values.iter_mut() {
                    *v = (*v + n.sample(rng)).clamp(0.0, 1.0);
                }
            }
            NoiseKind::Speckle => {
                let n = Normal::new(0.0f32, level).expect("positive sigma");
                for v in values.iter_mut() {
                    *v = (*v + *v * n.sample(rng)).clamp(0.0, 1.0);
                }
            }
            NoiseKind::Poisson => {
                for v in values.iter_mut() {
                    let lambda = (*v * level) as f64;
                    let count = if lambda > 0.0 {
                        Poisson::new(lambda).map(|p| p.sample(rng)).unwrap_or(0.0)
                    } else {
                        0.0
                    };
                    *v = (count as f32 / level).clamp(0.0, 1.0);
                }
            }
            NoiseKind::SaltPepper => {
                for v in values.iter_mut() {
                    if rng.random::<f32>() < level {
                        *v = if rng.random::<bool>() { 1.0 } else { 0.0 };
                    }
                }
            }
            NoiseKind::Mixed => unreachable!("mixed picks a concrete kind above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn spread(model: &str, clean: f32) -> (f32, f32) {
        let m: NoiseModel = model.parse().unwrap();
        let mut v = vec![clean; 20_000];
        m.apply(&mut v, &mut ChaCha8Rng::seed_from_u64(1));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        (mean, var.sqrt())
    }

    #[test]
    fn levels_mean_what_they_say() {
        let (mean, sd) = spread("gaussian:0.1", 0.5);
        assert!(
            (mean - 0.5).abs() < 0.005 && (sd - 0.1).abs() < 0.005,
            "{mean} {sd}"
        );
        // Poisson at peak 20 on 0.5: 10 photons, sd sqrt(10)/20.
        let (mean, sd) = spread("poisson:20", 0.5);
        assert!(
            (mean - 0.5).abs() < 0.01 && (sd - 0.158).abs() < 0.01,
            "{mean} {sd}"
        );
        let (_, sd) = spread("speckle:0.2", 0.5);
        assert!((sd - 0.1).abs() < 0.005, "{sd}");
        let m: NoiseModel = "salt-pepper:0.1".parse().unwrap();
        let mut v = vec![0.5f32; 20_000];
        m.apply(&mut v, &mut ChaCha8Rng::seed_from_u64(1));
        let hit = v.iter().filter(|x| **x != 0.5).count() as f32 / v.len() as f32;
        assert!((hit - 0.1).abs() < 0.01, "{hit}");
    }

    #[test]
    fn names_round_trip_and_bad_ones_say_why() {
        for s in [
            "gaussian:0.1",
            "poisson:30",
            "salt-pepper:0.05",
            "speckle:0.1-0.3",
            "mixed",
        ] {
            assert_eq!(s.parse::<NoiseModel>().unwrap().to_string(), s);
        }
        for s in [
            "gaussian",
            "gaussian:-1",
            "blur:2",
            "salt-pepper:2",
            "gaussian:0.3-0.1",
        ] {
            let e = s.parse::<NoiseModel>().unwrap_err().to_string();
            assert!(e.contains(s), "{e}");
        }
    }
}
