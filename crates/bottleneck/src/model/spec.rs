//! What a model is, as data: saved in the model file's metadata so that scoring can rebuild
//! the network and its preprocessing without anything else.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Shape of a convolutional autoencoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvSpec {
    /// Input channels: 1 (grayscale) or 3 (colour).
    pub channels: usize,
    /// Side of the square input, in pixels.
    pub image_size: usize,
    /// Channels after each stride-2 convolution; their count is the depth.
    pub widths: Vec<usize>,
    /// Size of the dense bottleneck.
    pub latent: usize,
}

impl ConvSpec {
    /// The default network for `image_size`: halve the grid while it stays even and at
    /// least 4 pixels (at most 5 times), widths 32, 64, 128, 128, ...; latent grows with the
    /// number of pixels but stays a true bottleneck. `width` replaces the first width (32).
    pub fn for_image(
        channels: usize,
        image_size: usize,
        latent: Option<usize>,
        width: Option<usize>,
    ) -> Result<Self> {
        if !(channels == 1 || channels == 3) {
            return Err(Error::Invalid(format!(
                "images must have 1 or 3 channels, not {channels}"
            )));
        }
        if image_size < 8 {
            return Err(Error::param(
                "image_size",
                format!("{image_size} is too small: use at least 8"),
            ));
        }
        let mut depth = 0;
        let mut side = image_size;
        while side.is_multiple_of(2) && side / 2 >= 4 && depth < 5 {
            side /= 2;
            depth += 1;
        }
        if depth < 2 {
            return Err(Error::param(
                "image_size",
                format!(
                    "{image_size} cannot be halved twice; use a multiple of 4 such as {}",
                    (image_size / 4).max(4) * 4
                ),
            ));
        }
        let base = width.unwrap_or(32);
        if base == 0 {
            return Err(Error::param("width", "must be at least 1"));
        }
        let widths = (0..depth).map(|i| (base << i).min(4 * base)).collect();
        let latent = latent.unwrap_or(match image_size {
            0..=32 => 32,
            33..=64 => 64,
            _ => 128,
        });
        if latent == 0 {
            return Err(Error::param("latent", "must be at least 1"));
        }
        Ok(Self {
            channels,
            image_size,
            widths,
            latent,
        })
    }

    /// Side of the grid at the bottom of the encoder.
    pub fn grid_size(&self) -> usize {
        self.image_size >> self.widths.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_image_size() {
        assert_eq!(
            ConvSpec::for_image(1, 28, None, None).unwrap().widths,
            vec![32, 64]
        );
        let s = ConvSpec::for_image(3, 128, None, None).unwrap();
        assert_eq!(s.widths, vec![32, 64, 128, 128, 128]);
        assert_eq!(s.grid_size(), 4);
        assert_eq!(
            ConvSpec::for_image(3, 256, None, None).unwrap().grid_size(),
            8
        );
        assert!(ConvSpec::for_image(1, 30, None, None).is_err());
        assert!(ConvSpec::for_image(2, 64, None, None).is_err());
    }
}
