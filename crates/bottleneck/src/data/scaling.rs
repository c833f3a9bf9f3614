//! Standardisation of table columns, fitted on the training rows and stored in the model
//! file. Robust to outliers in the training data: centre at the median, scale by the
//! interquartile range (as a normal standard deviation), so a few wild readings do not
//! squash every other value.

use serde::{Deserialize, Serialize};

/// Column names and per-column centre and scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TablePrep {
    pub features: Vec<String>,
    /// The column naming each row in outputs, if the training table had one.
    pub id_column: Option<String>,
    pub center: Vec<f32>,
    pub scale: Vec<f32>,
}

/// The `q`-quantile of sorted `v` (linear interpolation).
fn quantile(v: &[f32], q: f64) -> f32 {
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = (pos - lo as f64) as f32;
    v[lo] * (1.0 - t) + v[hi] * t
}

impl TablePrep {
    /// Fits centre and scale of each of the `features` columns of `values` (`rows x
    /// features`, NaN missing) on the observed cells. The scale is IQR / 1.349; where the
    /// IQR is 0 (a mostly constant column) the standard deviation; where that is 0 too, 1.
    /// A column with no observed cell gets centre 0 and scale 1.
    pub fn fit(features: Vec<String>, id_column: Option<String>, values: &[f32]) -> Self {
        let d = features.len();
        let mut center = vec![0.0; d];
        let mut scale = vec![1.0; d];
        let mut column = Vec::with_capacity(values.len() / d.max(1));
        for j in 0..d {
            column.clear();
            column.extend(values.iter().skip(j).step_by(d).filter(|v| !v.is_nan()));
            if column.is_empty() {
                continue;
            }
            column.sort_by(f32::total_cmp);
            center[j] = quantile(&column, 0.5);
            let iqr = quantile(&column, 0.75) - quantile(&column, 0.25);
            scale[j] = if iqr > 0.0 {
                iqr / 1.349
            } else {
                let n = column.len() as f64;
                let mean = column.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = column
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / n;
                if var > 0.0 { var.sqrt() as f32 } else { 1.0 }
            };
        }
        Self {
            features,
            id_column,
            center,
            scale,
        }
    }

    /// Standardises `values` (`rows x features`) in place; NaN stays NaN.
    pub fn standardize(&self, values: &mut [f32]) {
        let d = self.features.len();
        for row in values.chunks_mut(d) {
            for ((v, c), s) in row.iter_mut().zip(&self.center).zip(&self.scale) {
                *v = (*v - c) / s;
            }
        }
    }

    /// Value of feature `j` in the table's own units from its standardised value `z`.
    pub fn unstandardize(&self, j: usize, z: f32) -> f32 {
        z * self.scale[j] + self.center[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_do_not_move_the_scale_and_constant_columns_survive() {
        // Column a: 1..=8 plus one wild reading; b: constant; c: never observed.
        let mut values = Vec::new();
        for i in 1..=8 {
            values.extend([i as f32, 5.0, f32::NAN]);
        }
        values.extend([1e6, 5.0, f32::NAN]);
        let names = vec!["a".into(), "b".into(), "c".into()];
        let p = TablePrep::fit(names, None, &values);
        assert_eq!(p.center, vec![5.0, 5.0, 0.0]);
        assert!((p.scale[0] - 4.0 / 1.349).abs() < 1e-5, "{:?}", p.scale);
        assert_eq!(&p.scale[1..], &[1.0, 1.0]);
        let mut row = vec![9.0, 5.0, f32::NAN];
        p.standardize(&mut row);
        assert!((row[0] - 1.349).abs() < 1e-5 && row[1] == 0.0 && row[2].is_nan());
        assert!((p.unstandardize(0, row[0]) - 9.0).abs() < 1e-4);
    }
}
