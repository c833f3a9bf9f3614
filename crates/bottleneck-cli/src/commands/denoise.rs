//! `bottleneck denoise`: images or recordings through a denoising model.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::task::Model;
use clap::Args;

use super::skipped_note;
use crate::progress::Bars;

#[derive(Args)]
pub struct DenoiseArgs {
    /// Denoising model file.
    model: PathBuf,
    /// An image or WAV file, or a folder of them (searched recursively).
    input: PathBuf,
    /// Output folder (same relative paths as the input), or a file path for one input
    /// file.
    #[arg(short, long)]
    output: PathBuf,
    /// Images: side of the tiles large images are cut into (they overlap and are
    /// blended).
    #[arg(long, default_value_t = bottleneck::task::denoise::DEFAULT_TILE)]
    tile: usize,
    /// Skip unreadable images with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

pub fn run(args: DenoiseArgs, device: &Device, bars: &Bars) -> Result<()> {
    let DenoiseArgs {
        model,
        input,
        output,
        tile,
        skip_bad,
    } = args;
    // Outputs beside their inputs are refused file by file where they are written.
    refuse_overwrite(&[&model], &[Output::File(&output)])?;
    match Model::load(&model, device)? {
        Model::AudioDenoiser(denoiser) => {
            let (written, silent, skipped) =
                denoiser.denoise_paths(&input, &output, skip_bad, bars)?;
            bars.note(&format!(
                "wrote {written} recordings to {}{}{}",
                output.display(),
                if silent > 0 {
                    format!(", {silent} silent (written unchanged)")
                } else {
                    String::new()
                },
                skipped_note(skipped)
            ));
        }
        Model::ImageDenoiser(denoiser) => {
            let denoiser = denoiser.with_tile(tile);
            let (written, skipped) = denoiser.denoise_paths(&input, &output, skip_bad, bars)?;
            bars.note(&format!(
                "wrote {written} images to {}{}",
                output.display(),
                skipped_note(skipped)
            ));
        }
        other @ (Model::ImageDetector(_) | Model::TableDetector(_) | Model::AudioDetector(_)) => {
            anyhow::bail!(
                "{}: {}, this needs a denoising model (train one with --task denoise)",
                model.display(),
                other.kind()
            );
        }
    }
    Ok(())
}
