//! Ranking and classification metrics, each checked against hand-computed answers.

/// Area under the ROC curve of `scores` (higher = more anomalous) against `labels`
/// (true = anomalous), with ties counted as half (the Mann-Whitney statistic).
/// Returns `None` when either class is absent.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let n_pos = n_pos as f64;
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg as f64))
}

/// Average precision (area under the precision-recall curve, as scikit-learn computes it:
/// a step function over distinct thresholds). `None` without positives.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let curve = precision_recall_curve(scores, labels)?;
    Some(curve.windows(2).map(|w| (w[1].0 - w[0].0) * w[1].1).sum())
}

/// True and false positives when flagging every score at or above each distinct score, from
/// the highest score down (tied scores enter together).
fn counts_by_threshold(scores: &[f32], labels: &[bool]) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        // total_cmp: a NaN score ties with itself (`==` would never end this loop).
        while j < order.len() && scores[order[j]].total_cmp(&scores[order[i]]).is_eq() {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        out.push((tp, fp));
        i = j;
    }
    out
}

/// The ROC curve of `scores` (higher = more anomalous) against `labels`: (false-positive
/// rate, true-positive rate) at every distinct score taken as the threshold, from (0, 0) to
/// (1, 1). Tied scores move in one diagonal step, so the trapezoid area under the points is
/// [`auroc`]. `None` when either class is absent.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Option<Vec<(f64, f64)>> {
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    let mut points = vec![(0.0, 0.0)];
    points.extend(
        counts_by_threshold(scores, labels)
            .into_iter()
            .map(|(tp, fp)| (fp as f64 / n_neg, tp as f64 / n_pos)),
    );
    Some(points)
}

/// Partial area under the ROC curve up to a false-positive rate of `max_fpr`, standardised
/// as McClish (1989) and scikit-learn's `roc_auc_score(max_fpr=...)` do, which is how the
/// DCASE machine-condition challenge reports pAUC: 0.5 for a random ranking, 1 for a
/// perfect one. `None` when either class is absent or `max_fpr` is not in (0, 1].
pub fn partial_auroc(scores: &[f32], labels: &[bool], max_fpr: f64) -> Option<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return None;
    }
    let curve = roc_curve(scores, labels)?;
    let area = area_up_to(&curve, max_fpr);
    let min_area = 0.5 * max_fpr * max_fpr;
    Some(0.5 * (1.0 + (area - min_area) / (max_fpr - min_area)))
}

/// Trapezoid area under a curve of `(x, y)` points in ascending x, from its first point up
/// to `max_x`, the last segment cut there by linear interpolation.
fn area_up_to(curve: &[(f64, f64)], max_x: f64) -> f64 {
    let mut area = 0.0;
    for w in curve.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 >= max_x {
            break;
        }
        let (x1c, y1c) = if x1 > max_x {
            (max_x, y0 + (y1 - y0) * (max_x - x0) / (x1 - x0))
        } else {
            (x1, y1)
        };
        area += (x1c - x0) * (y0 + y1c) / 2.0;
    }
    area
}

/// The precision-recall curve of `scores` against `labels`: (recall, precision) at every
/// distinct score taken as the threshold, highest first, after a starting point (0, 1).
/// Precision holds from one point's recall to the next, so the step area
/// `sum (r[i] - r[i-1]) * p[i]` is [`average_precision`]. `None` without positives.
pub fn precision_recall_curve(scores: &[f32], labels: &[bool]) -> Option<Vec<(f64, f64)>> {
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    if n_pos == 0.0 {
        return None;
    }
    let mut points = vec![(0.0, 1.0)];
    points.extend(
        counts_by_threshold(scores, labels)
            .into_iter()
            .map(|(tp, fp)| (tp as f64 / n_pos, tp as f64 / (tp + fp) as f64)),
    );
    Some(points)
}

