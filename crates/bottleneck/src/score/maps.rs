//! Anomaly maps: per-pixel reconstruction error (or 1 - local SSIM), smoothed, reduced to an
//! image score, resized to the input, and drawn over the image.

use std::path::Path;

use burn::prelude::*;
use image::{DynamicImage, ImageBuffer, Luma, RgbImage, imageops::FilterType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the network is trained to minimise; the anomaly map is the per-pixel version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Per-pixel squared error.
    Mse,
    /// 1 - structural similarity over 7x7 windows (Bergmann et al., AE-SSIM).
    Ssim,
}

impl std::str::FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mse" => Ok(Loss::Mse),
            "ssim" => Ok(Loss::Ssim),
            _ => Err(Error::Invalid(format!(
                "unknown loss '{s}': use mse or ssim"
            ))),
        }
    }
}

/// Side of the SSIM window.
const SSIM_WINDOW: usize = 7;

/// Local SSIM of `x` against `y`, per pixel and channel, `[b, c, h, w]`.
pub fn ssim_map(x: Tensor<4>, y: Tensor<4>) -> Tensor<4> {
    let pool = |t: Tensor<4>| crate::model::kernels::box_mean(t, SSIM_WINDOW);
    let (c1, c2) = (0.01f32 * 0.01, 0.03f32 * 0.03);
    let mu_x = pool(x.clone());
    let mu_y = pool(y.clone());
    let sxx = pool(x.clone() * x.clone()) - mu_x.clone() * mu_x.clone();
    let syy = pool(y.clone() * y.clone()) - mu_y.clone() * mu_y.clone();
    let sxy = pool(x * y) - mu_x.clone() * mu_y.clone();
    let num = (mu_x.clone() * mu_y.clone() * 2.0 + c1) * (sxy * 2.0 + c2);
    let den = (mu_x.clone() * mu_x + mu_y.clone() * mu_y + c1) * (sxx + syy + c2);
    num / den
}

/// Per-pixel loss of `recon` against `input`, `[b, c, h, w]` (what training averages).
pub fn pixel_loss(input: Tensor<4>, recon: Tensor<4>, loss: Loss) -> Tensor<4> {
    match loss {
        Loss::Mse => (recon - input).powf_scalar(2.0),
        Loss::Ssim => ssim_map(input, recon).neg() + 1.0,
    }
}

/// Per-pixel error maps averaged over channels, one `size * size` map per image, in
/// float64: scoring smooths and standardises them before rounding to float32, because the
/// per-pixel spread they are divided by is small and would magnify float32 rounding (see
/// [`ssim_error_plane`]), so that the ONNX export can give the same numbers.
pub fn error_maps(input: Tensor<4>, recon: Tensor<4>, loss: Loss) -> Vec<Vec<f64>> {
    let [b, c, h, w] = input.dims();
    if loss == Loss::Ssim {
        let values = |t: Tensor<4>| -> Vec<f32> { t.into_data().try_into_vec().expect("f32") };
        let (x, y) = (values(input), values(recon));
        let plane = h * w;
        return (0..b)
            .into_par_iter()
            .map(|i| {
                let mut sum = vec![0f64; plane];
                for ch in 0..c {
                    let at = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    let e = ssim_error_plane(&x[at.clone()], &y[at], h, w);
                    sum.iter_mut().zip(e).for_each(|(s, v)| *s += v);
                }
                sum.into_iter().map(|s| s / c as f64).collect()
            })
            .collect();
    }
    let maps = pixel_loss(input, recon, loss).mean_dim(1);
    let flat: Vec<f32> = maps
        .into_data()
        .try_into_vec::<f32>()
        .expect("maps are f32");
    flat.chunks(h * w)
        .take(b)
        .map(|c| c.iter().map(|&v| v as f64).collect())
        .collect()
}

/// Mean over the SSIM window around each pixel of an `h x w` plane, the window clipped at
/// the borders (rows first, then columns, as [`ssim_map`]).
fn box_mean(v: &[f64], h: usize, w: usize) -> Vec<f64> {
    let r = SSIM_WINDOW / 2;
    let pass = |src: &[f64], along_rows: bool| {
        let mut out = vec![0f64; src.len()];
        for y in 0..h {
            for x in 0..w {
                let (i, n) = if along_rows { (x, w) } else { (y, h) };
                let (lo, hi) = (i.saturating_sub(r), (i + r + 1).min(n));
                let at = |j: usize| if along_rows { y * w + j } else { j * w + x };
                let sum: f64 = (lo..hi).map(|j| src[at(j)]).sum();
                out[y * w + x] = sum / (hi - lo) as f64;
            }
        }
        out
    };
    pass(&pass(v, true), false)
}

