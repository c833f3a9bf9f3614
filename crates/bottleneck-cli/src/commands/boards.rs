//! `bottleneck boards`: synthetic circuit boards in the MVTec layout.

use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::data::synthetic::{BoardConfig, generate_boards};
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct BoardsArgs {
    /// Output root.
    out: PathBuf,
    /// Side of the images in pixels.
    #[arg(long, default_value_t = BoardConfig::default().image_size)]
    size: usize,
    /// Good boards under train/good.
    #[arg(long, default_value_t = BoardConfig::default().train_good)]
    train: usize,
    /// Good boards under test/good.
    #[arg(long, default_value_t = BoardConfig::default().test_good)]
    test_good: usize,
    /// Boards per defect type under test/<defect>.
    #[arg(long, default_value_t = BoardConfig::default().test_per_defect)]
    per_defect: usize,
    #[arg(long, default_value_t = BoardConfig::default().seed)]
    seed: u64,
    /// Small defects: each defect's largest extent drawn in this range of pixels, as
    /// MIN-MAX (e.g. 3-8 on 1,024-pixel boards) [default: the design's size, which grows
    /// with the board].
    #[arg(long, value_parser = pixel_range)]
    defect_px: Option<(f32, f32)>,
}

/// `MIN-MAX` pixels, `0 < MIN <= MAX`.
fn pixel_range(s: &str) -> std::result::Result<(f32, f32), String> {
    let bad = || format!("'{s}': give MIN-MAX pixels, such as 3-8");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (f32, f32) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if !(a.is_finite() && b.is_finite() && a > 0.0 && a <= b) {
        return Err(bad());
    }
    Ok((a, b))
}

pub fn run(args: BoardsArgs, _device: &Device, bars: &Bars) -> Result<()> {
    let BoardsArgs {
        out,
        size,
        train,
        test_good,
        per_defect,
        seed,
        defect_px,
    } = args;
    let cfg = BoardConfig {
        image_size: size,
        train_good: train,
        test_good,
        test_per_defect: per_defect,
        seed,
        defect_px,
    };
    let n = generate_boards(&out, &cfg)?;
    bars.note(&format!("wrote {n} boards under {}", out.display()));
    Ok(())
}
