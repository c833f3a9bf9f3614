//! `bottleneck export`: write a model as an ONNX graph that computes what scoring computes.

use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::io::{Output, refuse_overwrite};
use bottleneck::task::Model;
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct ExportArgs {
    /// Model file written by `train` (any kind).
    model: PathBuf,
    /// The ONNX file to write (opset 17).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: ExportArgs, device: &Device, bars: &Bars) -> Result<()> {
    let ExportArgs { model, output } = args;
    refuse_overwrite(&[&model], &[Output::File(&output)])?;
    let loaded = Model::load(&model, device)?;
    let onnx = bottleneck::export::export(&loaded, &output)?;
    bars.note(&format!(
        "wrote {} ({} KB, ONNX opset {}): {}; input {}; outputs {}",
        output.display(),
        onnx.bytes.len().div_ceil(1024),
        bottleneck::export::OPSET,
        loaded.kind(),
        onnx.inputs.join(", "),
        onnx.outputs.join(", ")
    ));
    Ok(())
}
