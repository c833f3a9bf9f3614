//! What turns a reconstruction into a score, as ONNX nodes: error maps (squared error or
//! 1 - SSIM), Gaussian smoothing, reductions, the latent nearest-neighbour distance, the
//! conformal p-value and the verdict, and the stacked frames of audio models. Each mirrors
//! a function of `score/` or `task/` named in its doc comment.

use burn::prelude::*;

use super::graph::{Attr, Elem, Graph, f32_tensor};
use crate::model::file::KnnJoin;
use crate::score::{Calibration, Loss, Reduction, maps};

/// Side of the SSIM window (as [`maps::ssim_map`]).
const SSIM_WINDOW: i64 = 7;

/// The error map scoring uses ([`maps::error_maps`]) of `x` against `y`, both
/// `[batch, channels, size, size]`: `[batch, 1, size, size]` in float64, as scoring keeps
/// it until the map is standardised.
pub fn error_map(g: &mut Graph, x: &str, y: &str, loss: Loss, size: usize) -> String {
    match loss {
        Loss::Mse => {
            let d = g.bin("Sub", y, x);
            let sq = g.bin("Mul", &d, &d);
            let mean = g.reduce("ReduceMean", &sq, &[1], true);
            g.cast(&mean, Elem::F64)
        }
        Loss::Ssim => {
            let x64 = g.cast(x, Elem::F64);
            let y64 = g.cast(y, Elem::F64);
            let s = ssim(g, &x64, &y64, size);
            let one = g.f64_scalar(1.0);
            let e = g.bin("Sub", &one, &s);
            g.reduce("ReduceMean", &e, &[1], true)
        }
    }
}

/// The mean over the SSIM window around each pixel of float64 planes `[b, c, size, size]`,
/// the window clipped at the borders, as [`maps::ssim_error_plane`]: along each axis a
/// prefix sum, the window's sum as the difference of two of its entries, divided by the
/// window's length (AveragePool has no float64 kernel in onnxruntime).
fn box_mean(g: &mut Graph, x: &str, size: usize) -> String {
    let r = (SSIM_WINDOW / 2) as usize;
    let hi: Vec<i64> = (0..size).map(|i| (i + r + 1).min(size) as i64).collect();
    let lo: Vec<i64> = (0..size).map(|i| i.saturating_sub(r) as i64).collect();
    let len: Vec<f64> = hi.iter().zip(&lo).map(|(h, l)| (h - l) as f64).collect();
    let mut v = x.to_string();
    for axis in [3i64, 2] {
        let mut pads = vec![0i64; 8];
        pads[axis as usize] = 1;
        let pads = g.i64s("pads", &pads);
        let padded = g.op("Pad", &[&v, &pads], vec![]);
        let axis_t = g.i64_scalar(axis);
        let prefix = g.op("CumSum", &[&padded, &axis_t], vec![]);
        let hi_idx = g.i64s("window_end", &hi);
        let lo_idx = g.i64s("window_start", &lo);
        let at = |g: &mut Graph, idx: &str| {
            g.op("Gather", &[&prefix, idx], vec![("axis", Attr::Int(axis))])
        };
        let upper = at(g, &hi_idx);
        let lower = at(g, &lo_idx);
        let sum = g.bin("Sub", &upper, &lower);
        let mut shape = vec![1usize; 4];
        shape[axis as usize] = size;
        let len = g.f64s("window_len", &shape, &len);
        v = g.bin("Div", &sum, &len);
    }
    v
}

