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
        let points: Vec<(i32, f64)> = curve
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i32 + 1, v as f64))
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

/// Histograms of each series' scores on shared bins, as shares of the series (so sets of
/// different sizes compare), with the threshold as a dashed line. Non-finite scores are
/// left out.
pub fn score_histogram(series: &[Series], threshold: f32) -> Result<String> {
    let finite = |s: &Series| -> Vec<f64> {
        s.values
            .iter()
            .map(|&v| v as f64)
            .filter(|v| v.is_finite())
            .collect()
    };
    let values: Vec<Vec<f64>> = series.iter().map(finite).collect();
    let t = threshold as f64;
    let (mut lo, mut hi) = (t, t);
    for v in values.iter().flatten() {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if hi <= lo {
        lo -= 0.5;
        hi += 0.5;
    }
    let width = (hi - lo) / BINS as f64;
    let shares: Vec<Vec<f64>> = values
        .iter()
        .map(|v| {
            let mut counts = vec![0usize; BINS];
            for x in v {
                counts[(((x - lo) / width) as usize).min(BINS - 1)] += 1;
            }
            let n = v.len().max(1) as f64;
            counts.into_iter().map(|c| c as f64 / n).collect()
        })
        .collect();
    let top = shares
        .iter()
        .flatten()
        .copied()
        .fold(0.0, f64::max)
        .max(0.01)
        * 1.15;
    svg(WIDE, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(padded(lo, hi), 0.0..top)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("anomaly score")
            .y_desc("share of the set")
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .label_style(FONT)
            .axis_desc_style(FONT)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(chart_error)?;
        for (s, bins) in series.iter().zip(&shares) {
            let fill = s.color.mix(0.45).filled();
            chart
                .draw_series(
                    bins.iter()
                        .enumerate()
                        .filter(|(_, h)| **h > 0.0)
                        .map(|(b, &h)| {
                            let x0 = lo + b as f64 * width;
                            Rectangle::new([(x0, 0.0), (x0 + width, h)], fill)
                        }),
                )
                .map_err(chart_error)?
                .label(format!("{} ({})", s.label, s.values.len()))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], fill));
        }
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
