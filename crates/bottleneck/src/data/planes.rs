//! Images at full resolution as planes of values in `[0, 1]`, remembering their pixel
//! format (8/16-bit or float, gray or colour, with or without alpha) so that an output can
//! be written back in exactly the input's format.

use std::io::BufWriter;
use std::path::Path;

use image::{ColorType, DynamicImage, ImageBuffer, ImageFormat};

use crate::error::{Error, Result};

/// A full-resolution image: colour planes (alpha kept apart, never processed) and the pixel
/// format it came in.
#[derive(Debug, Clone)]
pub struct Planes {
    pub width: usize,
    pub height: usize,
    /// Colour channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Channel-major values in `[0, 1]`, `channels * height * width`.
    pub values: Vec<f32>,
    /// The alpha plane, when the image has one.
    pub alpha: Option<Vec<f32>>,
    /// The pixel format to write back.
    pub color: ColorType,
}

impl Planes {
    /// The planes of `img`, values scaled to `[0, 1]` whatever the bit depth.
    pub fn from_image(img: &DynamicImage) -> Self {
        let color = img.color();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let channels = if color.has_color() { 3 } else { 1 };
        let mut values = Vec::with_capacity(channels * w * h);
        let rgba = img.to_rgba32f();
        let px: Vec<[f32; 4]> = rgba.pixels().map(|p| p.0).collect();
        if channels == 1 {
            // Gray images carry their value in every colour channel of the RGBA view.
            values.extend(px.iter().map(|p| p[0].clamp(0.0, 1.0)));
        } else {
            for c in 0..3 {
                values.extend(px.iter().map(|p| p[c].clamp(0.0, 1.0)));
            }
        }
        let alpha = color.has_alpha().then(|| px.iter().map(|p| p[3]).collect());
        Self {
            width: w,
            height: h,
            channels,
            values,
            alpha,
            color,
        }
    }

    /// Pixels per plane.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// The colour values as `channels` planes: gray is repeated into three, colour is
    /// averaged into one (Rec. 601 luma).
    pub fn with_channels(&self, channels: usize) -> Vec<f32> {
        let n = self.pixels();
        match (self.channels, channels) {
            (a, b) if a == b => self.values.clone(),
            (1, 3) => self.values.repeat(3),
            _ => (0..n)
                .map(|i| {
                    0.299 * self.values[i]
                        + 0.587 * self.values[n + i]
                        + 0.114 * self.values[2 * n + i]
                })
                .collect(),
        }
    }

    /// The image in its original pixel format, from colour `values` laid out like
    /// [`Planes::values`].
    pub fn to_image(&self, values: &[f32]) -> DynamicImage {
        let (w, h, n) = (self.width as u32, self.height as u32, self.pixels());
        let sample = |c: usize, i: usize| -> f32 {
            if c == 3 {
                self.alpha.as_ref().map_or(1.0, |a| a[i])
            } else if self.channels == 1 {
                values[i]
            } else {
                values[c * n + i]
            }
            .clamp(0.0, 1.0)
        };
        let gray = |i: usize| sample(0, i);
        let to8 = |v: f32| (v * 255.0).round() as u8;
        let to16 = |v: f32| (v * 65535.0).round() as u16;
        let idx = |x: u32, y: u32| y as usize * self.width + x as usize;
        match self.color {
            ColorType::L8 => DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| {
                image::Luma([to8(gray(idx(x, y)))])
            })),
            ColorType::La8 => DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::LumaA([to8(gray(i)), to8(sample(3, i))])
            })),
            ColorType::L16 => DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| {
                image::Luma([to16(gray(idx(x, y)))])
            })),
            ColorType::La16 => DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::LumaA([to16(gray(i)), to16(sample(3, i))])
            })),
            ColorType::Rgb16 => DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgb([0, 1, 2].map(|c| to16(sample(c, i))))
            })),
            ColorType::Rgba16 => DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgba([0, 1, 2, 3].map(|c| to16(sample(c, i))))
            })),
            ColorType::Rgb32F => DynamicImage::ImageRgb32F(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgb([0, 1, 2].map(|c| sample(c, i)))
            })),
            ColorType::Rgba32F => DynamicImage::ImageRgba32F(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgba([0, 1, 2, 3].map(|c| sample(c, i)))
            })),
            ColorType::Rgba8 => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgba([0, 1, 2, 3].map(|c| to8(sample(c, i))))
            })),
            // Rgb8 and any format added to the image crate later: 8-bit colour.
            _ => DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                let i = idx(x, y);
                image::Rgb([0, 1, 2].map(|c| to8(sample(c, i))))
            })),
        }
    }
}

