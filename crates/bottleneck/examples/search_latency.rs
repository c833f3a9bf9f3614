//! Query latency and recall of exact and graph (HNSW) search by catalogue size, for
//! bench/search.sh and the choice of `ANN_THRESHOLD`.
//!
//! Usage: search_latency CATALOGUE QUERIES [N_QUERIES]
//! The catalogue's first n items form each test catalogue; each query runs alone on one
//! thread (the latency a single request sees); recall@10 is against exact search.

use std::path::PathBuf;
use std::time::Instant;

use bottleneck::progress::Silent;
use bottleneck::task::Catalogue;
use burn::prelude::Device;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: search_latency CATALOGUE QUERIES [N_QUERIES]".into());
    }
    let n_queries: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let device = Device::flex();
    let t = Instant::now();
    let cat = Catalogue::open(&PathBuf::from(&args[1]))?;
    let open_s = t.elapsed().as_secs_f64();
    let (_, codes, _) = cat.encode_queries(&PathBuf::from(&args[2]), false, &device, &Silent)?;
    let d = cat.meta().latent;
    let queries: Vec<&[f32]> = codes.chunks(d).take(n_queries).collect();
    let k = 10;
    println!(
        "catalogue {} items of {d}, opened in {open_s:.2}s; {} queries, k={k}, one thread each",
        cat.len(),
        queries.len()
    );
    println!(
        "| items | exact p50 ms | exact p99 ms | graph p50 ms | graph p99 ms | recall@10 | graph build s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut sizes: Vec<usize> = [1_000, 5_000, 10_000, 20_000, 40_000, 60_000]
        .into_iter()
        .filter(|&n| n < cat.len())
        .collect();
    sizes.push(cat.len());
    for n in sizes {
        let t = Instant::now();
        let sub = cat.truncated(n, true)?;
        let build_s = t.elapsed().as_secs_f64();
        let mut exact_ms = Vec::new();
        let mut exact_hits = Vec::new();
        for q in &queries {
            let t = Instant::now();
            let hits = sub.search_exact(q, k);
            exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
            exact_hits.push(hits.into_iter().next().unwrap_or_default());
        }
        let (graph_ms, found) = sub.with_graph(|g| {
            let g = g.expect("built with a graph");
            let mut ms = Vec::new();
            let mut found = 0usize;
            for (q, truth) in queries.iter().zip(&exact_hits) {
                let t = Instant::now();
                let hits = sub.search_graph(g, q, k);
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                found += hits[0]
                    .iter()
                    .filter(|h| truth.iter().any(|e| e.item == h.item))
                    .count();
            }
            (ms, found)
        })?;
        let (mut e, mut g) = (exact_ms, graph_ms);
        e.sort_by(f64::total_cmp);
        g.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} | {build_s:.1} |",
            percentile(&e, 0.5),
            percentile(&e, 0.99),
            percentile(&g, 0.5),
            percentile(&g, 0.99),
            found as f64 / (k * queries.len()) as f64
        );
    }
    Ok(())
}
