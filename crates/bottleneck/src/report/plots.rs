//! The report's charts, drawn with plotters as SVG text to be inlined in the page. Without a
//! font feature plotters only estimates text widths; the browser lays the text out itself.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::short;
use crate::error::{Error, Result};

/// Size of a wide chart (loss curve, histogram), in SVG pixels.
const WIDE: (u32, u32) = (720, 360);
/// Size of a square-ish chart (ROC, precision-recall).
const SQUARE: (u32, u32) = (440, 400);
const FONT: (&str, u32) = ("sans-serif", 15);
/// Bars of a score histogram.
const BINS: usize = 40;

/// Calibration scores: held-out normal samples.
pub const BLUE: RGBColor = RGBColor(31, 119, 180);
/// DATA's scores when labels are unknown.
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
/// DATA's normal samples.
pub const GREEN: RGBColor = RGBColor(44, 160, 44);
/// DATA's anomalous samples.
pub const RED: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(140, 140, 140);

fn chart_error(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cannot draw a report chart: {e}"))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The SVG text of a `size` chart drawn by `draw` on a white background.
fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        draw(&root)?;
        root.present().map_err(chart_error)?;
    }
    Ok(out)
}

/// `lo..hi` widened by 5% each side (by 0.5 when empty), for data that should not touch
/// the frame.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad)..(hi + pad)
    } else {
        (lo - 0.5)..(hi + 0.5)
    }
}

/// The mean training loss per epoch (epochs from 1). Fails only if drawing fails.
pub fn loss_curve(curve: &[f32]) -> Result<String> {
    svg(WIDE, |root| {
        let n = curve.len() as i32;
        let values = curve.iter().map(|&v| v as f64).filter(|v| v.is_finite());
        let lo = values.clone().fold(f64::INFINITY, f64::min);
        let hi = values.fold(f64::NEG_INFINITY, f64::max);
        let y = if lo <= hi { padded(lo, hi) } else { 0.0..1.0 };
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(76)
            .build_cartesian_2d(if n > 1 { 1..n } else { 0..2 }, y)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("mean training loss")
            .x_labels(10.min(n.max(2) as usize))
            .y_label_formatter(&|v| short(*v))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(chart_error)?;
        // A diverged epoch (NaN or infinite loss) has no place on the axis: it is left out
        // and the line joins the epochs either side.
        let points: Vec<(i32, f64)> = curve
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i32 + 1, v as f64))
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
            .map_err(chart_error)?;
        if points.len() <= 40 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(chart_error)?;
        }
        Ok(())
    })
}

/// One set of scores in a histogram.
pub struct Series<'a> {
    pub label: String,
    pub values: &'a [f32],
    pub color: RGBColor,
}

/// Share of the pooled scores the histogram's bars span; the rest, when far out, go to an
/// overflow bar.
const BULK: f64 = 0.995;

/// Shared bins of a score histogram: [`BINS`] bars of `width` from `lo` to `hi`, then one
/// overflow bar for the scores above `hi`.
struct Bins {
    lo: f64,
    hi: f64,
    width: f64,
    /// Per series: the share of its finite scores in each bar, the overflow bar last.
    shares: Vec<Vec<f64>>,
    /// Per series: scores above `hi` (in the overflow bar).
    above: Vec<usize>,
    /// Per series: NaN and infinite scores, left out of every bar.
    not_finite: Vec<usize>,
}

impl Bins {
    /// Bins for `series` that span the bulk of the pooled finite scores and the threshold
    /// `t` (when finite). A far tail (a few wild scores, say one of 1e6 among scores near 1)
    /// would squeeze the rest into one bar, so when the full range is over twice as wide as
    /// the [`BULK`] quantile's, the bars stop at the last score within that twice, and what
    /// lies above goes to the overflow bar.
    fn new(series: &[Series], t: f64) -> Self {
        let finite: Vec<Vec<f64>> = series
            .iter()
            .map(|s| {
                s.values
                    .iter()
                    .map(|&v| v as f64)
                    .filter(|v| v.is_finite())
                    .collect()
            })
            .collect();
        let mut pooled: Vec<f64> = finite.iter().flatten().copied().collect();
        pooled.sort_by(f64::total_cmp);
        let t = t.is_finite().then_some(t);
        let (mut lo, mut hi) = match (pooled.first(), pooled.last()) {
            (Some(&min), Some(&max)) => {
                // The lower quantile (no interpolation), so that in a small set one wild
                // score is not averaged into the cut.
                let bulk = pooled[((pooled.len() - 1) as f64 * BULK).floor() as usize];
                let lo = t.map_or(min, |t| min.min(t));
                let widest = t.map_or(max, |t| max.max(t));
                let cut = t.map_or(bulk, |t| bulk.max(t));
                let reach = lo + 2.0 * (cut - lo);
                if widest > reach {
                    // The bars go on to the last score within reach, so only the far tail
                    // overflows, not the top of the bulk.
                    let within = pooled.partition_point(|&v| v <= reach);
                    (lo, pooled[within.saturating_sub(1)].max(cut))
                } else {
                    (lo, widest)
                }
            }
            _ => (t.unwrap_or(0.0), t.unwrap_or(0.0)),
        };
        if hi <= lo {
            lo -= 0.5;
            hi += 0.5;
        }
        let width = (hi - lo) / BINS as f64;
        let mut above = Vec::with_capacity(series.len());
        let shares = finite
            .iter()
            .map(|v| {
                let mut counts = vec![0usize; BINS + 1];
                for &x in v {
                    let bar = if x > hi {
                        BINS
                    } else {
                        (((x - lo) / width) as usize).min(BINS - 1)
                    };
                    counts[bar] += 1;
                }
                above.push(counts[BINS]);
                let n = v.len().max(1) as f64;
                counts.into_iter().map(|c| c as f64 / n).collect()
            })
            .collect();
        let not_finite = series
            .iter()
            .zip(&finite)
            .map(|(s, f)| s.values.len() - f.len())
            .collect();
        Self {
            lo,
            hi,
            width,
            shares,
            above,
            not_finite,
        }
    }

