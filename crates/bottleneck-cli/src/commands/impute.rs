//! `bottleneck impute`: fill the missing cells of a table with a table model.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::task::TableModel;
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct ImputeArgs {
    /// Table model file written by `train`.
    model: PathBuf,
    /// Table with gaps (.csv, .tsv, .parquet, .npy).
    data: PathBuf,
    /// Output file: .csv (or .npy when every column is a feature).
    #[arg(short, long)]
    output: PathBuf,
    /// Copy rows with no observed feature through unfilled instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

pub fn run(args: ImputeArgs, device: &Device, bars: &Bars) -> Result<()> {
    let ImputeArgs {
        model,
        data,
        output,
        skip_bad,
    } = args;
    refuse_overwrite(&[&model, &data], &[Output::File(&output)])?;
    let table = TableModel::load(&model, device)?;
    let (rows, filled) = table.impute_file(&data, &output, skip_bad, bars)?;
    bars.note(&format!(
        "wrote {rows} rows to {}, {filled} cells filled",
        output.display()
    ));
    Ok(())
}
