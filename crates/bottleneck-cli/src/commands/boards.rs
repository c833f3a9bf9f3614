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
}

pub fn run(args: BoardsArgs, _device: &Device, bars: &Bars) -> Result<()> {
    let BoardsArgs {
        out,
        size,
        train,
        test_good,
        per_defect,
        seed,
    } = args;
    let cfg = BoardConfig {
        image_size: size,
        train_good: train,
        test_good,
        test_per_defect: per_defect,
        seed,
    };
    let n = generate_boards(&out, &cfg)?;
    bars.note(&format!("wrote {n} boards under {}", out.display()));
    Ok(())
}
