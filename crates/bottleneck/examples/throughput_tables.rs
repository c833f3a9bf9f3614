//! Training and scoring throughput of the dense table autoencoder on rows held in memory,
//! for bench/throughput_tables.sh (which runs the same network in PyTorch beside it).
//!
//! Usage: throughput_tables FEATURES ROWS BATCH EPOCHS
//! Prints one JSON object with rows/s and the default shape used.

use std::time::Instant;

use bottleneck::model::DenseSpec;
use bottleneck::progress::Silent;
use bottleneck::train::{DenseTrainOptions, train_dense};
use burn::prelude::*;
use rand::{Rng, SeedableRng};

// The same allocator as the `bottleneck` binary.
#[global_allocator]
static GLOBAL: bottleneck::allocator::Allocator = bottleneck::allocator::Allocator;

/// Rows scored per forward pass, as `score` does.
const SCORE_CHUNK: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 4 {
        return Err("usage: throughput_tables FEATURES ROWS BATCH EPOCHS".into());
    }
    let n = |i: usize| a[i].parse::<usize>();
    let (d, rows, batch, epochs) = (n(0)?, n(1)?, n(2)?, n(3)?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let values: Vec<f32> = (0..rows * d).map(|_| rng.random_range(-2.0..2.0)).collect();
    let spec = DenseSpec::for_table(d, None, None, false, false)?;
    let idx: Vec<usize> = (0..rows).collect();
    let device = Device::flex();
    let opts = DenseTrainOptions {
        epochs,
        batch_size: batch,
        learning_rate: 1e-3,
        seed: 0,
        mask_rate: 0.2,
        kl_weight: 1.0,
        early_stopping: false,
    };
    let t = Instant::now();
    let (model, _) = train_dense(&spec, &values, &idx, &opts, &device, &Silent)?;
    let train_s = t.elapsed().as_secs_f64();
    // Scoring a few thousand rows takes milliseconds, where a single scheduling hiccup
    // would decide the figure: score at least 1,000,000 rows (repeated passes; 200,000
    // rows, ~60 ms for 13 features, gave 2.2-4.6M rows/s over six runs of one binary).
    let passes = 1_000_000usize.div_ceil(rows);
    let t = Instant::now();
    let mut total = 0f64;
    for chunk in (0..passes).flat_map(|_| values.chunks(SCORE_CHUNK * d)) {
        let m = chunk.len() / d;
        let x = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [m, d]), &device);
        let mask = x.ones_like();
        let y: Vec<f32> = model
            .forward(x, Some(mask))
            .into_data()
            .try_into_vec()
            .map_err(|e| format!("{e:?}"))?;
        // Each row's squared error, in a loop over the values as `score` does it.
        let err: Vec<f32> = chunk
            .chunks(d)
            .zip(y.chunks(d))
            .map(|(x, y)| x.iter().zip(y).map(|(a, b)| (b - a) * (b - a)).sum())
            .collect();
        total += err.iter().map(|&e| e as f64).sum::<f64>();
    }
    let score_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"train_rows_per_s\": {}, \"score_rows_per_s\": {}, \"rows\": {rows}, \"epochs\": {epochs}, \"hidden\": {:?}, \"latent\": {}, \"checksum\": {total}}}",
        (rows * epochs) as f64 / train_s,
        (rows * passes) as f64 / score_s,
        spec.hidden,
        spec.latent
    );
    Ok(())
}