/// 1 - local SSIM of one plane against its reconstruction, in float64. Scoring computes it
/// in float64 because the local variances (`E[x^2] - E[x]^2`) cancel: in float32 the
/// map of a flat region moves by 1e-4 with the order of the sums, which per-pixel
/// standardisation magnifies, so two correct implementations (this one and the ONNX
/// export) would disagree. Training keeps the float32 [`ssim_map`].
pub fn ssim_error_plane(x: &[f32], y: &[f32], h: usize, w: usize) -> Vec<f64> {
    let (c1, c2) = (0.01f64 * 0.01, 0.03f64 * 0.03);
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let product =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(p, q)| p * q).collect() };
    let (mx, my) = (box_mean(&x, h, w), box_mean(&y, h, w));
    let (exx, eyy) = (
        box_mean(&product(&x, &x), h, w),
        box_mean(&product(&y, &y), h, w),
    );
    let exy = box_mean(&product(&x, &y), h, w);
    (0..h * w)
        .map(|i| {
            let (a, b) = (mx[i], my[i]);
            let (sxx, syy, sxy) = (exx[i] - a * a, eyy[i] - b * b, exy[i] - a * b);
            let num = (2.0 * a * b + c1) * (2.0 * sxy + c2);
            let den = (a * a + b * b + c1) * (sxx + syy + c2);
            1.0 - num / den
        })
        .collect()
}

/// A normalised 1-D Gaussian kernel of radius ceil(3 sigma).
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// Gaussian smoothing of a `w x h` map (separable, edges clamped). `sigma <= 0` copies.
/// Float32 for images, float64 for anomaly maps.
pub fn smooth<T: Sample>(map: &[T], w: usize, h: usize, sigma: f32) -> Vec<T> {
    if sigma <= 0.0 {
        return map.to_vec();
    }
    let k: Vec<T> = gaussian_kernel(sigma).into_iter().map(T::from).collect();
    let rows = blur_pass(map, w, h, &k, true);
    blur_pass(&rows, w, h, &k, false)
}

/// The element types [`smooth`] works in.
pub trait Sample:
    Copy + Default + From<f32> + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
}
impl Sample for f32 {}
impl Sample for f64 {}

/// One 1-D pass of a separable blur along rows (`along_rows`) or columns, edges clamped.
fn blur_pass<T: Sample>(src: &[T], w: usize, h: usize, k: &[T], along_rows: bool) -> Vec<T> {
    let r = (k.len() / 2) as isize;
    let mut out = vec![T::default(); src.len()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = T::default();
            for (i, &kv) in k.iter().enumerate() {
                let o = i as isize - r;
                let at = if along_rows {
                    y * w + (x as isize + o).clamp(0, w as isize - 1) as usize
                } else {
                    (y as isize + o).clamp(0, h as isize - 1) as usize * w + x
                };
                acc = acc + kv * src[at];
            }
            out[y * w + x] = acc;
        }
    }
    out
}

/// How a map becomes one image score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reduction {
    Mean,
    Max,
    /// Mean of the largest `fraction` of the map's values.
    TopK {
        fraction: f32,
    },
}

impl Reduction {
    /// How many of `len` values a top-`fraction` reduction averages (at least one).
    pub fn top_count(len: usize, fraction: f32) -> usize {
        ((len as f32 * fraction).ceil() as usize).clamp(1, len)
    }

    /// The image score of `map`.
    pub fn apply(&self, map: &[f32]) -> f32 {
        match *self {
            Reduction::Mean => map.iter().sum::<f32>() / map.len() as f32,
            Reduction::Max => map.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Reduction::TopK { fraction } => {
                let k = Self::top_count(map.len(), fraction);
                let mut v = map.to_vec();
                let idx = v.len() - k;
                v.select_nth_unstable_by(idx, f32::total_cmp);
                v[idx..].iter().sum::<f32>() / k as f32
            }
        }
    }
}

impl std::str::FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Reduction::Mean),
            "max" => Ok(Reduction::Max),
            _ => match s.strip_prefix("top") {
                Some(pct) => pct
                    .trim_end_matches('%')
                    .parse::<f32>()
                    .ok()
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .map(|p| Reduction::TopK {
                        fraction: p / 100.0,
                    })
                    .ok_or_else(|| Error::Invalid(format!("bad reduction '{s}': e.g. top1"))),
                None => Err(Error::Invalid(format!(
                    "unknown reduction '{s}': use mean, max or topN (N percent)"
                ))),
            },
        }
    }
}

/// A map of `size` (width, height) resized to `width x height` (bilinear).
pub fn resize_map(map: &[f32], size: (usize, usize), width: u32, height: u32) -> Vec<f32> {
    if (width as usize, height as usize) == size {
        return map.to_vec();
    }
    let buf: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(size.0 as u32, size.1 as u32, map.to_vec())
            .expect("map has its size");
    image::imageops::resize(&buf, width, height, FilterType::Triangle).into_raw()
}

