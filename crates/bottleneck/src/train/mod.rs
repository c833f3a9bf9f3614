//! The training loops: seeded shuffling, Adam with cosine decay, mean loss per epoch.

pub(crate) mod adam;
pub(crate) mod anomalies;
pub mod dense;
pub mod noise;

pub use dense::{DenseTrainOptions, train_dense};
pub use noise::{NoiseKind, NoiseModel};

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::images::ImageSet;
use crate::error::{Error, Result};
use crate::model::{ConvAutoencoder, ConvSpec, SegmentNet, SegmentSpec};
use crate::progress::{Member, Progress};
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

/// Stack of a thread that trains side by side with others: the main thread's 8 MiB, not
/// a spawned thread's default 2 MiB.
const RUN_STACK: usize = 8 << 20;

/// Runs `run(i, progress)` for every `i` in `0..n` (an ensemble's trainings), as many at
/// once as rayon's pool has threads, and returns the results in order. While there is a
/// run for every worker, each run has its own pool of an equal share of the threads (one
/// on the 2-core machine, where two 784-column table networks trained side by side in
/// 6.9 s against 2 x 5.3 s one after the other; two runs on 16 cores get 8 each instead
/// of leaving 14 idle); a run left over at the end uses the whole pool. Several runs
/// share one "training" stage of `steps` (all their steps), each reporting through a
/// [`Member`]; a single run reports to `progress` itself. Fails with the error of the
/// first run (by index) that failed; runs not started by then are not started.
pub(crate) fn side_by_side<T: Send>(
    n: usize,
    steps: usize,
    progress: &dyn Progress,
    run: impl Fn(usize, &dyn Progress) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    if n <= 1 {
        return (0..n).map(|i| run(i, progress)).collect();
    }
    progress.stage("training", steps as u64);
    let out = each_at_once(n, |i| run(i, &Member::new(progress, i, n)));
    progress.finish();
    out
}

