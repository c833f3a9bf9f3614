//! `bottleneck search`: the catalogue items nearest to each query in the bottleneck.

use std::path::PathBuf;

use anyhow::Result;
use bottleneck::Device;
use bottleneck::task::Catalogue;
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct SearchArgs {
    /// Catalogue written by `index`.
    catalogue: PathBuf,
    /// An image, a folder of images, or a table of rows (as the catalogue's model reads).
    query: PathBuf,
    /// Hits per query.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Print one JSON object per query (query, hits with item, name and distance).
    #[arg(long)]
    json: bool,
    /// Compare with every item even when the catalogue has a graph.
    #[arg(long)]
    exact: bool,
    /// Skip unreadable images or bad rows with a warning instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

pub fn run(args: SearchArgs, device: &Device, bars: &Bars) -> Result<()> {
    let SearchArgs {
        catalogue,
        query,
        k,
        json,
        exact,
        skip_bad,
    } = args;
    if k == 0 {
        anyhow::bail!("-k must be at least 1");
    }
    let cat = Catalogue::open(&catalogue)?;
    let (names, codes, skipped) = cat.encode_queries(&query, skip_bad, device, bars)?;
    let results = cat.search(&codes, k, exact)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    if !json {
        writeln!(out, "query\trank\titem\tdistance")?;
    }
    #[derive(serde::Serialize)]
    struct QueryHits<'a> {
        query: &'a str,
        hits: &'a [bottleneck::task::Hit],
    }
    for (name, hits) in names.iter().zip(&results) {
        if json {
            let line = serde_json::to_string(&QueryHits { query: name, hits })?;
            writeln!(out, "{line}")?;
        } else {
            for (rank, hit) in hits.iter().enumerate() {
                writeln!(
                    out,
                    "{name}\t{}\t{}\t{:.6}",
                    rank + 1,
                    hit.name,
                    hit.distance
                )?;
            }
        }
    }
    out.flush()?;
    if skipped > 0 {
        bars.note(&format!("{skipped} queries skipped"));
    }
    Ok(())
}
