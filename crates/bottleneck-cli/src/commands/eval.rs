//! `bottleneck eval`: metrics of an image or audio model on an MVTec-layout root.

use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::task::Model;
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct EvalArgs {
    /// Model file written by `train`.
    model: PathBuf,
    /// Root in the MVTec AD layout.
    root: PathBuf,
}

pub fn run(args: EvalArgs, device: &Device, bars: &Bars) -> Result<()> {
    let EvalArgs { model, root } = args;
    let report = match Model::load(&model, device)? {
        Model::AudioDetector(detector) => {
            serde_json::to_string_pretty(&detector.evaluate(&root, 0.1, bars)?)?
        }
        Model::ImageDetector(detector) => {
            serde_json::to_string_pretty(&detector.evaluate(&root, bars)?)?
        }
        other @ (Model::TableDetector(_) | Model::ImageDenoiser(_) | Model::AudioDenoiser(_)) => {
            anyhow::bail!(
                "{}: {}; eval reads a labelled MVTec-layout folder of images or recordings",
                model.display(),
                other.kind()
            )
        }
    };
    println!("{report}");
    Ok(())
}