/// [`side_by_side`]'s runs, without the progress.
fn each_at_once<T: Send>(n: usize, run: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let threads = rayon::current_num_threads();
    let workers = threads.min(n);
    if workers <= 1 {
        return (0..n).map(run).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<Result<T>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let work = || {
        while !failed.load(Relaxed) {
            let i = next.fetch_add(1, Relaxed);
            if i >= n {
                break;
            }
            // While there is a run for every worker, each keeps its products on its own
            // share of the threads (on a pool of one, no hand-over to other threads per
            // product); the runs left over at the end use the whole pool.
            let alone = match i < n - n % workers {
                true => rayon::ThreadPoolBuilder::new()
                    .num_threads(threads / workers)
                    .stack_size(RUN_STACK)
                    .build()
                    .ok(),
                false => None,
            };
            let result = match alone {
                Some(pool) => pool.install(|| run(i)),
                None => run(i),
            };
            failed.fetch_or(result.is_err(), Relaxed);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        }
    };
    std::thread::scope(|scope| {
        // The calling thread works too; a thread that cannot be spawned leaves its share
        // to the others.
        for _ in 1..workers {
            let _ = std::thread::Builder::new()
                .stack_size(RUN_STACK)
                .spawn_scoped(scope, work);
        }
        work();
    });
    // Runs are handed out in order, so those never started come after every failure.
    slots
        .into_iter()
        .map_while(|slot| slot.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect::<Result<Vec<T>>>()
        .and_then(|out| match out.len() == n {
            true => Ok(out),
            false => Err(Error::Invalid(format!(
                "{} of {n} training runs did not finish",
                n - out.len()
            ))),
        })
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
    /// Hold out [`VALIDATION_FRACTION`] of the images and stop once their loss stops
    /// improving, keeping the best epoch's weights (`epochs` is then the most it runs).
    pub early_stopping: bool,
}

impl TrainOptions {
    /// Optimizer steps a run of these options on `indices` takes unless it stops early.
    pub(crate) fn steps(&self, indices: &[usize], what: &str) -> Result<usize> {
        let (indices, _, schedule) = self.plan(indices, what)?;
        Ok(schedule.steps(indices.len()))
    }

    /// What a run of these options starts from: [`Stopping::plan`]'s samples and rule, and
    /// the schedule.
    pub(crate) fn plan(
        &self,
        indices: &[usize],
        what: &str,
    ) -> Result<(Vec<usize>, Option<Stopping>, Schedule)> {
        let (indices, stopping) = Stopping::plan(indices, self.early_stopping, self.seed, what)?;
        let schedule = Schedule {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            seed: self.seed,
        };
        Ok((indices, stopping, schedule))
    }
}

/// How long and how fast a training run goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Passes over the samples at most (the learning rate's cosine spans all of them).
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Schedule {
    /// Batches of one pass over `samples` samples.
    fn batches(&self, samples: usize) -> usize {
        samples.div_ceil(self.batch_size)
    }

    /// Optimizer steps of the whole schedule on `samples` samples (a run that stops early
    /// takes fewer).
    pub(crate) fn steps(&self, samples: usize) -> usize {
        self.batches(samples) * self.epochs
    }
}

/// Share of the training samples held out to decide when training has stopped improving.
pub const VALIDATION_FRACTION: f64 = 0.1;
/// Fewest samples a run needs before any are held out for early stopping: below it every
/// sample trains and the run takes all its epochs.
const MIN_SAMPLES_FOR_STOPPING: usize = 40;
/// At most this many validation samples: enough to see a plateau, cheap to evaluate.
const MAX_VALIDATION: usize = 1000;
/// Evaluations without a relative improvement of [`MIN_IMPROVEMENT`] before stopping, and
/// at least [`PATIENCE_STEPS`] optimizer steps' worth of epochs.
const PATIENCE_EPOCHS: usize = 4;
const PATIENCE_STEPS: usize = 80;
/// A validation loss counts as better only when it is this much (relative) below the best.
const MIN_IMPROVEMENT: f64 = 0.005;
/// Stopping is armed only once the validation loss has fallen to this share of its first
/// value. Autoencoders often sit on a plateau first (rebuilding the mean image) and then
/// drop: on the brick texture at 64 px the training loss stayed at 0.61 for 24 epochs, then
/// fell to 0.02. A run that never leaves its first plateau takes all its epochs, as before.
const ARM_RATIO: f64 = 0.7;
/// No run stops before this fraction (1 / divisor) of its planned steps. A small set's
/// long schedule can fall fast, arm the rule and then sit on a second plateau for longer
/// than the patience: on 300 Fashion-MNIST images (28 px) one network in five stopped at
/// epoch 16 of ~250 (best epoch 4, 3 s) while the others ran 100-123 epochs (~20 s), and a
/// single network's mean AUROC over 4 seeds was 0.894 against 0.915 with this floor
/// (`bench/calibration.sh --cases fmnist_img --sizes 300 --seeds 4`). Schedules of a few
/// epochs (Fashion-MNIST's 6,000 images, brick's tiles) cannot stop that early anyway.
const SHORTEST_RUN_DIVISOR: usize = 4;

/// Early stopping: the samples whose loss is watched after every epoch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stopping {
    pub validation: Vec<usize>,
    /// Run every planned epoch and keep the weights of the one with the lowest held-out
    /// loss, instead of stopping once the loss has not improved by [`MIN_IMPROVEMENT`]
    /// for the patience and keeping the last epoch that did. For a run whose schedule
    /// already fits its time and whose loss is the quality measure itself (a denoiser's
    /// squared error is its PSNR), where small gains are real gains. The photograph
    /// denoiser's held-out loss, from one held-out photograph, moves by ~3% from epoch to
    /// epoch while falling ~0.2% an epoch: with the rule, a run (seed 1, 8 patches a step)
    /// kept epoch 4 of 19 (30.30 dB, its last and lowest epoch 31.39 dB), and one at
    /// sigma 0.2 stopped at epoch 11 of 22 (27.81 dB).
    pub keep_lowest: bool,
}

impl Stopping {
    /// The samples at `indices` a run trains on and, with `early_stopping`, the rule that
    /// watches the ones it holds out ([`Stopping::hold_out`]). `what` names the samples in
    /// the error when there are none.
    pub(crate) fn plan(
        indices: &[usize],
        early_stopping: bool,
        seed: u64,
        what: &str,
    ) -> Result<(Vec<usize>, Option<Stopping>)> {
        if indices.is_empty() {
            return Err(Error::Invalid(format!("no training {what}")));
        }
        Ok(match early_stopping {
            true => Stopping::hold_out(indices, seed),
            false => (indices.to_vec(), None),
        })
    }

    /// Holds out [`VALIDATION_FRACTION`] of `indices` (seeded) for early stopping. Returns
    /// the samples left to train on and the stopping rule, or every sample and `None` when
    /// there are too few to spare any.
    pub(crate) fn hold_out(indices: &[usize], seed: u64) -> (Vec<usize>, Option<Stopping>) {
        if indices.len() < MIN_SAMPLES_FOR_STOPPING {
            return (indices.to_vec(), None);
        }
        let n_val = ((indices.len() as f64 * VALIDATION_FRACTION).round() as usize)
            .clamp(1, MAX_VALIDATION);
        let mut order = indices.to_vec();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5a1d));
        let (val, train) = order.split_at(n_val);
        let (mut val, mut train) = (val.to_vec(), train.to_vec());
        val.sort_unstable();
        train.sort_unstable();
        (
            train,
            Some(Stopping {
                validation: val,
                keep_lowest: false,
            }),
        )
    }
}

