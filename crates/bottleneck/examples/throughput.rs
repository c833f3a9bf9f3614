//! Training and scoring throughput of the conv autoencoder on images held in memory, for
//! bench/throughput.sh (which runs the same network in PyTorch beside it).
//!
//! Usage: throughput IMAGE_DIR IMAGE_SIZE CHANNELS WIDTH LATENT BATCH EPOCHS [DEVICE]
//! (DEVICE: cpu by default; vulkan in builds with the `vulkan` feature). Prints one JSON
//! object. The first training step and the first forward pass are timed apart (on a GPU
//! they compile shaders) and left out of the throughput figures.

use std::time::Instant;

use bottleneck::data::images::{ImagePrep, ImageSet, find_images};
use bottleneck::device::device_by_name;
use bottleneck::model::{ConvAutoencoder, ConvSpec};
use bottleneck::progress::Silent;
use bottleneck::score::Loss;
use bottleneck::score::maps::error_maps;
use bottleneck::train::{TrainOptions, train_autoencoder};
use burn::prelude::*;

// The same allocator as the `bottleneck` binary.
#[global_allocator]
static GLOBAL: bottleneck::allocator::Allocator = bottleneck::allocator::Allocator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 7 && a.len() != 8 {
        return Err(
            "usage: throughput IMAGE_DIR IMAGE_SIZE CHANNELS WIDTH LATENT BATCH EPOCHS [DEVICE]"
                .into(),
        );
    }
    let n = |i: usize| a[i].parse::<usize>();
    let (size, channels, width, latent, batch, epochs) = (n(1)?, n(2)?, n(3)?, n(4)?, n(5)?, n(6)?);
    let prep = ImagePrep {
        channels,
        image_size: size,
        tiles: None,
    };
    let (set, _) = ImageSet::open(find_images(a[0].as_ref())?, prep.clone(), false, &|_| {})?;
    let device = device_by_name(a.get(7).map_or("cpu", String::as_str))?;
    // Scores `indices` in batches; the error maps come back to the host, so a GPU has
    // finished.
    let score =
        |model: &ConvAutoencoder, indices: &[usize]| -> Result<f32, Box<dyn std::error::Error>> {
            let mut sum = 0.0f32;
            for chunk in indices.chunks(batch) {
                let x = Tensor::<4>::from_data(
                    TensorData::new(set.batch(chunk)?, [chunk.len(), channels, size, size]),
                    &device,
                );
                let y = model.forward(x.clone());
                sum += error_maps(x, y, Loss::Mse)
                    .iter()
                    .map(|m| m[0] as f32)
                    .sum::<f32>();
            }
            Ok(sum)
        };
    let spec = ConvSpec::for_image(channels, size, Some(latent), Some(width))?;
    let idx: Vec<usize> = (0..set.len()).collect();
    let mut opts = TrainOptions {
        epochs,
        batch_size: batch,
        learning_rate: 1e-3,
        seed: 0,
        loss: Loss::Mse,
        early_stopping: false,
    };
    // One step on one batch: the first step's cost (shader compilation on a GPU).
    let t = Instant::now();
    let one = TrainOptions {
        epochs: 1,
        ..opts.clone()
    };
    let (model, _) = train_autoencoder(
        &spec,
        &set,
        &idx[..batch.min(idx.len())],
        &one,
        &device,
        &Silent,
    )?;
    let _ = score(&model, &idx[..batch.min(idx.len())])?;
    let first_step_s = t.elapsed().as_secs_f64();
    opts.epochs = epochs;
    let t = Instant::now();
    let (model, _) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent)?;
    let train_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = score(&model, &idx)?;
    let score_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"train_samples_per_s\": {}, \"score_samples_per_s\": {}, \"first_step_s\": {first_step_s}, \"images\": {}, \"epochs\": {epochs}}}",
        (set.len() * epochs) as f64 / train_s,
        set.len() as f64 / score_s,
        set.len()
    );
    Ok(())
}