/// Local SSIM per pixel and channel of float64 planes, as [`maps::ssim_error_plane`].
fn ssim(g: &mut Graph, x: &str, y: &str, size: usize) -> String {
    let mu_x = box_mean(g, x, size);
    let mu_y = box_mean(g, y, size);
    let moment = |g: &mut Graph, a: &str, b: &str, mu_a: &str, mu_b: &str| {
        let ab = g.bin("Mul", a, b);
        let mean_ab = box_mean(g, &ab, size);
        let mm = g.bin("Mul", mu_a, mu_b);
        g.bin("Sub", &mean_ab, &mm)
    };
    let sxx = moment(g, x, x, &mu_x, &mu_x);
    let syy = moment(g, y, y, &mu_y, &mu_y);
    let sxy = moment(g, x, y, &mu_x, &mu_y);
    let (c1, c2) = (g.f64_scalar(0.01 * 0.01), g.f64_scalar(0.03 * 0.03));
    let two = g.f64_scalar(2.0);
    let mxy = g.bin("Mul", &mu_x, &mu_y);
    let mxy2 = g.bin("Mul", &two, &mxy);
    let a = g.bin("Add", &mxy2, &c1);
    let sxy2 = g.bin("Mul", &two, &sxy);
    let b = g.bin("Add", &sxy2, &c2);
    let num = g.bin("Mul", &a, &b);
    let mxx = g.bin("Mul", &mu_x, &mu_x);
    let myy = g.bin("Mul", &mu_y, &mu_y);
    let m2 = g.bin("Add", &mxx, &myy);
    let c = g.bin("Add", &m2, &c1);
    let v = g.bin("Add", &sxx, &syy);
    let d = g.bin("Add", &v, &c2);
    let den = g.bin("Mul", &c, &d);
    g.bin("Div", &num, &den)
}

/// [`maps::smooth`] of float64 maps `[batch, 1, size, size]`: a separable Gaussian, rows
/// then columns, edges clamped, each pass a product with a banded matrix that folds the
/// clamping in (onnxruntime has no float64 convolution). `sigma <= 0` leaves the maps as
/// they are.
pub fn smooth(g: &mut Graph, map: &str, sigma: f32, size: usize) -> String {
    if sigma <= 0.0 {
        return map.to_string();
    }
    let k = maps::gaussian_kernel(sigma);
    let r = (k.len() / 2) as isize;
    // blur[from * size + to]: the weight of pixel `from` in the blurred pixel `to`.
    let mut blur = vec![0f64; size * size];
    for to in 0..size {
        for (i, &w) in k.iter().enumerate() {
            let from = (to as isize + i as isize - r).clamp(0, size as isize - 1) as usize;
            blur[from * size + to] += w as f64;
        }
    }
    let mut transposed = vec![0f64; size * size];
    for a in 0..size {
        for b in 0..size {
            transposed[b * size + a] = blur[a * size + b];
        }
    }
    let along_rows = g.f64s("gaussian_rows", &[size, size], &blur);
    let along_columns = g.f64s("gaussian_columns", &[size, size], &transposed);
    let rows = g.bin("MatMul", map, &along_rows);
    g.bin("MatMul", &along_columns, &rows)
}

/// [`Reduction::apply`] along axis 1 of `v` `[rows, len]`: `[rows]`. `len` is the fixed
/// length, or `None` when it is only known when the graph runs (audio frames).
pub fn reduce(g: &mut Graph, v: &str, reduction: Reduction, len: Option<usize>) -> String {
    match reduction {
        Reduction::Mean => g.reduce("ReduceMean", v, &[1], false),
        Reduction::Max => g.reduce("ReduceMax", v, &[1], false),
        Reduction::TopK { fraction } => {
            let k = match len {
                Some(len) => g.i64s("k", &[Reduction::top_count(len, fraction) as i64]),
                None => {
                    let n = g.op(
                        "Shape",
                        &[v],
                        vec![("start", Attr::Int(1)), ("end", Attr::Int(2))],
                    );
                    let nf = g.cast(&n, Elem::F32);
                    let scaled = g.bin_scalar("Mul", &nf, fraction);
                    let up = g.op("Ceil", &[&scaled], vec![]);
                    let k = g.cast(&up, Elem::I64);
                    let one = g.i64s("one", &[1]);
                    let k = g.bin("Max", &k, &one);
                    g.bin("Min", &k, &n)
                }
            };
            let top = g.op_n(
                "TopK",
                &[v, &k],
                vec![("axis", Attr::Int(1)), ("largest", Attr::Int(1))],
                2,
            );
            g.reduce("ReduceMean", &top[0], &[1], false)
        }
    }
}