/// Writes `img` to `path` in the format its extension names (JPEG at quality 95), through a
/// temporary sibling so that the file appears whole or not at all.
pub fn save_image(img: &DynamicImage, path: &Path) -> Result<()> {
    let format = ImageFormat::from_path(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::io::write_atomic(path, |tmp| {
        let file = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut out = BufWriter::new(file);
        write_image(img, format, &mut out).map_err(|message| Error::Image {
            path: path.to_path_buf(),
            message,
        })?;
        std::io::Write::flush(&mut out).map_err(|e| Error::io(tmp, e))
    })
}

/// `img` encoded in `format` (JPEG at quality 95), in memory.
pub fn encode_image(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    write_image(img, format, &mut out).map_err(|message| Error::Image {
        path: format!("({format:?} output)").into(),
        message,
    })?;
    Ok(out.into_inner())
}

/// Encodes `img` in `format` to `out`; the error says why it cannot be written.
fn write_image(
    img: &DynamicImage,
    format: ImageFormat,
    out: &mut (impl std::io::Write + std::io::Seek),
) -> std::result::Result<(), String> {
    let written = if format == ImageFormat::Jpeg {
        // JPEG has no 16-bit or alpha: its encoder takes 8-bit gray or RGB.
        let img = if img.color().has_color() {
            DynamicImage::ImageRgb8(img.to_rgb8())
        } else {
            DynamicImage::ImageLuma8(img.to_luma8())
        };
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(out, 95))
    } else {
        img.write_to(out, format)
    };
    written.map_err(|e| format!("cannot write: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pixel_format_round_trips() {
        let gray16 = ImageBuffer::from_fn(5, 3, |x, y| image::Luma([(x * 9000 + y * 7) as u16]));
        let rgba8 = ImageBuffer::from_fn(5, 3, |x, y| image::Rgba([x as u8 * 40, y as u8, 7, 200]));
        let rgb16 =
            ImageBuffer::from_fn(5, 3, |x, y| image::Rgb([x as u16 * 999, y as u16, 65535]));
        for img in [
            DynamicImage::ImageLuma16(gray16),
            DynamicImage::ImageRgba8(rgba8),
            DynamicImage::ImageRgb16(rgb16),
            DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(2, 2, image::LumaA([3, 250]))),
        ] {
            let p = Planes::from_image(&img);
            let back = p.to_image(&p.values);
            assert_eq!(back.color(), img.color());
            assert_eq!(back.as_bytes(), img.as_bytes());
        }
    }

    #[test]
    fn channel_conversion_and_saving_keep_format() {
        let img = DynamicImage::ImageLuma16(ImageBuffer::from_fn(4, 4, |x, _| {
            image::Luma([x as u16 * 20000])
        }));
        let p = Planes::from_image(&img);
        assert_eq!(p.channels, 1);
        let three = p.with_channels(3);
        assert_eq!(three.len(), 48);
        assert_eq!(&three[16..32], &p.values[..]);
        let dir = std::env::temp_dir().join(format!("bn-planes-{}", std::process::id()));
        let out = dir.join("a.png");
        save_image(&p.to_image(&p.values), &out).unwrap();
        let read = image::open(&out).unwrap();
        assert_eq!(read.color(), ColorType::L16);
        assert_eq!(read.as_bytes(), img.as_bytes());
        assert!(save_image(&img, &dir.join("a.unknown")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
