//! Training the dense autoencoder on table rows with gaps: the loss covers observed cells
//! only, and a share of the observed cells is hidden from the input each step (masking
//! noise) so the network learns to rebuild cells it does not see, which is what imputation
//! asks of it and makes detection less prone to copying its input.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Schedule, Stopping, TrainLog, run_epochs, seeded};
use crate::error::Result;
use crate::model::{DenseAutoencoder, DenseSpec};
use crate::progress::Progress;

/// Settings of one training run of a dense autoencoder.
#[derive(Debug, Clone)]
pub struct DenseTrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Share of the observed cells hidden from the input at each step.
    pub mask_rate: f32,
    /// Weight of the KL term of a variational model.
    pub kl_weight: f32,
    /// Hold out a share of the samples and stop once their loss stops improving (see
    /// [`super::TrainOptions::early_stopping`]).
    pub early_stopping: bool,
}

impl DenseTrainOptions {
    /// What a run of these options starts from: [`Stopping::plan`]'s samples and rule, and
    /// the schedule.
    pub(crate) fn plan(
        &self,
        indices: &[usize],
    ) -> Result<(Vec<usize>, Option<Stopping>, Schedule)> {
        let (indices, stopping) = Stopping::plan(indices, self.early_stopping, self.seed, "rows")?;
        let schedule = Schedule {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            seed: self.seed,
        };
        Ok((indices, stopping, schedule))
    }

    /// Optimizer steps a run of these options on `indices` takes unless it stops early.
    pub(crate) fn steps(&self, indices: &[usize]) -> Result<usize> {
        let (indices, _, schedule) = self.plan(indices)?;
        Ok(schedule.steps(indices.len()))
    }
}

/// A batch as the network takes it: input values (missing and hidden cells at 0), the mask
/// of cells shown to the network (for a network with a mask input), the weight of each cell
/// in the loss (`None`: every cell weighs 1) and the targets.
pub(crate) struct Batch {
    pub shown_values: Vec<f32>,
    pub shown: Option<Vec<f32>>,
    pub observed: Option<Vec<f32>>,
    pub targets: Vec<f32>,
}

/// Builds a batch from `rows` (standardised, NaN missing) at `indices`, hiding each observed
/// cell with probability `mask_rate` (never every observed cell of a row).
pub(crate) fn make_batch(
    rows: &[f32],
    d: usize,
    indices: &[usize],
    mask_rate: f32,
    rng: &mut ChaCha8Rng,
) -> Batch {
    // Hidden cells are what imputation is judged on: weigh them so that in total they count
    // as much as the shown ones.
    let hiding = mask_rate > 0.0;
    let hidden_weight = if hiding {
        (1.0 - mask_rate) / mask_rate
    } else {
        1.0
    };
    let n = indices.len() * d;
    let mut shown_values = vec![0.0f32; n];
    let mut shown = vec![0.0f32; n];
    let mut observed = vec![0.0f32; n];
    let mut targets = vec![0.0f32; n];
    let mut draws = vec![0.0f32; if hiding { d } else { 0 }];
    for (k, &i) in indices.iter().enumerate() {
        let row = &rows[i * d..(i + 1) * d];
        let out = k * d..(k + 1) * d;
        // One draw per observed cell, in column order (the draws of the cell-by-cell loop
        // this replaces, so batches and models stay bit for bit what they were), taken in a
        // loop of their own: drawn inside the cells' loop they kept it from being compiled
        // to plain selects, and building batches was ~7% of a 784-feature table network's
        // training time on one core while the other waited.
        let seen_count = if hiding {
            row.iter().filter(|v| !v.is_nan()).count()
        } else {
            0
        };
        for draw in &mut draws[..seen_count] {
            *draw = rng.random::<f32>();
        }
        let (sv, sh) = (&mut shown_values[out.clone()], &mut shown[out.clone()]);
        let (ob, tg) = (&mut observed[out.clone()], &mut targets[out]);
        if hiding && seen_count == d {
            // Every cell observed and drawn for: draw j is cell j's.
            let cells = row.iter().zip(&draws[..d]);
            let outs = (sv.iter_mut().zip(sh.iter_mut())).zip(ob.iter_mut().zip(tg.iter_mut()));
            for ((&v, &r), ((sv, sh), (ob, tg))) in cells.zip(outs) {
                let keep = r >= mask_rate;
                *ob = if keep { 1.0 } else { hidden_weight };
                *tg = v;
                *sh = keep as u8 as f32;
                *sv = if keep { v } else { 0.0 };
            }
        } else {
            let mut next = draws[..seen_count].iter();
            for j in 0..d {
                let v = row[j];
                let seen = !v.is_nan();
                let keep = seen && (!hiding || next.next().is_some_and(|&r| r >= mask_rate));
                ob[j] = if seen && !keep {
                    hidden_weight
                } else {
                    seen as u8 as f32
                };
                tg[j] = if seen { v } else { 0.0 };
                sh[j] = keep as u8 as f32;
                sv[j] = if keep { v } else { 0.0 };
            }
        }
        if sh.iter().all(|&m| m == 0.0) {
            // Show one observed cell back so the row is never blank to the network.
            if let Some(j) = row.iter().position(|v| !v.is_nan()) {
                sh[j] = 1.0;
                ob[j] = 1.0;
                sv[j] = row[j];
            }
        }
    }
    Batch {
        shown_values,
        shown: Some(shown),
        observed: Some(observed),
        targets,
    }
}