    /// The x range of bar `b`: the overflow bar stands half a bar apart from the others.
    fn bar(&self, b: usize) -> (f64, f64) {
        let x0 = if b < BINS {
            self.lo + b as f64 * self.width
        } else {
            self.hi + 0.5 * self.width
        };
        (x0, x0 + self.width)
    }
}

/// Histograms of each series' scores on shared bins, as shares of the series (so sets of
/// different sizes compare), with the threshold as a dashed line. Scores far above the bulk
/// are counted in a last, outlined bar; non-finite scores are left out and counted in the
/// legend. Fails only if drawing fails.
pub fn score_histogram(series: &[Series], threshold: f32) -> Result<String> {
    let t = threshold as f64;
    let bins = Bins::new(series, t);
    let above: usize = bins.above.iter().sum();
    let top = bins
        .shares
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(0.01)
        * 1.15;
    let right = if above > 0 { bins.bar(BINS).1 } else { bins.hi };
    // Past `hi` the x axis is no longer to scale, so it has no tick labels there.
    let last_tick = bins.hi + 0.25 * bins.width;
    svg(WIDE, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(padded(bins.lo, right), 0.0..top)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("anomaly score")
            .y_desc("share of the set")
            .x_label_formatter(&|v| {
                if *v > last_tick {
                    String::new()
                } else {
                    short(*v)
                }
            })
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(chart_error)?;
        for (i, s) in series.iter().enumerate() {
            let fill = s.color.mix(0.45).filled();
            let label = match bins.not_finite[i] {
                0 => format!("{} ({})", s.label, s.values.len()),
                bad => format!("{} ({}, {bad} not finite)", s.label, s.values.len()),
            };
            chart
                .draw_series(
                    bins.shares[i]
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| **h > 0.0)
                        .map(|(b, &h)| {
                            let (x0, x1) = bins.bar(b);
                            Rectangle::new([(x0, 0.0), (x1, h)], fill)
                        }),
                )
                .map_err(chart_error)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], fill));
        }
        if above > 0 {
            let tallest = bins.shares.iter().map(|s| s[BINS]).fold(0.0, f64::max);
            let (x0, x1) = bins.bar(BINS);
            chart
                .draw_series([Rectangle::new(
                    [(x0, 0.0), (x1, tallest)],
                    BLACK.stroke_width(1),
                )])
                .map_err(chart_error)?
                .label(format!("last bar: {above} above {}", short(bins.hi)))
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], BLACK.stroke_width(1))
                });
        }
        if t.is_finite() {
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, 0.0), (t, top)],
                    7,
                    5,
                    BLACK.stroke_width(2),
                ))
                .map_err(chart_error)?
                .label(format!("threshold {}", short(t)))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(FONT)
            .draw()
            .map_err(chart_error)?;
        Ok(())
    })
}

/// A unit-square chart of `curve` with a dashed `chance` line, its legend naming the area.
fn unit_curve(
    curve: &[(f64, f64)],
    chance: [(f64, f64); 2],
    axes: (&str, &str),
    label: String,
) -> Result<String> {
    svg(SQUARE, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0f64, 0.0..1.02f64)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(chart_error)?;
        chart
            .draw_series(DashedLineSeries::new(chance, 6, 5, GREY.stroke_width(1)))
            .map_err(chart_error)?
            .label("chance")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GREY.stroke_width(1)));
        chart
            .draw_series(LineSeries::new(curve.to_vec(), BLUE.stroke_width(2)))
            .map_err(chart_error)?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(FONT)
            .draw()
            .map_err(chart_error)?;
        Ok(())
    })
}

