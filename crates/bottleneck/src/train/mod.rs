//! The training loops: seeded shuffling, Adam with cosine decay, mean loss per epoch.

pub mod dense;
pub mod noise;

pub use dense::{DenseTrainOptions, train_dense};
pub use noise::{NoiseKind, NoiseModel};

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::images::ImageSet;
use crate::error::{Error, Result};
use crate::model::{ConvAutoencoder, ConvSpec};
use crate::progress::Progress;
use crate::score::maps::{Loss, pixel_loss};

static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds a model with `build` on the autodiff device `ad` seeded with `seed`. The device's
/// generator is shared by every user of the device in this process: seeding and drawing the
/// initial weights under one lock keeps concurrent trainings (tests, a service) from
/// interleaving their draws and losing reproducibility. Parameters are drawn lazily, on
/// first use, so `build` must run the model once.
pub(crate) fn seeded<M>(ad: &Device, seed: u64, build: impl FnOnce() -> M) -> M {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    ad.seed(seed);
    build()
}

/// Learning rate at `step` of `total`: cosine decay to 5% of `base` over the run.
pub(crate) fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    base * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Settings of one training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub loss: Loss,
}

/// How long and how fast a training run goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

/// The loop every training shares: each epoch the samples at `indices` are shuffled (seeded)
/// into batches, `batch_loss` gives the loss of one batch from its sample indices (drawing
/// any noise from the same generator), and Adam takes a step at a cosine-decayed rate.
/// Reports progress and returns the trained model with the mean loss of each epoch. Fails
/// when `batch_loss` fails or the loss stops being finite.
pub(crate) fn run_epochs<M: Module>(
    mut model: M,
    indices: &[usize],
    schedule: Schedule,
    progress: &dyn Progress,
    mut batch_loss: impl FnMut(&M, &[usize], &mut ChaCha8Rng) -> Result<Tensor<1>>,
) -> Result<(M, Vec<f32>)> {
    let mut optim = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(schedule.seed);
    let mut order = indices.to_vec();
    let per_epoch = order.len().div_ceil(schedule.batch_size);
    let total = per_epoch * schedule.epochs;
    progress.stage("training", total as u64);
    let mut curve = Vec::with_capacity(schedule.epochs);
    let mut step = 0usize;
    for epoch in 0..schedule.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for chunk in order.chunks(schedule.batch_size) {
            let loss = batch_loss(&model, chunk, &mut rng)?;
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "training diverged at epoch {} (loss {value}); try a lower learning rate",
                    epoch + 1
                )));
            }
            sum += value as f64 * chunk.len() as f64;
            count += chunk.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = cosine_lr(schedule.learning_rate, step, total);
            model = optim.step(lr, model, grads);
            step += 1;
            progress.advance(1);
        }
        let mean = (sum / count as f64) as f32;
        curve.push(mean);
        progress.status(&format!(
            "epoch {}/{} loss {mean:.5}",
            epoch + 1,
            schedule.epochs
        ));
    }
    progress.finish();
    Ok((model, curve))
}

/// Number of epochs that gives about `target_steps` optimizer steps on `n` samples, from 5
/// to `max_epochs`: small sets get more passes, large sets fewer.
pub fn default_epochs(
    n: usize,
    batch_size: usize,
    target_steps: usize,
    max_epochs: usize,
) -> usize {
    let per_epoch = n.div_ceil(batch_size.max(1)).max(1);
    target_steps.div_ceil(per_epoch).clamp(5, max_epochs.max(5))
}

/// Trains a fresh autoencoder of shape `spec` on the images of `set` at `indices`, on
/// `device` (a CPU or GPU device; autodiff is added here). Returns the inference model
/// (without autodiff) and the mean loss of each epoch. Runs with the same seed give the same
/// model on CPU, including concurrent runs, as long as no other code draws from the device's
/// random generator while a run initialises its weights. Fails when a batch cannot be read
/// or the loss stops being finite.
pub fn train_autoencoder(
    spec: &ConvSpec,
    set: &ImageSet,
    indices: &[usize],
    opts: &TrainOptions,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(ConvAutoencoder, Vec<f32>)> {
    if indices.is_empty() {
        return Err(Error::Invalid("no training images".into()));
    }
    let ad = device.clone().autodiff();
    let model = seeded(&ad, opts.seed, || {
        let model = ConvAutoencoder::new(spec, &ad);
        let side = spec.image_size;
        let _ = model.forward(Tensor::zeros([1, spec.channels, side, side], &ad));
        model
    });
    let side = spec.image_size;
    let schedule = Schedule {
        epochs: opts.epochs,
        batch_size: opts.batch_size,
        learning_rate: opts.learning_rate,
        seed: opts.seed,
    };
    let (model, curve) = run_epochs(model, indices, schedule, progress, |model, chunk, _| {
        let x = Tensor::<4>::from_data(
            TensorData::new(set.batch(chunk)?, [chunk.len(), spec.channels, side, side]),
            &ad,
        );
        let y = model.forward(x.clone());
        Ok(pixel_loss(x, y, opts.loss).mean())
    })?;
    Ok((model.valid(), curve))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::{ImagePrep, find_images};
    use crate::data::synthetic::{BoardConfig, generate_boards};
    use crate::progress::Silent;

    #[test]
    fn loss_falls_and_runs_repeat_exactly() {
        let root = std::env::temp_dir().join(format!("bn-train-{}", std::process::id()));
        let cfg = BoardConfig {
            image_size: 16,
            train_good: 24,
            test_good: 0,
            test_per_defect: 0,
            seed: 2,
        };
        generate_boards(&root, &cfg).unwrap();
        let paths = find_images(&root.join("train/good")).unwrap();
        let prep = ImagePrep {
            channels: 3,
            image_size: 16,
        };
        let (set, _) = ImageSet::open(paths, prep, false, &|_| {}).unwrap();
        let spec = ConvSpec::for_image(3, 16, Some(8), Some(8)).unwrap();
        let opts = TrainOptions {
            epochs: 8,
            batch_size: 8,
            learning_rate: 3e-3,
            seed: 9,
            loss: Loss::Mse,
        };
        let idx: Vec<usize> = (0..set.len()).collect();
        let device = Device::flex();
        let (_, a) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        let (_, b) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        assert!(a[a.len() - 1] < a[0] * 0.7, "loss curve {a:?}");
        assert_eq!(a, b, "same seed, same data, same losses");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