/// What a training run did, beside the model it returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainLog {
    /// Mean training loss of each epoch run.
    pub loss_curve: Vec<f32>,
    /// Validation loss after each epoch (empty without early stopping).
    pub validation_curve: Vec<f32>,
    /// Samples trained on and held out for early stopping.
    pub train_samples: usize,
    pub validation_samples: usize,
    /// Epochs run, and the one whose weights were kept (the last without early stopping).
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// Whether training stopped before its last epoch because validation stopped improving.
    pub stopped_early: bool,
}

/// The loop every training shares: each epoch the samples at `indices` are shuffled (seeded)
/// into batches, `batch_loss` gives the loss of one batch from its sample indices, built on
/// the device it is given (drawing any noise from the same generator), and Adam takes a
/// step at a cosine-decayed rate. Training batches are built on `device`'s autodiff
/// device. With `stopping`, the loss of its validation samples (same closure, noise drawn
/// from a generator seeded the same way for every evaluation) is measured after each epoch
/// by the inference copy of the model on `device` itself: no graph is recorded for a loss
/// that is never differentiated (on brick's tiles that cut an evaluation from ~5 s to
/// ~1 s, 11 of them a run). Once that loss has fallen well below its first value, the run
/// ends when it has not improved for a while (and not before a quarter of its steps), and
/// the weights of the best epoch are returned. Reports progress. Fails when `batch_loss`
/// fails or a loss stops being finite.
pub(crate) fn run_epochs<M: Module>(
    mut model: M,
    indices: &[usize],
    schedule: Schedule,
    stopping: Option<&Stopping>,
    device: &Device,
    progress: &dyn Progress,
    mut batch_loss: impl FnMut(&M, &[usize], &Device, &mut ChaCha8Rng) -> Result<Tensor<1>>,
) -> Result<(M, TrainLog)> {
    let ad = device.clone().autodiff();
    let mut optim = adam::FusedAdam::init();
    let mut rng = ChaCha8Rng::seed_from_u64(schedule.seed);
    let mut order = indices.to_vec();
    let per_epoch = schedule.batches(order.len());
    let total = schedule.steps(order.len());
    let patience = PATIENCE_EPOCHS.max(PATIENCE_STEPS.div_ceil(per_epoch.max(1)));
    let mut log = TrainLog {
        train_samples: indices.len(),
        validation_samples: stopping.map_or(0, |s| s.validation.len()),
        ..TrainLog::default()
    };
    // The held-out loss to beat by MIN_IMPROVEMENT and the epoch that last did; the weights
    // kept, their loss and epoch.
    let mut best: Option<(f64, usize)> = None;
    let mut kept: Option<(f64, M)> = None;
    let mut armed = false;
    progress.stage("training", total as u64);
    let mut step = 0usize;
    for epoch in 0..schedule.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for chunk in order.chunks(schedule.batch_size) {
            let loss = batch_loss(&model, chunk, &ad, &mut rng)?;
            let value = finite_loss(loss.clone().into_scalar::<f32>(), epoch)?;
            sum += value as f64 * chunk.len() as f64;
            count += chunk.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = cosine_lr(schedule.learning_rate, step, total);
            model = optim.step(lr, model, grads);
            step += 1;
            progress.advance(1);
        }
        let mean = (sum / count as f64) as f32;
        log.loss_curve.push(mean);
        log.epochs_run = epoch + 1;
        let Some(stopping) = stopping else {
            log.best_epoch = epoch + 1;
            progress.status(&format!(
                "epoch {}/{} loss {mean:.5}",
                epoch + 1,
                schedule.epochs
            ));
            continue;
        };
        // The same noise for every evaluation, so the curve moves only with the model.
        let mut val_rng = ChaCha8Rng::seed_from_u64(schedule.seed ^ 0x7a11d);
        let mut val_sum = 0.0f64;
        let inference = model.valid();
        for chunk in stopping.validation.chunks(schedule.batch_size) {
            let loss = batch_loss(&inference, chunk, device, &mut val_rng)?;
            val_sum += finite_loss(loss.into_scalar::<f32>(), epoch)? as f64 * chunk.len() as f64;
        }
        let val = val_sum / stopping.validation.len() as f64;
        log.validation_curve.push(val as f32);
        armed |= val <= ARM_RATIO * log.validation_curve[0] as f64;
        let improved = best.is_none_or(|(b, _)| val < b * (1.0 - MIN_IMPROVEMENT));
        if improved {
            best = Some((val, epoch + 1));
        }
        let lower = kept.as_ref().is_none_or(|(k, _)| val < *k);
        let keep = if stopping.keep_lowest {
            lower
        } else {
            improved
        };
        if keep {
            kept = Some((val, model.clone()));
            log.best_epoch = epoch + 1;
        }
        let last_improved = best.map_or(0, |(_, e)| e);
        progress.status(&format!(
            "epoch {}/{} loss {mean:.5} validation {val:.5} (best: epoch {})",
            epoch + 1,
            schedule.epochs,
            log.best_epoch
        ));
        let waited = step >= total / SHORTEST_RUN_DIVISOR;
        if !stopping.keep_lowest
            && armed
            && waited
            && epoch + 1 - last_improved >= patience
            && epoch + 1 < schedule.epochs
        {
            log.stopped_early = true;
            progress.status(&format!(
                "stopped at epoch {}: validation loss not better than epoch {last_improved} for \
                 {patience} epochs",
                epoch + 1,
            ));
            break;
        }
    }
    progress.finish();
    if let Some((_, kept)) = kept {
        model = kept;
    }
    Ok((model, log))
}