/// The jet colour map at `t` in `[0, 1]` (blue, cyan, yellow, red).
pub(crate) fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

/// `image` with `map` (same size, values divided by `scale`) drawn over it in the jet colour
/// map; weak values stay see-through so the part remains visible.
pub fn overlay(image: &DynamicImage, map: &[f32], scale: f32) -> RgbImage {
    let mut rgb = image.to_rgb8();
    let scale = if scale > 0.0 { scale } else { 1.0 };
    for (px, &v) in rgb.pixels_mut().zip(map) {
        let t = (v / scale).clamp(0.0, 1.0);
        let c = jet(t);
        let a = 0.25 + 0.5 * t;
        for (p, c) in px.0.iter_mut().zip(c) {
            *p = ((*p as f32 / 255.0 * (1.0 - a) + c * a) * 255.0).round() as u8;
        }
    }
    rgb
}

/// The path of an output about the input `rel` under `dir`: `rel` without its extension,
/// with `suffix` appended as text (`with_extension` would cut names like `pump.01`).
pub fn output_path(dir: &Path, rel: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = dir.join(rel.with_extension("")).into_os_string();
    s.push(suffix);
    s.into()
}

/// Writes a `width x height` map as a float32 `.npy` array (rows x columns).
pub fn write_npy(path: &Path, map: &[f32], width: u32, height: u32) -> Result<()> {
    let arr = ndarray::Array2::from_shape_vec((height as usize, width as usize), map.to_vec())
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    crate::io::write_atomic(path, |tmp| {
        ndarray_npy::write_npy(tmp, &arr)
            .map_err(|e| Error::Invalid(format!("{}: {e}", tmp.display())))
    })
}

/// Writes an RGB image as PNG, atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    crate::io::write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: tmp.to_path_buf(),
                message: e.to_string(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_known_answers() {
        let m = [1.0, 2.0, 3.0, 10.0];
        assert_eq!(Reduction::Mean.apply(&m), 4.0);
        assert_eq!(Reduction::Max.apply(&m), 10.0);
        assert_eq!(Reduction::TopK { fraction: 0.5 }.apply(&m), 6.5);
        assert_eq!(
            "top1".parse::<Reduction>().unwrap(),
            Reduction::TopK { fraction: 0.01 }
        );
        assert!("top0".parse::<Reduction>().is_err());
    }

    #[test]
    fn smoothing_keeps_mass_and_spreads_a_spike() {
        let mut m = vec![0.0f32; 81];
        m[40] = 1.0;
        let s = smooth(&m, 9, 9, 1.0);
        let total: f32 = s.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert!(s[40] < 0.2 && s[41] > 0.05 && s[40] > s[41]);
    }

    #[test]
    fn ssim_matches_a_direct_computation() {
        // Direct SSIM with a 7x7 box window clipped at the borders, on a 9x9 ramp pair.
        let (w, h) = (9usize, 9usize);
        let xs: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
        let ys: Vec<f32> = (0..w * h).map(|i| ((i * 17) % 7) as f32 / 6.0).collect();
        let device = Device::flex();
        let t = |v: &Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(v.clone(), [1, 1, h, w]), &device)
        };
        let got: Vec<f32> = ssim_map(t(&xs), t(&ys)).into_data().try_into_vec().unwrap();
        let (c1, c2) = (1e-4f64, 9e-4f64);
        for py in 0..h {
            for px in 0..w {
                let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) =
                    (0.0f64, 0.0, 0.0, 0.0, 0.0, 0.0);
                for yy in py.saturating_sub(3)..(py + 4).min(h) {
                    for xx in px.saturating_sub(3)..(px + 4).min(w) {
                        let (a, b) = (xs[yy * w + xx] as f64, ys[yy * w + xx] as f64);
                        n += 1.0;
                        sx += a;
                        sy += b;
                        sxx += a * a;
                        syy += b * b;
                        sxy += a * b;
                    }
                }
                let (mx, my) = (sx / n, sy / n);
                let (vx, vy, cxy) = (sxx / n - mx * mx, syy / n - my * my, sxy / n - mx * my);
                let want = ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                let g = got[py * w + px] as f64;
                assert!((g - want).abs() < 1e-3, "({px},{py}): {g} vs {want}");
            }
        }
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_drops_with_noise() {
        let device = Device::flex();
        // Fixed pseudo-random pixels (not the device's generator, which training seeds).
        let v: Vec<f32> = (0..256)
            .map(|i| ((i * 7919) % 256) as f32 / 255.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 16, 16]), &device);
        let same = ssim_map(x.clone(), x.clone()).mean().into_scalar::<f32>();
        assert!((same - 1.0).abs() < 1e-4, "{same}");
        let y = x.clone() * 0.5;
        let other = ssim_map(x, y).mean().into_scalar::<f32>();
        assert!(other < 0.95, "{other}");
    }
}