/// Trains a fresh dense autoencoder of shape `spec` on `rows` (`n x spec.features`,
/// standardised, NaN where missing) at `indices`, on `device`. Returns the inference model
/// and what the run did. Same seed, same data: same model on CPU. Fails when the
/// loss stops being finite.
pub fn train_dense(
    spec: &DenseSpec,
    rows: &[f32],
    indices: &[usize],
    opts: &DenseTrainOptions,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(DenseAutoencoder, TrainLog)> {
    let d = spec.features;
    train_dense_batches(
        spec,
        indices,
        opts,
        DenseOutput::Linear,
        device,
        progress,
        |chunk, rng| make_batch(rows, d, chunk, opts.mask_rate, rng),
    )
}

/// What the network's output is compared with the targets as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseOutput {
    /// As it is (values).
    Linear,
    /// Through a logistic function (masks in [0, 1]).
    Sigmoid,
}

/// Trains a fresh dense autoencoder of shape `spec` on the samples at `indices`, each batch
/// made by `make` from its sample indices (drawing any noise from the generator it is
/// given; a sample may give any number of rows). The loss is the weighted mean squared error of the output (or its `output`
/// transform) against the batch's targets, plus the KL term of a variational model.
pub(crate) fn train_dense_batches(
    spec: &DenseSpec,
    indices: &[usize],
    opts: &DenseTrainOptions,
    output: DenseOutput,
    device: &Device,
    progress: &dyn Progress,
    mut make: impl FnMut(&[usize], &mut ChaCha8Rng) -> Batch,
) -> Result<(DenseAutoencoder, TrainLog)> {
    let (indices, stopping, schedule) = opts.plan(indices)?;
    let d = spec.features;
    let ad = device.clone().autodiff();
    let model = seeded(&ad, opts.seed, || {
        let model = DenseAutoencoder::new(spec, &ad);
        let x = Tensor::<2>::zeros([2, d], &ad);
        let _ = model.forward(x.clone(), spec.mask_input.then_some(x));
        model
    });
    let stopping = stopping.as_ref();
    let (model, log) = run_epochs(
        model,
        &indices,
        schedule,
        stopping,
        device,
        progress,
        |model, chunk, on, rng| {
            let b = make(chunk, rng);
            // A sample may give several rows (a recording's frames): count them.
            let m = b.targets.len() / d;
            let t = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [m, d]), on);
            let targets = t(b.targets);
            let enc = model.encode(t(b.shown_values), b.shown.map(t));
            let (code, kl) = match enc.log_var {
                Some(log_var) => {
                    let eps: Vec<f32> = (0..m * spec.latent)
                        .map(|_| StandardNormal.sample(rng))
                        .collect();
                    let eps = Tensor::<2>::from_data(TensorData::new(eps, [m, spec.latent]), on);
                    let std = (log_var.clone() * 0.5).exp();
                    let kl =
                        (log_var.clone().exp() + enc.mean.clone().powi_scalar(2) - log_var - 1.0)
                            .sum()
                            * 0.5;
                    (enc.mean + std * eps, Some(kl))
                }
                None => (enc.mean, None),
            };
            let y = match output {
                DenseOutput::Linear => model.decode(code),
                DenseOutput::Sigmoid => sigmoid(model.decode(code)),
            };
            let squared = (y - targets).powi_scalar(2);
            let (err, cells) = match b.observed {
                Some(w) => {
                    let w = t(w);
                    ((squared * w.clone()).sum(), Some(w.sum()))
                }
                None => (squared.sum(), None),
            };
            let loss = match kl {
                Some(kl) => err * 0.5 + kl * opts.kl_weight,
                None => err,
            };
            Ok(match cells {
                // A batch whose every weight is 0 (silent crops) adds nothing rather than 0 / 0.
                Some(cells) => loss / cells.clamp_min(1e-6),
                None => loss / (m * d) as f32,
            })
        },
    )?;
    Ok((model.valid(), log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use rand::SeedableRng;

    /// Each observed cell takes one draw, in row and column order, and is hidden where the
    /// draw falls under the rate: on rows without gaps (drawn in one run) and with gaps
    /// (missing cells take no draw), as a cell-by-cell reference does it.
    #[test]
    fn batches_take_one_draw_per_observed_cell_in_order() {
        let d = 40;
        let mut values = ChaCha8Rng::seed_from_u64(4);
        let rows: Vec<f32> = (0..3 * d)
            .map(|i| match i {
                _ if i >= d && i % 7 == 0 => f32::NAN,
                _ => values.random_range(-1.0..1.0),
            })
            .collect();
        let order = [2, 0, 1, 0];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let b = make_batch(&rows, d, &order, 0.3, &mut rng);
        let mut reference = ChaCha8Rng::seed_from_u64(9);
        let mut hidden = 0;
        for (k, &i) in order.iter().enumerate() {
            for j in 0..d {
                let (v, at) = (rows[i * d + j], k * d + j);
                let keep = !v.is_nan() && reference.random::<f32>() >= 0.3;
                hidden += (!v.is_nan() && !keep) as usize;
                let shown = b.shown.as_ref().unwrap()[at];
                assert_eq!(shown, keep as u8 as f32, "row {i} column {j}");
                assert_eq!(b.shown_values[at], if keep { v } else { 0.0 });
                assert_eq!(b.targets[at], if v.is_nan() { 0.0 } else { v });
            }
        }
        assert!(hidden > 0, "a rate of 0.3 hid nothing");
        // Both generators are at the same point afterwards.
        assert_eq!(rng.random::<u64>(), reference.random::<u64>());
    }

    #[test]
    fn batches_hide_cells_but_never_a_whole_row() {
        let rows = vec![1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let b = make_batch(&rows, 3, &[0, 1], 0.99, &mut rng);
        // Hidden cells weigh (1 - 0.99) / 0.99 each, shown ones 1, missing ones 0.
        let (shown, observed) = (b.shown.unwrap(), b.observed.unwrap());
        assert_eq!(observed[1], 0.0);
        assert!(observed.iter().enumerate().all(|(i, &w)| i == 1
            || (shown[i] == 1.0 && w == 1.0)
            || (shown[i] == 0.0 && (w - 0.01 / 0.99).abs() < 1e-6)));
        assert_eq!(b.targets[1], 0.0);
        for r in 0..2 {
            assert!(shown[r * 3..(r + 1) * 3].iter().sum::<f32>() >= 1.0);
        }
        let b = make_batch(&rows, 3, &[0], 0.0, &mut rng);
        assert_eq!(b.shown, Some(vec![1.0, 0.0, 1.0]));
        assert_eq!(b.shown_values, vec![1.0, 0.0, 3.0]);
    }

    #[test]
    fn dense_and_variational_losses_fall_and_repeat() {
        // Rows on a 2-D plane in 6-D, with 10% of cells missing.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut rows = Vec::new();
        for _ in 0..200 {
            let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            for v in [a, b, a + b, a - b, 2.0 * a, -b] {
                rows.push(if rng.random::<f32>() < 0.1 {
                    f32::NAN
                } else {
                    v
                });
            }
        }
        let idx: Vec<usize> = (0..200).collect();
        let device = Device::flex();
        for variational in [false, true] {
            let spec =
                DenseSpec::for_table(6, Some(2), Some(vec![16]), variational, false).unwrap();
            let opts = DenseTrainOptions {
                epochs: 30,
                batch_size: 32,
                learning_rate: 3e-3,
                seed: 5,
                mask_rate: 0.2,
                kl_weight: 1.0,
                early_stopping: false,
            };
            let (_, a) = train_dense(&spec, &rows, &idx, &opts, &device, &Silent).unwrap();
            let (_, b) = train_dense(&spec, &rows, &idx, &opts, &device, &Silent).unwrap();
            // The variational loss keeps its KL term: it cannot fall as far.
            let target = if variational { 0.9 } else { 0.5 };
            let a = a.loss_curve;
            assert!(a[a.len() - 1] < a[0] * target, "{variational}: {a:?}");
            assert_eq!(a, b.loss_curve);
        }
    }
}