/// `value` when it is finite, else the error that training diverged at `epoch`.
fn finite_loss(value: f32, epoch: usize) -> Result<f32> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::Invalid(format!(
            "training diverged at epoch {} (loss {value}); try a lower learning rate",
            epoch + 1
        )))
    }
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
/// (without autodiff) and what the run did (losses per epoch, early stopping). Runs with the same seed give the same
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
) -> Result<(ConvAutoencoder, TrainLog)> {
    let (indices, stopping, schedule) = opts.plan(indices, "images")?;
    let ad = device.clone().autodiff();
    let model = seeded(&ad, opts.seed, || {
        let model = ConvAutoencoder::new(spec, &ad);
        let side = spec.image_size;
        let _ = model.forward(Tensor::zeros([1, spec.channels, side, side], &ad));
        model
    });
    let side = spec.image_size;
    let (model, log) = run_epochs(
        model,
        &indices,
        schedule,
        stopping.as_ref(),
        device,
        progress,
        |model, chunk, on, _| {
            let x = Tensor::<4>::from_data(
                TensorData::new(set.batch(chunk)?, [chunk.len(), spec.channels, side, side]),
                on,
            );
            let y = model.forward(x.clone());
            Ok(pixel_loss(x, y, opts.loss).mean())
        },
    )?;
    Ok((model.valid(), log))
}