/// The ROC curve (points from [`crate::metrics::roc_curve`]) with its area.
pub fn roc(points: &[(f64, f64)], auroc: f64) -> Result<String> {
    unit_curve(
        points,
        [(0.0, 0.0), (1.0, 1.0)],
        ("false-positive rate", "true-positive rate"),
        format!("AUROC {auroc:.3}"),
    )
}

/// The precision-recall curve (points from [`crate::metrics::precision_recall_curve`])
/// drawn as the step function average precision sums, with the share of positives as
/// chance.
pub fn precision_recall(points: &[(f64, f64)], ap: f64, positives: f64) -> Result<String> {
    let mut steps = Vec::with_capacity(points.len() * 2);
    for w in points.windows(2) {
        steps.push((w[0].0, w[1].1));
        steps.push((w[1].0, w[1].1));
    }
    unit_curve(
        &steps,
        [(0.0, positives), (1.0, positives)],
        ("recall", "precision"),
        format!("AP {ap:.3}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f32]) -> Series<'_> {
        Series {
            label: "data".into(),
            values,
            color: ORANGE,
        }
    }

    #[test]
    fn histogram_outlier_goes_to_an_overflow_bar_and_leaves_the_bulk_spread_out() {
        // 999 scores spread over 0..1 and one wild score: the bars must cover the bulk.
        let mut values: Vec<f32> = (0..999).map(|i| i as f32 / 999.0).collect();
        values.push(1e6);
        let calibration: Vec<f32> = (0..200).map(|i| i as f32 / 400.0).collect();
        let set = [series(&calibration), series(&values)];
        let bins = Bins::new(&set, 0.9);
        assert_eq!(
            bins.hi, values[998] as f64,
            "the bars reach the top of the bulk"
        );
        assert_eq!(bins.above, [0, 1]);
        let filled = bins.shares[1][..BINS].iter().filter(|&&h| h > 0.0).count();
        assert!(filled >= BINS / 2, "{filled} bars hold the bulk");
        assert!((bins.shares[1][BINS] - 0.001).abs() < 1e-12);
        let svg = score_histogram(&set, 0.9).unwrap();
        assert!(svg.contains(&format!("last bar: 1 above {}", short(bins.hi))));
        assert!(!svg.contains("1.000e6"), "no tick reaches the outlier");
    }

    #[test]
    fn histogram_outlier_in_a_small_set_is_cut_off_too() {
        let values = [0.1f32, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 1e6];
        let bins = Bins::new(&[series(&values)], 0.45);
        assert!(bins.hi < 1.0, "bars end at {}", bins.hi);
        assert_eq!(bins.above, [1]);
        let filled = bins.shares[0][..BINS].iter().filter(|&&h| h > 0.0).count();
        assert_eq!(filled, 8);
    }

    #[test]
    fn histogram_without_a_far_tail_has_no_overflow_bar_and_keeps_the_threshold() {
        let values: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let bins = Bins::new(&[series(&values)], 3.0);
        assert_eq!((bins.lo, bins.hi), (0.0, 3.0));
        assert_eq!(bins.above, [0]);
        let total: f64 = bins.shares[0].iter().sum();
        assert!((total - 1.0).abs() < 1e-9);
        let svg = score_histogram(&[series(&values)], 3.0).unwrap();
        assert!(!svg.contains("last bar") && svg.contains("threshold 3"));
    }

    #[test]
    fn histogram_leaves_non_finite_scores_out_and_counts_them() {
        let values = [0.5f32, f32::NAN, 1.0, f32::INFINITY, 1.5, f32::NEG_INFINITY];
        let bins = Bins::new(&[series(&values)], 1.2);
        assert_eq!(bins.not_finite, [3]);
        assert_eq!(bins.above, [0]);
        assert_eq!((bins.lo, bins.hi), (0.5, 1.5));
        let total: f64 = bins.shares[0].iter().sum();
        assert!((total - 1.0).abs() < 1e-9);
        let svg = score_histogram(&[series(&values)], 1.2).unwrap();
        assert!(svg.contains("data (6, 3 not finite)"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Nothing finite at all, and a non-finite threshold: still a (blank) chart.
        let svg = score_histogram(&[series(&[f32::NAN])], f32::NAN).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn loss_curve_draws_only_finite_losses() {
        let curve = [1.0f32, 0.5, f32::NAN, 0.25, f32::INFINITY, 0.2];
        let svg = loss_curve(&curve).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(svg.matches("<circle").count(), 4);
        // The line and the points stay inside the chart (a NaN loss once drew them off it).
        let (w, h) = WIDE;
        let line = svg
            .split("<polyline")
            .find(|e| e.contains(r##"stroke="#1F77B4""##))
            .unwrap();
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split_whitespace().count(), 4);
        for p in points.split_whitespace() {
            let (x, y) = p.split_once(',').unwrap();
            let (x, y): (i64, i64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!(
                (0..=w as i64).contains(&x) && (0..=h as i64).contains(&y),
                "{p}"
            );
        }
        let svg = loss_curve(&[f32::NAN, f32::NAN]).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