/// The mean distance from each code `[batch, latent]` to its `k` nearest training codes,
/// as the detector's `knn_distances`: differences to every training code, squared and
/// summed, square-rooted, the `k` smallest averaged.
pub fn knn(g: &mut Graph, code: &str, train_codes: &Tensor<2>, k: usize) -> String {
    let [m, latent] = train_codes.dims();
    let values: Vec<f32> = train_codes
        .clone()
        .into_data()
        .try_into_vec::<f32>()
        .expect("float32 codes");
    let codes = g.f32s("train_codes", &[1, m, latent], &values);
    let axes = g.i64s("axes", &[1]);
    let query = g.op("Unsqueeze", &[code, &axes], vec![]);
    let diff = g.bin("Sub", &query, &codes);
    let sq = g.bin("Mul", &diff, &diff);
    let d2 = g.reduce_sum(&sq, &[2], false);
    let d = g.op("Sqrt", &[&d2], vec![]);
    let k = k.min(m - 1).max(1);
    let k = g.i64s("k", &[k as i64]);
    let nearest = g.op_n(
        "TopK",
        &[&d, &k],
        vec![("axis", Attr::Int(1)), ("largest", Attr::Int(0))],
        2,
    );
    g.reduce("ReduceMean", &nearest[0], &[1], false)
}

/// [`KnnJoin::of`] of standardised parts `map` and `knn`, written the same way: the larger
/// part plus `softplus(-|map - knn|)` for a log-sum-exp.
pub fn join(g: &mut Graph, map: &str, knn: &str, how: KnnJoin) -> String {
    let larger = g.bin("Max", map, knn);
    match how {
        KnnJoin::Max => larger,
        KnnJoin::LogSumExp => {
            let diff = g.bin("Sub", map, knn);
            let apart = g.op("Abs", &[&diff], vec![]);
            let neg = g.op("Neg", &[&apart], vec![]);
            let lift = g.op("Softplus", &[&neg], vec![]);
            g.bin("Add", &larger, &lift)
        }
    }
}

/// `(value - center) / spread`.
pub fn standardize(g: &mut Graph, v: &str, center: f32, spread: f32) -> String {
    let shifted = g.bin_scalar("Sub", v, center);
    g.bin_scalar("Div", &shifted, spread)
}

/// [`Calibration::p_value_of`] (float64, exact) and [`Calibration::is_anomaly_of`] of
/// samples scored `members` (each network's scores `[batch]`: one, or one per fold of a
/// cross-conformal ensemble), from the calibration scores stored in the graph.
pub fn calibrate(g: &mut Graph, members: &[String], cal: &Calibration) -> (String, String) {
    let n = cal.scores.len();
    let folds: Vec<&[f32]> = match cal.folds.is_empty() {
        true => vec![&cal.scores],
        false => cal.folds.iter().map(Vec::as_slice).collect(),
    };
    let axes = g.i64s("axes", &[1]);
    let mut counts = Vec::with_capacity(folds.len());
    let mut nans = Vec::with_capacity(folds.len());
    for (fold, score) in folds.iter().zip(members) {
        let scores = g.f32s("calibration_scores", &[1, fold.len()], fold);
        let column = g.op("Unsqueeze", &[score, &axes], vec![]);
        let at_or_above = g.bin("GreaterOrEqual", &scores, &column);
        let ones = g.cast(&at_or_above, Elem::F64);
        counts.push(g.reduce_sum(&ones, &[1], false));
        nans.push(g.op("IsNaN", &[score], vec![]));
    }
    let (count, nan) = match folds.len() {
        1 => (counts.remove(0), nans.remove(0)),
        _ => {
            let refs: Vec<&str> = counts.iter().map(String::as_str).collect();
            let count = g.op("Sum", &refs, vec![]);
            let mut nan = nans[0].clone();
            for other in &nans[1..] {
                nan = g.bin("Or", &nan, other);
            }
            (count, nan)
        }
    };
    let one = g.f64_scalar(1.0);
    let plus_one = g.bin("Add", &count, &one);
    let total = g.f64_scalar((n + 1) as f64);
    let p = g.bin("Div", &plus_one, &total);
    // A network's score that is not a number counts no calibration score at or above it:
    // with one network that is already the smallest p-value; with more, make it so.
    let smallest = g.f64_scalar(1.0 / (n + 1) as f64);
    let p = match folds.len() {
        1 => p,
        _ => g.op("Where", &[&nan, &smallest, &p], vec![]),
    };
    let most = g.f64_scalar(cal.flag_count() as f64);
    let flagged = g.bin("LessOrEqual", &count, &most);
    let anomaly = g.bin("Or", &flagged, &nan);
    (p, anomaly)
}

