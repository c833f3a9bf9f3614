//! The discriminative head: a small U-Net that reads an image beside its reconstruction and
//! gives, for every pixel, the logit that the pixel is anomalous. This is DRAEM's
//! discriminative sub-network (Zavrtanik et al., ICCV 2021) at a size two CPU cores can
//! train: reading both images it learns where they differ *in a way that matters*, instead
//! of scoring every reconstruction error the same.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::denoise::{Block, unet_features, unet_layers};
use super::kernels::{Activation, conv_layer};
use crate::error::{Error, Result};

/// Shape of a discriminative head; saved in the model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSpec {
    /// Channels of the image; the head reads twice as many (image, then reconstruction).
    pub channels: usize,
    /// Channels of the full-resolution layers; each level down doubles them.
    pub width: usize,
    /// Number of stride-2 levels below full resolution.
    pub levels: usize,
}

/// What an image detector scores with: the reconstruction error alone, or a
/// discriminative head reading the input beside its reconstruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    /// The map is the reconstruction error.
    #[default]
    None,
    /// The map is a [`SegmentNet`]'s anomaly probability, trained on synthetic anomalies.
    Segment,
}

impl std::str::FromStr for Head {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Head::None),
            "segment" => Ok(Head::Segment),
            _ => Err(Error::param(
                "head",
                format!("unknown head '{s}': use none or segment"),
            )),
        }
    }
}

/// Channels of the head's full-resolution layers by default.
pub const HEAD_WIDTH: usize = 16;

impl SegmentSpec {
    /// The default head for `channels` at `image_size`: width [`HEAD_WIDTH`], three levels
    /// from 64 pixels (two below), so its reach grows with the image.
    pub fn for_image(channels: usize, image_size: usize) -> Self {
        let levels = match image_size >= 64 && image_size.is_multiple_of(8) {
            true => 3,
            false => 2,
        };
        Self {
            channels,
            width: HEAD_WIDTH,
            levels,
        }
    }
}

/// The head; its shape is described by a [`SegmentSpec`].
#[derive(Module, Debug)]
pub struct SegmentNet {
    pub(crate) down: Vec<Block>,
    pub(crate) up: Vec<ConvTranspose2d>,
    pub(crate) merge: Vec<Conv2d>,
    pub(crate) output: Conv2d,
}

impl SegmentNet {
    /// A freshly initialised head on `device`.
    pub fn new(spec: &SegmentSpec, device: &Device) -> Self {
        let (down, up, merge) = unet_layers(2 * spec.channels, spec.width, spec.levels, device);
        let output = Conv2dConfig::new([spec.width, 1], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Self {
            down,
            up,
            merge,
            output,
        }
    }

    /// Anomaly logits `[batch, 1, h, w]` of `images` beside their `reconstructions` (both
    /// `[batch, channels, h, w]`, sides a multiple of 2 to the number of levels).
    pub fn forward(&self, images: Tensor<4>, reconstructions: Tensor<4>) -> Tensor<4> {
        let x = Tensor::cat(vec![images, reconstructions], 1);
        conv_layer(
            &self.output,
            unet_features(&self.down, &self.up, &self.merge, x),
            Activation::Identity,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_have_one_channel_at_the_input_size() {
        let device = Device::flex();
        for (channels, side, levels) in [(1, 28, 2), (3, 64, 3), (1, 96, 3)] {
            let spec = SegmentSpec::for_image(channels, side);
            assert_eq!(spec.levels, levels);
            let head = SegmentNet::new(&spec, &device);
            let x = Tensor::zeros([2, channels, side, side], &device);
            assert_eq!(head.forward(x.clone(), x).dims(), [2, 1, side, side]);
        }
    }
}