/// Precision, recall and F1 of hard predictions (true = flagged anomalous).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Classification {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Precision, recall and F1 of `predicted` against `labels`; zero where undefined.
pub fn classification(predicted: &[bool], labels: &[bool]) -> Classification {
    let tp = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p && **l)
        .count() as f64;
    let fp = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p && !**l)
        .count() as f64;
    let fn_ = predicted
        .iter()
        .zip(labels)
        .filter(|(p, l)| !**p && **l)
        .count() as f64;
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Classification {
        precision,
        recall,
        f1,
    }
}

/// Peak signal-to-noise ratio in dB of `estimate` against `reference`, both in `[0, 1]`:
/// `10 log10(1 / MSE)`. Infinite when they are equal; `None` when the lengths differ or
/// are zero.
pub fn psnr(reference: &[f32], estimate: &[f32]) -> Option<f64> {
    if reference.len() != estimate.len() || reference.is_empty() {
        return None;
    }
    let mse = reference
        .iter()
        .zip(estimate)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / reference.len() as f64;
    Some(-10.0 * mse.log10())
}

/// The pixels of one anomaly map for [`aupro`]: the map at the mask's resolution and the
/// mask's defect regions (8-connected, as MVTec AD's evaluation labels them).
pub struct ProPixels {
    /// `(score, weight)` per pixel: weight 0 for a normal pixel, `1 / region size` for a
    /// defect pixel, so a region's weights sum to 1 whatever its size.
    pixels: Vec<(f32, f32)>,
    regions: usize,
}

impl ProPixels {
    /// Collects `scores` against `mask` (both `width x height`, row-major; true = defect).
    /// Returns `None` when their lengths differ.
    pub fn new(scores: &[f32], mask: &[bool], width: usize) -> Option<Self> {
        if scores.len() != mask.len() || width == 0 || !mask.len().is_multiple_of(width) {
            return None;
        }
        let (labels, sizes) = label_regions(mask, width);
        let pixels = scores
            .iter()
            .zip(&labels)
            .map(|(&s, &l)| {
                (
                    s,
                    if l == 0 {
                        0.0
                    } else {
                        1.0 / sizes[l - 1] as f32
                    },
                )
            })
            .collect();
        Some(Self {
            pixels,
            regions: sizes.len(),
        })
    }
}

