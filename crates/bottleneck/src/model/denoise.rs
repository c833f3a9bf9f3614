//! The denoising network: a small convolutional encoder-decoder (U-Net shaped, with additive
//! skips) that predicts the noise in a patch, so the output is the input minus that noise.
//! Fully convolutional: it runs on any patch whose sides are a multiple of
//! [`DenoiseSpec::multiple`].

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::{Activation, conv_layer, conv_transpose_layer};
use crate::error::{Error, Result};

/// Shape of a denoising network; saved in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenoiseSpec {
    /// Channels the network reads: 1 (grayscale, colour images are denoised channel by
    /// channel) or 3.
    pub channels: usize,
    /// Channels of the full-resolution layers; each level down doubles them.
    pub width: usize,
    /// Number of stride-2 levels below full resolution.
    pub levels: usize,
    /// Side of the square training patches, in pixels.
    pub patch: usize,
}

impl DenoiseSpec {
    /// The default network: width 32, two levels, 48-pixel patches (smaller when the
    /// training images are smaller). Fails on channel counts other than 1 and 3 or a zero
    /// width.
    pub fn new(channels: usize, width: usize, levels: usize, patch: usize) -> Result<Self> {
        if !(channels == 1 || channels == 3) {
            return Err(Error::Invalid(format!(
                "images must have 1 or 3 channels, not {channels}"
            )));
        }
        if width == 0 {
            return Err(Error::param("width", "must be at least 1"));
        }
        let spec = Self {
            channels,
            width,
            levels,
            patch: patch / (1 << levels) * (1 << levels),
        };
        if spec.patch < 2 * spec.multiple() {
            return Err(Error::Invalid(format!(
                "patches of {patch} pixels are too small for {levels} levels: use at least {}",
                2 * spec.multiple()
            )));
        }
        Ok(spec)
    }

    /// Patch sides must be a multiple of this (2 to the number of levels).
    pub fn multiple(&self) -> usize {
        1 << self.levels
    }

    /// Pixels on each side of a pixel that influence its output: tiles overlap by at least
    /// this much so that blended tiles match a whole-image pass.
    pub fn context(&self) -> usize {
        // Two 3x3 convolutions per level at full resolution and below, each level doubling
        // the reach, on the way down and up.
        (0..=self.levels).map(|l| 4usize << l).sum()
    }
}

/// Two 3x3 convolutions at one resolution.
#[derive(Module, Debug)]
pub(crate) struct Block {
    pub(crate) first: Conv2d,
    pub(crate) second: Conv2d,
}

impl Block {
    fn new(in_ch: usize, out_ch: usize, stride: usize, device: &Device) -> Self {
        let conv = |i, s| {
            Conv2dConfig::new([i, out_ch], [3, 3])
                .with_stride([s, s])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            first: conv(in_ch, stride),
            second: conv(out_ch, 1),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = conv_layer(&self.first, x, Activation::Relu);
        conv_layer(&self.second, x, Activation::Relu)
    }
}

/// The denoiser; its shape is described by a [`DenoiseSpec`].
#[derive(Module, Debug)]
pub struct DenoiseNet {
    /// Full resolution first, then one block per level (the first convolution of each
    /// halves the grid).
    pub(crate) down: Vec<Block>,
    /// From the deepest level up: a 2x2 transposed convolution, then a 3x3 convolution
    /// after adding the skip from the level above.
    pub(crate) up: Vec<ConvTranspose2d>,
    pub(crate) merge: Vec<Conv2d>,
    pub(crate) output: Conv2d,
}

impl DenoiseNet {
    /// A freshly initialised network on `device`.
    pub fn new(spec: &DenoiseSpec, device: &Device) -> Self {
        let (down, up, merge) = unet_layers(spec.channels, spec.width, spec.levels, device);
        let output = Conv2dConfig::new([spec.width, spec.channels], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Self {
            down,
            up,
            merge,
            output,
        }
    }

    /// The denoised patches `[batch, channels, h, w]` of `noisy` (values in `[0, 1]`; h and
    /// w multiples of [`DenoiseSpec::multiple`]). Not clamped, so training sees the raw
    /// error.
    pub fn forward(&self, noisy: Tensor<4>) -> Tensor<4> {
        let x = unet_features(&self.down, &self.up, &self.merge, noisy.clone());
        noisy - conv_layer(&self.output, x, Activation::Identity)
    }
}

/// The layers of a U-Net with additive skips reading `channels`: full resolution first, then
/// `levels` halvings, each doubling `width`; on the way up a 2x2 transposed convolution and
/// a 3x3 convolution after adding the skip.
pub(crate) type UnetLayers = (Vec<Block>, Vec<ConvTranspose2d>, Vec<Conv2d>);

/// Freshly initialised [`UnetLayers`] on `device`.
pub(crate) fn unet_layers(
    channels: usize,
    width: usize,
    levels: usize,
    device: &Device,
) -> UnetLayers {
    let width = |level: usize| width << level;
    let mut down = vec![Block::new(channels, width(0), 1, device)];
    for level in 1..=levels {
        down.push(Block::new(width(level - 1), width(level), 2, device));
    }
    let mut up = Vec::new();
    let mut merge = Vec::new();
    for level in (1..=levels).rev() {
        up.push(
            ConvTranspose2dConfig::new([width(level), width(level - 1)], [2, 2])
                .with_stride([2, 2])
                .init(device),
        );
        merge.push(
            Conv2dConfig::new([width(level - 1), width(level - 1)], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        );
    }
    (down, up, merge)
}

/// The full-resolution features (`width` channels) of a U-Net's layers on `x`.
pub(crate) fn unet_features(
    down: &[Block],
    up: &[ConvTranspose2d],
    merge: &[Conv2d],
    x: Tensor<4>,
) -> Tensor<4> {
    let mut skips = Vec::with_capacity(down.len());
    let mut x = x;
    for block in down {
        x = block.forward(x);
        skips.push(x.clone());
    }
    skips.pop();
    for (up, merge) in up.iter().zip(merge) {
        let skip = skips.pop().expect("one skip per level");
        let x_up = conv_transpose_layer(up, x, Activation::Relu);
        x = conv_layer(merge, x_up + skip, Activation::Relu);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_has_the_input_shape_at_any_multiple() {
        let spec = DenoiseSpec::new(3, 4, 2, 48).unwrap();
        let device = Device::flex();
        let net = DenoiseNet::new(&spec, &device);
        let y = net.forward(Tensor::zeros([2, 3, 20, 12], &device));
        assert_eq!(y.dims(), [2, 3, 20, 12]);
        assert_eq!(DenoiseSpec::new(1, 8, 2, 30).unwrap().patch, 28);
        assert!(DenoiseSpec::new(1, 8, 3, 12).is_err());
        assert!(DenoiseSpec::new(2, 8, 2, 48).is_err());
    }
}
