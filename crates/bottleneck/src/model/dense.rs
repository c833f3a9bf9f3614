//! The dense autoencoder for tables and audio frames, plain or variational. For tables its
//! input is the standardised row with missing cells set to 0 beside the mask of observed
//! cells, so the same network scores rows with gaps and fills them; inputs that are never
//! missing (stacked log-mel frames, spectra) go in without a mask.

use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use super::dense_kernels::{cat_columns, linear_layer, linear_stack, linear_stack_beside};
use crate::error::{Error, Result};

/// The shape of a dense autoencoder; stored in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseSpec {
    pub features: usize,
    /// Widths of the encoder's hidden layers; the decoder mirrors them.
    pub hidden: Vec<usize>,
    pub latent: usize,
    /// A variational autoencoder: the encoder gives a mean and a log-variance per code.
    pub variational: bool,
    /// Batch normalisation after each hidden layer.
    pub batch_norm: bool,
    /// The input carries the mask of observed cells beside the values (tables).
    #[serde(default = "masked")]
    pub mask_input: bool,
}

fn masked() -> bool {
    true
}

impl DenseSpec {
    /// The default shape for `features` columns: two hidden layers (the first the next power
    /// of two at or above four times the width, 64 to 512; the second half of it) and a
    /// bottleneck of a quarter of the width (2 to 32). `latent` and `hidden` override.
    pub fn for_table(
        features: usize,
        latent: Option<usize>,
        hidden: Option<Vec<usize>>,
        variational: bool,
        batch_norm: bool,
    ) -> Result<Self> {
        if features == 0 {
            return Err(Error::Invalid(
                "a table model needs at least one feature".into(),
            ));
        }
        let latent = latent.unwrap_or((features / 4).clamp(2, 32));
        if latent == 0 {
            return Err(Error::param("latent", "must be at least 1"));
        }
        let hidden = hidden.unwrap_or_else(|| {
            let first = (4 * features).next_power_of_two().clamp(64, 512);
            vec![first, first / 2]
        });
        if hidden.contains(&0) {
            return Err(Error::Invalid(
                "hidden layer widths must be at least 1".into(),
            ));
        }
        Ok(Self {
            features,
            hidden,
            latent,
            variational,
            batch_norm,
            mask_input: true,
        })
    }
}

/// A dense autoencoder; its shape is fully described by a [`DenseSpec`].
#[derive(Module, Debug)]
pub struct DenseAutoencoder {
    pub(crate) encoder: Vec<Linear>,
    pub(crate) encoder_norm: Vec<BatchNorm>,
    pub(crate) to_latent: Linear,
    pub(crate) to_log_var: Option<Linear>,
    pub(crate) decoder: Vec<Linear>,
    pub(crate) decoder_norm: Vec<BatchNorm>,
    pub(crate) output: Linear,
}

/// What the encoder gives: the code (the mean for a VAE) and, for a VAE, its log-variance.
pub struct Encoded {
    pub mean: Tensor<2>,
    pub log_var: Option<Tensor<2>>,
}

/// Slope of the activation below zero.
pub(crate) const NEGATIVE_SLOPE: f64 = 0.1;

/// Leaky ReLU written as `slope * x + (1 - slope) * relu(x)`: the same function as burn's
/// `LeakyRelu`, whose select-based kernel took 28% of a small network's training time
/// (perf, bench/throughput_tables.sh); these element-wise ops are vectorised.
fn leaky_relu(x: Tensor<2>) -> Tensor<2> {
    x.clone() * NEGATIVE_SLOPE + relu(x) * (1.0 - NEGATIVE_SLOPE)
}

/// One hidden layer with batch normalisation: the product, the normalisation, the
/// activation (without normalisation see [`hidden_stack`]).
fn normalised_layer(layer: &Linear, norm: &BatchNorm, x: Tensor<2>) -> Tensor<2> {
    leaky_relu(norm.forward(linear_layer(layer, x, None)))
}

/// Hidden layers without normalisation, each followed by the activation.
fn hidden_stack(layers: &[Linear]) -> Vec<(&Linear, Option<f64>)> {
    layers.iter().map(|l| (l, Some(NEGATIVE_SLOPE))).collect()
}

/// What the first layer reads: the values, beside the mask where there is one.
fn input_of(values: Tensor<2>, mask: Option<Tensor<2>>) -> Tensor<2> {
    match mask {
        Some(mask) => cat_columns(values, mask),
        None => values,
    }
}