/// 8-connected regions of `mask` (`width` wide): a label per pixel (0 outside, 1.. inside)
/// and each region's size.
fn label_regions(mask: &[bool], width: usize) -> (Vec<usize>, Vec<usize>) {
    let height = mask.len() / width;
    let mut labels = vec![0usize; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        sizes.push(0);
        let label = sizes.len();
        labels[start] = label;
        stack.push(start);
        while let Some(p) = stack.pop() {
            sizes[label - 1] += 1;
            let (x, y) = ((p % width) as isize, (p / width) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let q = ny as usize * width + nx as usize;
                    if mask[q] && labels[q] == 0 {
                        labels[q] = label;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, sizes)
}

/// Area under the per-region overlap (PRO) curve up to a false-positive rate of `max_fpr`,
/// divided by `max_fpr`, as MVTec AD defines it (Bergmann et al., IJCV 2021, and its
/// evaluation code): for every threshold, PRO is the mean over all defect regions of all
/// images of the share of the region above it, and FPR the share of normal pixels above it;
/// the curve is integrated by trapezoids and cut at `max_fpr` by interpolation (0.3 is the
/// usual limit). 1 for a perfect map, about `max_fpr / 2` for a random one. `None` without
/// defect regions or normal pixels, or with `max_fpr` outside (0, 1].
pub fn aupro(maps: &[ProPixels], max_fpr: f64) -> Option<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return None;
    }
    let regions: usize = maps.iter().map(|m| m.regions).sum();
    let mut pixels: Vec<(f32, f32)> = maps.iter().flat_map(|m| m.pixels.iter().copied()).collect();
    let normal = pixels.iter().filter(|p| p.1 == 0.0).count();
    if regions == 0 || normal == 0 {
        return None;
    }
    pixels.sort_by(|a, b| b.0.total_cmp(&a.0));
    // The curve, one point per distinct score, highest first: thresholds at a tie take the
    // whole tie at once.
    let mut curve = vec![(0.0f64, 0.0f64)];
    let (mut fp, mut pro) = (0usize, 0.0f64);
    let mut i = 0;
    while i < pixels.len() {
        let score = pixels[i].0;
        while i < pixels.len() && pixels[i].0.total_cmp(&score).is_eq() {
            let weight = pixels[i].1;
            if weight == 0.0 {
                fp += 1;
            } else {
                pro += weight as f64;
            }
            i += 1;
        }
        curve.push((fp as f64 / normal as f64, pro / regions as f64));
    }
    Some(area_up_to(&curve, max_fpr) / max_fpr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_auroc_matches_scikit_learn() {
        // sklearn.metrics.roc_auc_score(y, s, max_fpr=...) on the same ranking.
        let s = [
            0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3, 0.2, 0.1, 0.35, 0.45,
        ];
        let y = [1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0].map(|v| v == 1);
        let p = |f| partial_auroc(&s, &y, f).unwrap();
        assert!((p(0.1) - 0.5789473684210527).abs() < 1e-12, "{}", p(0.1));
        assert!((p(0.3) - 0.6582633053221288).abs() < 1e-12, "{}", p(0.3));
        assert!((p(1.0) - auroc(&s, &y).unwrap()).abs() < 1e-12);
        assert_eq!(partial_auroc(&s, &[true; 12], 0.1), None);
        assert_eq!(partial_auroc(&s, &y, 0.0), None);
    }

    #[test]
    fn auroc_known_answers() {
        let l = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.3, 0.4], &l), Some(1.0));
        assert_eq!(auroc(&[0.4, 0.3, 0.2, 0.1], &l), Some(0.0));
        // One inversion out of four pairs.
        assert_eq!(auroc(&[0.1, 0.35, 0.3, 0.4], &l), Some(0.75));
        // All tied: chance.
        assert_eq!(auroc(&[1.0; 4], &l), Some(0.5));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
        // NaN scores tie with each other (and the curve ends).
        let nan = [f32::NAN, f32::NAN, 0.3, 0.4];
        assert_eq!(roc_curve(&nan, &l).unwrap().last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn average_precision_matches_sklearn() {
        // sklearn.metrics.average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) == 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(average_precision(&[0.2, 0.1], &[true, false]), Some(1.0));
    }

    #[test]
    fn roc_curve_known_answers_and_area_is_auroc() {
        // Highest first: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-).
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        let roc = roc_curve(&s, &l).unwrap();
        assert_eq!(
            roc,
            [(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        let area = |c: &[(f64, f64)]| -> f64 {
            c.windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum()
        };
        assert_eq!(area(&roc), auroc(&s, &l).unwrap());
        // A tie between a positive and a negative is one diagonal step (half credit).
        let tied = roc_curve(&[0.5, 0.5, 0.9], &[false, true, true]).unwrap();
        assert_eq!(tied, [(0.0, 0.0), (0.0, 0.5), (1.0, 1.0)]);
        assert_eq!(area(&tied), 0.75);
        assert_eq!(
            area(&tied),
            auroc(&[0.5, 0.5, 0.9], &[false, true, true]).unwrap()
        );
        assert_eq!(roc_curve(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn precision_recall_curve_known_answers_and_steps_sum_to_ap() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        let pr = precision_recall_curve(&s, &l).unwrap();
        assert_eq!(
            pr,
            [
                (0.0, 1.0),
                (0.5, 1.0),
                (0.5, 0.5),
                (1.0, 2.0 / 3.0),
                (1.0, 0.5)
            ]
        );
        let steps: f64 = pr.windows(2).map(|w| (w[1].0 - w[0].0) * w[1].1).sum();
        assert!((steps - 0.833_333_333).abs() < 1e-6, "{steps}");
        // Tied scores enter together: one point for the pair.
        let tied = precision_recall_curve(&[0.5, 0.5, 0.1], &[true, false, true]).unwrap();
        assert_eq!(tied, [(0.0, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0)]);
        assert_eq!(precision_recall_curve(&[0.1], &[false]), None);
    }

    #[test]
    fn f1_known_answer() {
        let c = classification(&[true, true, false, false], &[true, false, true, false]);
        assert_eq!((c.precision, c.recall, c.f1), (0.5, 0.5, 0.5));
        let none = classification(&[false, false], &[true, false]);
        assert_eq!(none.f1, 0.0);
    }

    #[test]
    fn psnr_of_a_known_error() {
        // Every value off by 0.1: MSE 0.01, PSNR 20 dB.
        let a = [0.2f32, 0.5, 0.9];
        let b = [0.3f32, 0.4, 0.8];
        assert!((psnr(&a, &b).unwrap() - 20.0).abs() < 1e-5);
        assert_eq!(psnr(&a, &a), Some(f64::INFINITY));
        assert_eq!(psnr(&a, &b[..2]), None);
    }
    #[test]
    fn aupro_known_answers() {
        // One 4x4 image: region A (two pixels, top left) scores 0.9 and 0.8, region B (two
        // pixels, bottom right) 0.7 and 0.1; one normal pixel 0.75, the other eleven 0.
        // Curve (FPR, PRO): (0, 0), (0, .25), (0, .5), (1/12, .5), (1/12, .75), (1/12, 1),
        // (1, 1). Up to 0.3: 1/12 * 0.5 + (0.3 - 1/12) * 1 = 0.258333, / 0.3 = 31/36.
        let mut scores = [0.0f32; 16];
        let mut mask = [false; 16];
        for (i, s) in [(0, 0.9), (1, 0.8), (14, 0.7), (15, 0.1), (5, 0.75)] {
            scores[i] = s;
        }
        for i in [0, 1, 14, 15] {
            mask[i] = true;
        }
        let maps = [ProPixels::new(&scores, &mask, 4).unwrap()];
        let got = aupro(&maps, 0.3).unwrap();
        assert!((got - 31.0 / 36.0).abs() < 1e-12, "{got}");
        // A map equal to the mask is perfect; the diagonal 8-neighbours join one region.
        let diagonal: Vec<bool> = (0..16).map(|i| i % 5 == 0).collect();
        let exact: Vec<f32> = diagonal.iter().map(|&d| d as u8 as f32).collect();
        let one = ProPixels::new(&exact, &diagonal, 4).unwrap();
        assert_eq!(one.regions, 1);
        assert_eq!(aupro(&[one], 0.3), Some(1.0));
        // A constant map is one tie: the curve jumps to (1, 1) and the area up to 0.3 is
        // the triangle under the diagonal, 0.045, / 0.3 = 0.15.
        let flat = ProPixels::new(&[0.5; 16], &mask, 4).unwrap();
        assert!((aupro(&[flat], 0.3).unwrap() - 0.15).abs() < 1e-12);
        // Regions count equally: a small region missed costs as much as a large one.
        let mut big = [false; 16];
        for i in [0, 1, 4, 5, 8, 9] {
            big[i] = true;
        }
        big[15] = true;
        let small_missed: Vec<f32> = (0..16)
            .map(|i| if big[i] && i != 15 { 1.0 } else { 0.0 })
            .collect();
        let m = ProPixels::new(&small_missed, &big, 4).unwrap();
        assert_eq!(m.regions, 2);
        // PRO is 0.5 from FPR 0 until every normal pixel ties with the missed one (six
        // float32 weights of 1/6 sum to 1 within 1e-7).
        assert!((aupro(&[m], 0.3).unwrap() - 0.5 - 0.5 * 0.15).abs() < 1e-6);
        assert!(aupro(&[ProPixels::new(&[0.0; 4], &[false; 4], 2).unwrap()], 0.3).is_none());
        assert!(ProPixels::new(&[0.0; 4], &[false; 3], 2).is_none());
    }
}
