//! The convolutional autoencoder: strided convolutions down to a small grid, a dense
//! bottleneck, and transposed convolutions back up to the input size.

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{LeakyRelu, LeakyReluConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

use super::kernels::{self, Activation};
use super::spec::ConvSpec;

/// A convolutional autoencoder; its shape is fully described by a [`ConvSpec`].
#[derive(Module, Debug)]
pub struct ConvAutoencoder {
    pub(crate) encoder: Vec<Conv2d>,
    pub(crate) to_latent: Linear,
    pub(crate) from_latent: Linear,
    pub(crate) decoder: Vec<ConvTranspose2d>,
    pub(crate) output: Conv2d,
    pub(crate) activation: LeakyRelu,
}

impl ConvAutoencoder {
    /// Builds a freshly initialised network on `device` (parameters drawn from the
    /// device's seeded generator).
    pub fn new(spec: &ConvSpec, device: &Device) -> Self {
        let mut encoder = Vec::new();
        let mut in_ch = spec.channels;
        for &w in &spec.widths {
            encoder.push(
                Conv2dConfig::new([in_ch, w], [4, 4])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            in_ch = w;
        }
        let grid = spec.grid_size();
        let flat = in_ch * grid * grid;
        let to_latent = LinearConfig::new(flat, spec.latent).init(device);
        let from_latent = LinearConfig::new(spec.latent, flat).init(device);
        let mut decoder = Vec::new();
        let mut widths: Vec<usize> = spec.widths.iter().rev().copied().collect();
        widths.push(spec.widths[0]);
        for pair in widths.windows(2) {
            decoder.push(
                ConvTranspose2dConfig::new([pair[0], pair[1]], [4, 4])
                    .with_stride([2, 2])
                    .with_padding([1, 1])
                    .init(device),
            );
        }
        let output = Conv2dConfig::new([spec.widths[0], spec.channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Self {
            encoder,
            to_latent,
            from_latent,
            decoder,
            output,
            activation: LeakyReluConfig::new().with_negative_slope(0.2).init(),
        }
    }

    /// The bottleneck codes, `[batch, latent]`, of images `[batch, channels, size, size]`.
    pub fn encode(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = images;
        for conv in &self.encoder {
            x = kernels::conv_layer(conv, x, self.leaky());
        }
        let [batch, ch, h, w] = x.dims();
        self.to_latent.forward(x.reshape([batch, ch * h * w]))
    }

    /// Images `[batch, channels, size, size]` in `[0, 1]` rebuilt from codes.
    pub fn decode(&self, codes: Tensor<2>) -> Tensor<4> {
        let batch = codes.dims()[0];
        let x = self.activation.forward(self.from_latent.forward(codes));
        let ch = self.decoder[0].weight.dims()[0];
        let grid = ((x.dims()[1] / ch) as f64).sqrt().round() as usize;
        let mut x = x.reshape([batch, ch, grid, grid]);
        for deconv in &self.decoder {
            x = kernels::conv_transpose_layer(deconv, x, self.leaky());
        }
        kernels::conv_layer(&self.output, x, Activation::Sigmoid)
    }

    /// The hidden layers' activation, fused into their kernels.
    fn leaky(&self) -> Activation {
        Activation::Leaky(self.activation.negative_slope as f32)
    }

    /// Reconstruction of `images`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        self.decode(self.encode(images))
    }
}