/// `layers` (without normalisation) on what the first reads ([`input_of`]); the values and
/// the mask go in side by side without being copied into one tensor first.
fn stack_on_input(
    layers: &[(&Linear, Option<f64>)],
    values: Tensor<2>,
    mask: Option<Tensor<2>>,
) -> Tensor<2> {
    match mask {
        Some(mask) => linear_stack_beside(layers, values, mask),
        None => linear_stack(layers, values),
    }
}

impl DenseAutoencoder {
    /// Builds a freshly initialised network on `device`.
    pub fn new(spec: &DenseSpec, device: &Device) -> Self {
        let norms = |widths: &[usize]| {
            if spec.batch_norm {
                widths
                    .iter()
                    .map(|&w| BatchNormConfig::new(w).init(device))
                    .collect()
            } else {
                Vec::new()
            }
        };
        let mut encoder = Vec::new();
        let mut width = spec.features * if spec.mask_input { 2 } else { 1 };
        for &h in &spec.hidden {
            encoder.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        let to_latent = LinearConfig::new(width, spec.latent).init(device);
        let to_log_var = spec
            .variational
            .then(|| LinearConfig::new(width, spec.latent).init(device));
        let mut decoder = Vec::new();
        let mut width = spec.latent;
        let back: Vec<usize> = spec.hidden.iter().rev().copied().collect();
        for &h in &back {
            decoder.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        Self {
            encoder,
            encoder_norm: norms(&spec.hidden),
            to_latent,
            to_log_var,
            decoder,
            decoder_norm: norms(&back),
            output: LinearConfig::new(width, spec.features).init(device),
        }
    }

    /// Codes of rows `values` `[batch, features]` (missing cells 0) with `mask` (1 where
    /// observed), which a network built with `mask_input` needs and any other must not get.
    pub fn encode(&self, values: Tensor<2>, mask: Option<Tensor<2>>) -> Encoded {
        let x = if self.encoder_norm.is_empty() {
            stack_on_input(&hidden_stack(&self.encoder), values, mask)
        } else {
            let mut x = input_of(values, mask);
            for (layer, norm) in self.encoder.iter().zip(&self.encoder_norm) {
                x = normalised_layer(layer, norm, x);
            }
            x
        };
        Encoded {
            mean: linear_layer(&self.to_latent, x.clone(), None),
            log_var: self.to_log_var.as_ref().map(|l| linear_layer(l, x, None)),
        }
    }

    /// Rows `[batch, features]` rebuilt from codes.
    pub fn decode(&self, codes: Tensor<2>) -> Tensor<2> {
        if self.decoder_norm.is_empty() {
            let mut layers = hidden_stack(&self.decoder);
            layers.push((&self.output, None));
            return linear_stack(&layers, codes);
        }
        let mut x = codes;
        for (layer, norm) in self.decoder.iter().zip(&self.decoder_norm) {
            x = normalised_layer(layer, norm, x);
        }
        linear_layer(&self.output, x, None)
    }

    /// Reconstruction from the mean code. Without batch normalisation, on the CPU, each
    /// block of rows goes through every layer in one operation
    /// ([`super::dense_kernels::linear_stack`]).
    pub fn forward(&self, values: Tensor<2>, mask: Option<Tensor<2>>) -> Tensor<2> {
        if !(self.encoder_norm.is_empty() && self.decoder_norm.is_empty()) {
            return self.decode(self.encode(values, mask).mean);
        }
        let mut layers = hidden_stack(&self.encoder);
        layers.push((&self.to_latent, None));
        layers.extend(hidden_stack(&self.decoder));
        layers.push((&self.output, None));
        stack_on_input(&layers, values, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape_follows_the_width() {
        let s = DenseSpec::for_table(13, None, None, false, false).unwrap();
        assert_eq!((s.hidden.clone(), s.latent), (vec![64, 32], 3));
        let s = DenseSpec::for_table(784, None, None, true, false).unwrap();
        assert_eq!((s.hidden.clone(), s.latent), (vec![512, 256], 32));
        let device = Device::flex();
        let model = DenseAutoencoder::new(&s, &device);
        let x = Tensor::<2>::zeros([3, 784], &device);
        let e = model.encode(x.clone(), Some(x.clone().ones_like()));
        assert_eq!(e.mean.dims(), [3, 32]);
        assert_eq!(e.log_var.map(|t| t.dims()), Some([3, 32]));
        assert_eq!(
            model.forward(x.clone(), Some(x.ones_like())).dims(),
            [3, 784]
        );
        let plain = DenseSpec {
            mask_input: false,
            ..s
        };
        let model = DenseAutoencoder::new(&plain, &device);
        assert_eq!(model.forward(x, None).dims(), [3, 784]);
    }
}
