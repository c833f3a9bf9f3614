//! `bottleneck index`: a catalogue of bottleneck codes for similarity search.

use bottleneck::io::{Output, refuse_overwrite};
use std::path::PathBuf;

use anyhow::{Context, Result};
use bottleneck::Device;
use bottleneck::task::Catalogue;
use clap::Args;

use super::skipped_note;
use crate::progress::Bars;

#[derive(Args)]
pub struct IndexArgs {
    /// Model file written by `train` (images or table; not a denoiser).
    model: PathBuf,
    /// An image, a folder of images, or a table.
    data: PathBuf,
    /// Catalogue file to write (.bnidx).
    #[arg(short, long)]
    output: PathBuf,
    /// Add DATA to an existing catalogue made with the same model (items already in it
    /// by name are left out) instead of writing a new one.
    #[arg(long)]
    append: bool,
    /// Give the catalogue an approximate search graph (HNSW) from this many items on;
    /// smaller catalogues are searched exactly [default: 10,000; with --append: the
    /// catalogue's own].
    #[arg(long)]
    graph_from: Option<usize>,
    /// Skip unreadable images or bad rows with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

pub fn run(args: IndexArgs, device: &Device, bars: &Bars) -> Result<()> {
    let IndexArgs {
        model,
        data,
        output,
        append,
        graph_from,
        skip_bad,
    } = args;
    // With --append the catalogue at the output is read and written again, atomically.
    refuse_overwrite(&[&model, &data], &[Output::File(&output)])?;
    let (catalogue, added, duplicates, skipped) = if append && output.exists() {
        let mut catalogue = Catalogue::open(&output)?;
        let given =
            std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
        if given != catalogue.model_bytes() {
            anyhow::bail!(
                "{} was made with another model than {}; index into a new catalogue",
                output.display(),
                model.display()
            );
        }
        if let Some(n) = graph_from {
            catalogue.set_graph_from(n);
        }
        let (added, duplicates, skipped) = catalogue.append(&data, skip_bad, device, bars)?;
        (catalogue, added, duplicates, skipped)
    } else {
        let (catalogue, skipped) = Catalogue::build(
            &model,
            &data,
            graph_from.unwrap_or(bottleneck::task::search::ANN_THRESHOLD),
            skip_bad,
            device,
            bars,
        )?;
        let added = catalogue.len();
        (catalogue, added, 0, skipped)
    };
    catalogue.save(&output)?;
    bars.note(&format!(
        "wrote {}: {} items ({added} added{}), {}{}",
        output.display(),
        catalogue.len(),
        if duplicates > 0 {
            format!(", {duplicates} already there")
        } else {
            String::new()
        },
        if catalogue.meta().graph {
            "approximate search graph"
        } else {
            "exact search"
        },
        skipped_note(skipped)
    ));
    Ok(())
}