/// An autoencoder and its discriminative head, trained as one module.
#[derive(Module, Debug)]
pub(crate) struct Discriminative {
    autoencoder: ConvAutoencoder,
    head: SegmentNet,
}

/// Focal loss (Lin et al. 2017, gamma 2, as DRAEM trains its head) of anomaly `logits`
/// against 0/1 `masks`, averaged over pixels: confident right pixels count little, so the
/// few anomalous pixels are not drowned by the many normal ones.
fn focal_loss(logits: Tensor<4>, masks: Tensor<4>) -> Tensor<1> {
    let signed = logits * (masks * 2.0 - 1.0);
    let log_right = burn::tensor::activation::log_sigmoid(signed);
    let wrong = log_right.clone().exp().neg() + 1.0;
    (wrong.powi_scalar(2) * log_right).neg().mean()
}

/// Trains a fresh autoencoder of shape `spec` and a discriminative head of shape `head` on
/// the images of `set` at `indices`, as [`train_autoencoder`] does one network: each batch
/// gets synthetic anomalies ([`anomalies::synthesise`]), the autoencoder learns to rebuild
/// the clean images from them and the head, reading each input beside its reconstruction,
/// to find the anomalies ([`focal_loss`]). Returns both inference networks and what the run
/// did. Same seed, same networks on CPU.
pub fn train_discriminative(
    spec: &ConvSpec,
    head: &SegmentSpec,
    set: &ImageSet,
    indices: &[usize],
    opts: &TrainOptions,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(ConvAutoencoder, SegmentNet, TrainLog)> {
    let (indices, stopping, schedule) = opts.plan(indices, "images")?;
    let ad = device.clone().autodiff();
    let (side, channels) = (spec.image_size, spec.channels);
    let model = seeded(&ad, opts.seed, || {
        let model = Discriminative {
            autoencoder: ConvAutoencoder::new(spec, &ad),
            head: SegmentNet::new(head, &ad),
        };
        let x = Tensor::zeros([1, channels, side, side], &ad);
        let _ = model.head.forward(x.clone(), model.autoencoder.forward(x));
        model
    });
    let (model, log) = run_epochs(
        model,
        &indices,
        schedule,
        stopping.as_ref(),
        device,
        progress,
        |model, chunk, on, rng| {
            let n = chunk.len();
            let clean = set.batch(chunk)?;
            let synthetic = anomalies::synthesise(&clean, n, channels, side, rng);
            let tensor =
                |values, c| Tensor::<4>::from_data(TensorData::new(values, [n, c, side, side]), on);
            let x = tensor(clean, channels);
            let changed = tensor(synthetic.inputs, channels);
            let masks = tensor(synthetic.masks, 1);
            let y = model.autoencoder.forward(changed.clone());
            let rebuild = pixel_loss(x, y.clone(), opts.loss).mean();
            Ok(rebuild + focal_loss(model.head.forward(changed, y), masks))
        },
    )?;
    let model = model.valid();
    Ok((model.autoencoder, model.head, log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::images::{ImagePrep, find_images};
    use crate::data::synthetic::{BoardConfig, generate_boards};
    use crate::progress::Silent;

    #[test]
    fn each_at_once_keeps_order_runs_at_once_and_stops_at_the_first_failure() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Every run waits until three have started: they can only finish together.
        let (started, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let out = pool
            .install(|| {
                each_at_once(6, |i| {
                    let now = started.fetch_add(1, SeqCst) + 1;
                    peak.fetch_max(now, SeqCst);
                    while started.load(SeqCst) < 3 {
                        std::thread::yield_now();
                    }
                    Ok(i * i)
                })
            })
            .unwrap();
        assert_eq!(out, [0, 1, 4, 9, 16, 25]);
        assert!(peak.load(SeqCst) >= 3);
        let ran = AtomicUsize::new(0);
        let e = pool
            .install(|| {
                each_at_once(40, |i| {
                    ran.fetch_add(1, SeqCst);
                    match i {
                        1 | 2 => Err(Error::Invalid(format!("run {i} failed"))),
                        _ => Ok(i),
                    }
                })
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "run 1 failed");
        assert!(ran.load(SeqCst) < 40, "{} runs", ran.load(SeqCst));
        // Without threads to spare the runs go in turn, on the calling thread.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let (caller, threads) = one.install(|| {
            let caller = std::thread::current().id();
            (caller, each_at_once(3, |_| Ok(std::thread::current().id())))
        });
        assert_eq!(threads.unwrap(), [caller; 3]);
        // Runs side by side share the threads out: 2 runs on 5 threads get 2 each, and of 3
        // runs on 2 threads the first two get one each and the last the whole pool.
        let five = rayon::ThreadPoolBuilder::new()
            .num_threads(5)
            .build()
            .unwrap();
        let shares = five.install(|| each_at_once(2, |_| Ok(rayon::current_num_threads())));
        assert_eq!(shares.unwrap(), [2, 2]);
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let shares = two.install(|| each_at_once(3, |_| Ok(rayon::current_num_threads())));
        assert_eq!(shares.unwrap(), [1, 1, 2]);
    }

    /// `n` good 16x16 boards drawn with `seed`, read into a set (their folder is removed).
    fn boards(name: &str, n: usize, seed: u64) -> ImageSet {
        let root = std::env::temp_dir().join(format!("bn-{name}-{}", std::process::id()));
        let cfg = BoardConfig {
            image_size: 16,
            train_good: n,
            test_good: 0,
            test_per_defect: 0,
            seed,
            defect_px: None,
        };
        generate_boards(&root, &cfg).unwrap();
        let paths = find_images(&root.join("train/good")).unwrap();
        let prep = ImagePrep {
            channels: 3,
            image_size: 16,
            tiles: None,
        };
        let (set, _) = ImageSet::open(paths, prep, false, &|_| {}).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        set
    }

    #[test]
    fn loss_falls_and_runs_repeat_exactly() {
        let set = boards("train", 24, 2);
        let spec = ConvSpec::for_image(3, 16, Some(8), Some(8)).unwrap();
        let opts = TrainOptions {
            epochs: 8,
            batch_size: 8,
            learning_rate: 3e-3,
            seed: 9,
            loss: Loss::Mse,
            early_stopping: false,
        };
        let idx: Vec<usize> = (0..set.len()).collect();
        let device = Device::flex();
        let (_, a) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        let (_, b) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        let curve = &a.loss_curve;
        assert!(
            curve[curve.len() - 1] < curve[0] * 0.7,
            "loss curve {curve:?}"
        );
        assert_eq!(a, b, "same seed, same data, same losses");
        assert_eq!((a.epochs_run, a.validation_samples), (8, 0));
    }

    /// The log of a run of `epochs` one-step epochs whose n-th held-out loss (from 1) is
    /// `curve(n)`; the training loss is constant and moves no weight.
    fn scripted_run(epochs: usize, keep_lowest: bool, curve: impl Fn(i32) -> f64) -> TrainLog {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let model = burn::nn::LinearConfig::new(1, 1).init(&ad);
        let schedule = Schedule {
            epochs,
            batch_size: 16,
            learning_rate: 1e-3,
            seed: 1,
        };
        let stopping = Stopping {
            validation: vec![1000],
            keep_lowest,
        };
        let evaluations = std::cell::Cell::new(0i32);
        let train: Vec<usize> = (0..16).collect();
        let (_, log) = run_epochs(
            model,
            &train,
            schedule,
            Some(&stopping),
            &device,
            &Silent,
            |model, chunk, on, _| {
                let y = model.forward(Tensor::<2>::ones([1, 1], on)).sum() * 0.0;
                if chunk[0] < 1000 {
                    return Ok(y + 1.0);
                }
                evaluations.set(evaluations.get() + 1);
                Ok(y + curve(evaluations.get()))
            },
        )
        .unwrap();
        log
    }

    #[test]
    fn no_run_stops_before_a_quarter_of_its_steps() {
        // A validation loss that falls once (arming the rule), then never improves: with
        // one step an epoch the patience is 80 epochs, so the rule alone would stop at
        // epoch 82 of 1,000; the floor holds it to a quarter of the steps.
        let log = scripted_run(1000, false, |n| if n == 1 { 1.0 } else { 0.5 });
        assert!(log.stopped_early, "{log:?}");
        assert_eq!(
            (log.best_epoch, log.epochs_run),
            (2, 1000 / SHORTEST_RUN_DIVISOR)
        );
    }

    /// The log of a run whose validation loss falls to 0.5 at epoch 2 (arming the rule),
    /// then moves between 0.5 and 0.498 (lowest first at epoch 5), never the rule's 0.5%
    /// below 0.5: the patience runs out at the floor of a quarter of the 400 one-step
    /// epochs, unless the rule only keeps the lowest.
    fn slowly_improving_run(keep_lowest: bool) -> TrainLog {
        scripted_run(400, keep_lowest, |n| match n {
            1 => 1.0,
            2 => 0.5,
            n => 0.5 - 0.001 * (n % 3) as f64,
        })
    }

    #[test]
    fn keeping_the_lowest_loss_runs_every_epoch_and_keeps_small_gains() {
        let threshold = slowly_improving_run(false);
        assert!(threshold.stopped_early, "{threshold:?}");
        assert_eq!(threshold.epochs_run, 400 / SHORTEST_RUN_DIVISOR);
        // The last epoch that gained 0.5%.
        assert_eq!(threshold.best_epoch, 2);
        let lowest = slowly_improving_run(true);
        assert!(!lowest.stopped_early, "{lowest:?}");
        assert_eq!(lowest.epochs_run, 400);
        // The first epoch of the lowest loss.
        assert_eq!(lowest.best_epoch, 5);
        assert_eq!(
            threshold.validation_curve[..],
            lowest.validation_curve[..threshold.epochs_run]
        );
    }

    #[test]
    fn early_stopping_holds_out_stops_and_keeps_the_best_weights() {
        let set = boards("stop", 60, 4);
        let spec = ConvSpec::for_image(3, 16, Some(8), Some(8)).unwrap();
        // A high rate and many epochs: validation stops improving long before the end.
        let opts = TrainOptions {
            epochs: 400,
            batch_size: 16,
            learning_rate: 1e-2,
            seed: 3,
            loss: Loss::Mse,
            early_stopping: true,
        };
        let idx: Vec<usize> = (0..set.len()).collect();
        let device = Device::flex();
        let (model, log) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        assert_eq!((log.train_samples, log.validation_samples), (54, 6));
        assert!(log.stopped_early && log.epochs_run < 400, "{log:?}");
        assert_eq!(log.validation_curve.len(), log.epochs_run);
        // Patience: 80 steps of 4 per epoch, and never before a quarter of the planned
        // 1,600 steps.
        assert_eq!(log.epochs_run - log.best_epoch, 20, "{log:?}");
        assert!(log.epochs_run >= 400 / SHORTEST_RUN_DIVISOR, "{log:?}");
        let best = log.validation_curve[log.best_epoch - 1];
        assert!(
            log.validation_curve
                .iter()
                .all(|&v| v >= best * (1.0 - 0.005))
        );
        // It stopped only after leaving its first plateau.
        assert!(best <= 0.7 * log.validation_curve[0], "{log:?}");
        // The returned weights are the best epoch's: their loss on the held-out images is
        // the one recorded for that epoch.
        let (_, stopping) = Stopping::hold_out(&idx, opts.seed);
        let val = stopping.unwrap().validation;
        let x = Tensor::<4>::from_data(
            TensorData::new(set.batch(&val).unwrap(), [6, 3, 16, 16]),
            &device,
        );
        let kept = pixel_loss(x.clone(), model.forward(x), Loss::Mse)
            .mean()
            .into_scalar::<f32>();
        assert!(
            (kept - best).abs() <= 1e-5 * best.max(1e-6),
            "kept {kept}, best {best}"
        );
        let (_, again) = train_autoencoder(&spec, &set, &idx, &opts, &device, &Silent).unwrap();
        assert_eq!(log, again, "same seed, same stop");
        // A run whose loss never leaves its first value (no learning) takes every epoch.
        let flat = TrainOptions {
            epochs: 30,
            learning_rate: 0.0,
            ..opts
        };
        let (_, log) = train_autoencoder(&spec, &set, &idx, &flat, &device, &Silent).unwrap();
        assert!(!log.stopped_early && log.epochs_run == 30, "{log:?}");
    }

    #[test]
    fn the_head_learns_where_synthetic_anomalies_are() {
        let set = boards("head", 32, 8);
        let spec = ConvSpec::for_image(3, 16, Some(8), Some(8)).unwrap();
        let head = SegmentSpec::for_image(3, 16);
        let opts = TrainOptions {
            epochs: 150,
            batch_size: 8,
            learning_rate: 3e-3,
            seed: 4,
            loss: Loss::Mse,
            early_stopping: false,
        };
        let idx: Vec<usize> = (0..set.len()).collect();
        let device = Device::flex();
        let (model, net, log) =
            train_discriminative(&spec, &head, &set, &idx, &opts, &device, &Silent).unwrap();
        let curve = &log.loss_curve;
        assert!(
            curve[curve.len() - 1] < curve[0] * 0.5,
            "loss curve {curve:?}"
        );
        // On fresh anomalies the head's probability is higher inside them than outside.
        let clean = set.batch(&idx).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let drawn = anomalies::synthesise(&clean, idx.len(), 3, 16, &mut rng);
        let x = Tensor::<4>::from_data(TensorData::new(drawn.inputs, [32, 3, 16, 16]), &device);
        let p = burn::tensor::activation::sigmoid(net.forward(x.clone(), model.forward(x)));
        let p: Vec<f32> = p.into_data().try_into_vec().unwrap();
        let mean_where = |inside: bool| {
            let v: Vec<f32> = p
                .iter()
                .zip(&drawn.masks)
                .filter(|(_, m)| (**m > 0.5) == inside)
                .map(|(p, _)| *p)
                .collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        let (inside, outside) = (mean_where(true), mean_where(false));
        assert!(inside > outside + 0.1, "inside {inside}, outside {outside}");
        let (_, _, again) =
            train_discriminative(&spec, &head, &set, &idx, &opts, &device, &Silent).unwrap();
        assert_eq!(log, again, "same seed, same run");
    }
}