/// The stacked inputs of an audio model: rows `[t, width]` become `[t - context + 1,
/// context * width]`, row `s` holding rows `s .. s + context` side by side.
pub fn windows(g: &mut Graph, x: &str, context: usize) -> String {
    if context == 1 {
        return x.to_string();
    }
    let axes = g.i64s("axes", &[0]);
    let parts: Vec<String> = (0..context)
        .map(|j| {
            let start = g.i64s("start", &[j as i64]);
            // Negative ends count from the end: the last window ends at the last row.
            let end = if j + 1 == context {
                i64::MAX
            } else {
                j as i64 + 1 - context as i64
            };
            let end = g.i64s("end", &[end]);
            g.op("Slice", &[x, &start, &end, &axes], vec![])
        })
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    g.op("Concat", &refs, vec![("axis", Attr::Int(1))])
}

/// The inverse of [`windows`] for per-value results: `v` `[n, context * width]` becomes
/// `[n + context - 1, width]`, each row the mean of the values that the inputs covering it
/// gave for it.
pub fn overlap_average(g: &mut Graph, v: &str, context: usize, width: usize) -> String {
    let stacked = g.reshape(v, &[-1, context as i64, width as i64]);
    let n = g.op(
        "Shape",
        &[v],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
    );
    let ones = g.op(
        "ConstantOfShape",
        &[&n],
        vec![(
            "value",
            Attr::Tensor(Box::new(f32_tensor("one", &[1], &[1.0]))),
        )],
    );
    let axes = g.i64s("axes", &[1]);
    let mut sums = Vec::with_capacity(context);
    let mut counts = Vec::with_capacity(context);
    for j in 0..context {
        let start = g.i64s("start", &[j as i64]);
        let end = g.i64s("end", &[j as i64 + 1]);
        let part = g.op("Slice", &[&stacked, &start, &end, &axes], vec![]);
        let part = g.reshape(&part, &[-1, width as i64]);
        let (before, after) = (j as i64, (context - 1 - j) as i64);
        let pads = g.i64s("pads", &[before, 0, after, 0]);
        sums.push(g.op("Pad", &[&part, &pads], vec![]));
        let pads = g.i64s("pads", &[before, after]);
        counts.push(g.op("Pad", &[&ones, &pads], vec![]));
    }
    let refs: Vec<&str> = sums.iter().map(String::as_str).collect();
    let total = g.op("Sum", &refs, vec![]);
    let refs: Vec<&str> = counts.iter().map(String::as_str).collect();
    let count = g.op("Sum", &refs, vec![]);
    let count = g.bin_scalar("Max", &count, 1.0);
    let axes = g.i64s("axes", &[1]);
    let count = g.op("Unsqueeze", &[&count, &axes], vec![]);
    g.bin("Div", &total, &count)
}
