//! `bottleneck encode`: the bottleneck code of every image or row.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::task::encode_to_file;
use clap::Args;

use super::skipped_note;
use crate::progress::Bars;

#[derive(Args)]
pub struct EncodeArgs {
    /// Model file written by `train` (images or table).
    model: PathBuf,
    /// An image, a folder of images, or a table.
    data: PathBuf,
    /// Output file: .csv, .parquet or .npy.
    #[arg(short, long)]
    output: PathBuf,
    /// Skip unreadable images or bad rows with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

pub fn run(args: EncodeArgs, device: &Device, bars: &Bars) -> Result<()> {
    let EncodeArgs {
        model,
        data,
        output,
        skip_bad,
    } = args;
    refuse_overwrite(&[&model, &data], &[Output::File(&output)])?;
    let (rows, skipped) = encode_to_file(&model, &data, &output, skip_bad, device, bars)?;
    bars.note(&format!(
        "wrote {rows} codes to {}{}",
        output.display(),
        skipped_note(skipped)
    ));
    Ok(())
}
