//! Image denoising: fit a denoiser on clean images corrupted on the fly (or on real
//! noisy/clean pairs), then clean images of any size by running the network on overlapping
//! tiles blended with tapered weights, written back in the input's pixel format.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::images::{decode, detect_channels, find_images, is_image_file};
use crate::data::planes::{Planes, save_image};
use crate::error::{Error, Result};
use crate::metrics::psnr;
use crate::model::file::{
    self, DenoiseMeta, DenoiseValidation, DenoiseWeights, FORMAT_VERSION, ModelKind,
    TrainingSummary,
};
use crate::model::{DenoiseNet, DenoiseSpec};
use crate::progress::Progress;
use crate::train::{NoiseModel, Schedule, Stopping, TrainLog, run_epochs, seeded};
use image::DynamicImage;

/// Default optimizer steps when `epochs` is not given.
const TARGET_STEPS: usize = 4500;
/// Decoded training images above this many bytes are subsampled (seeded) to fit.
const MEMORY_BUDGET_BYTES: usize = 2 << 30;
/// Held-out images used to measure the denoiser after training, at most.
const MAX_VALIDATION_IMAGES: usize = 32;
/// Tiles per forward pass when denoising.
const TILE_BATCH: usize = 8;

/// Everything `fit` can be told; [`Default`] works without tuning. As JSON (the Python
/// package's form), any field left out keeps its default and an unknown one is refused.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoiseParams {
    /// Noise added to the clean images during training (ignored with `noisy`); as text
    /// (`mixed`, `gaussian:0.1`, ...) in JSON.
    #[serde(with = "noise_text")]
    pub noise: NoiseModel,
    /// A folder of real noisy images matching the clean ones by relative path.
    pub noisy: Option<PathBuf>,
    /// Channels of the full-resolution layers.
    pub width: usize,
    /// Stride-2 levels of the network.
    pub levels: usize,
    /// Side of the training patches (smaller when the images are smaller).
    pub patch: usize,
    /// Passes over the training pixels; default: about 4,500 optimizer steps.
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Share of the images held out to measure the result (none below 5 images).
    pub validation_fraction: f64,
    /// Skip unreadable images with a warning instead of stopping.
    pub skip_bad: bool,
}

/// A noise model as the text the CLI takes.
mod noise_text {
    use super::NoiseModel;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(noise: &NoiseModel, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(noise)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NoiseModel, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl DenoiseParams {
    /// Checks the settings that do not depend on the data, before any work. Errors name
    /// the field.
    pub fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        if self.epochs == Some(0) {
            return Err(Error::param("epochs", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::param(
                "validation_fraction",
                format!(
                    "(the held-out share) must be in [0, 1), not {}",
                    self.validation_fraction
                ),
            ));
        }
        Ok(())
    }
}

impl Default for DenoiseParams {
    fn default() -> Self {
        Self {
            noise: "mixed".parse().expect("valid noise"),
            noisy: None,
            width: 32,
            levels: 2,
            patch: 48,
            epochs: None,
            // 8 patches a step learn more per patch than 16: on the photographs (sigma 0.1,
            // seed 42) 3,990 steps of 8 gave 31.32 dB in 209 s, 2,835 steps of 16 30.92 dB
            // in 287 s (bench/RESULTS.md, "Image denoising").
            batch_size: 8,
            learning_rate: 1e-3,
            seed: 42,
            validation_fraction: 0.1,
            skip_bad: false,
        }
    }
}

/// One training image at full resolution: clean planes and, for real pairs, the noisy ones.
struct Sample {
    width: usize,
    height: usize,
    clean: Vec<f32>,
    noisy: Option<Vec<f32>>,
}

/// A trained denoiser.
pub struct Denoiser {
    pub(crate) net: DenoiseNet,
    meta: DenoiseMeta,
    device: Device,
    /// Side of the tiles the image is cut into.
    tile: usize,
}

/// Default side of the tiles images are cut into when denoising.
pub const DEFAULT_TILE: usize = 256;

impl Denoiser {
    /// Trains on the clean images under `clean` (searched recursively) and measures the
    /// result on held-out images. Fails on unreadable images (unless `skip_bad`), images
    /// smaller than two network strides, unmatched noisy/clean pairs, or a diverging loss.
    pub fn fit(
        clean: &Path,
        params: &DenoiseParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        params.check()?;
        let mut paths = find_images(clean)?;
        let channels = detect_channels(&paths, params.skip_bad)?;
        // Probe the spec's arguments before reading anything.
        DenoiseSpec::new(channels, params.width, params.levels, params.patch)?;
        let per_image = |p: &Path| -> Result<usize> {
            let (w, h) = image::image_dimensions(p).map_err(|e| Error::Image {
                path: p.to_path_buf(),
                message: e.to_string(),
            })?;
            let pair = if params.noisy.is_some() { 2 } else { 1 };
            Ok(w as usize * h as usize * channels * 4 * pair)
        };
        let sizes: Vec<usize> = paths
            .iter()
            .map(|p| per_image(p).or_else(|e| if params.skip_bad { Ok(0) } else { Err(e) }))
            .collect::<Result<_>>()?;
        if sizes.iter().sum::<usize>() > MEMORY_BUDGET_BYTES {
            let mut order: Vec<usize> = (0..paths.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed ^ 0x5b5));
            let mut used = 0;
            let mut keep: Vec<usize> = order
                .into_iter()
                .filter(|&i| {
                    used += sizes[i];
                    used <= MEMORY_BUDGET_BYTES
                })
                .collect();
            keep.sort_unstable();
            progress.warn(&format!(
                "{} images are more than {} MiB decoded: training on a seeded sample of {}",
                paths.len(),
                MEMORY_BUDGET_BYTES >> 20,
                keep.len()
            ));
            paths = keep.into_iter().map(|i| paths[i].clone()).collect();
        }
        let (samples, skipped) = read_samples(clean, &paths, channels, params, progress)?;
        let mut denoiser = Self::fit_samples(
            samples,
            skipped,
            channels,
            &clean.display().to_string(),
            params,
            device,
            progress,
        )?;
        denoiser.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(denoiser)
    }

    /// Trains on clean images in memory, as [`Denoiser::fit`] does on a folder: with
    /// `noisy`, on those real noisy versions of them (same order, same sizes) instead of
    /// `params.noise` (`params.noisy`, a folder, does not apply).
    pub fn fit_images(
        clean: &[DynamicImage],
        noisy: Option<&[DynamicImage]>,
        params: &DenoiseParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        params.check()?;
        if params.noisy.is_some() {
            return Err(Error::param(
                "noisy",
                "is a folder of files; give noisy images in memory beside the clean ones",
            ));
        }
        if let Some(noisy) = noisy
            && noisy.len() != clean.len()
        {
            return Err(Error::Invalid(format!(
                "{} noisy images for {} clean ones",
                noisy.len(),
                clean.len()
            )));
        }
        let channels = crate::data::images::channels_of(clean);
        DenoiseSpec::new(channels, params.width, params.levels, params.patch)?;
        let samples = clean
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let planes = Planes::from_image(img);
                let noisy = match noisy {
                    Some(n) => {
                        let other = Planes::from_image(&n[i]);
                        if (other.width, other.height) != (planes.width, planes.height) {
                            return Err(Error::Invalid(format!(
                                "noisy image {i} is {}x{}, its clean image {}x{}",
                                other.width, other.height, planes.width, planes.height
                            )));
                        }
                        Some(other.with_channels(channels))
                    }
                    None => None,
                };
                Ok(Sample {
                    width: planes.width,
                    height: planes.height,
                    clean: planes.with_channels(channels),
                    noisy,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut denoiser =
            Self::fit_samples(samples, 0, channels, "the images", params, device, progress)?;
        denoiser.meta.training.seconds = started.elapsed().as_secs_f64();
        Ok(denoiser)
    }

    /// Trains on `samples` (read from `source`, named in errors; `skipped` left out) and
    /// measures the result on a held-out share.
    fn fit_samples(
        samples: Vec<Sample>,
        skipped: usize,
        channels: usize,
        source: &str,
        params: &DenoiseParams,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let n = samples.len();
        if n == 0 {
            return Err(Error::Invalid(format!("{source}: no images to train on")));
        }
        let min_side = samples
            .iter()
            .map(|s| s.width.min(s.height))
            .min()
            .unwrap_or(0);
        let spec = DenoiseSpec::new(
            channels,
            params.width,
            params.levels,
            params.patch.min(min_side),
        )
        .map_err(|_| {
            Error::Invalid(format!(
                "{source}: the smallest image is {min_side} pixels across; the denoiser needs \
                 at least {} (use fewer levels)",
                2 << params.levels
            ))
        })?;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed ^ 0xca1));
        let n_val = if n >= 5 {
            ((n as f64 * params.validation_fraction).round() as usize)
                .min(n - 1)
                .min(MAX_VALIDATION_IMAGES)
        } else {
            0
        };
        let (val_idx, train_idx) = order.split_at(n_val);
        let train: Vec<&Sample> = train_idx.iter().map(|&i| &samples[i]).collect();
        let held_out: Vec<&Sample> = val_idx.iter().map(|&i| &samples[i]).collect();
        let (net, log) = train_denoiser(&spec, &train, &held_out, params, device, progress)?;
        let noise = match samples.first().is_some_and(|s| s.noisy.is_some()) {
            true => "pairs".to_string(),
            false => params.noise.to_string(),
        };
        let meta = DenoiseMeta {
            format_version: FORMAT_VERSION,
            kind: ModelKind::ImageDenoiser.data(),
            task: ModelKind::ImageDenoiser.task(),
            spec,
            noise,
            validation: None,
            training: TrainingSummary {
                // Images (the early-stopping patches are cut from the held-out ones).
                train_samples: train_idx.len(),
                ..TrainingSummary::from_log(
                    log,
                    n_val,
                    skipped,
                    params.batch_size,
                    params.learning_rate,
                    params.seed,
                )
            },
        };
        let mut denoiser = Self::new(net, meta, device);
        if n_val > 0 {
            denoiser.meta.validation = Some(denoiser.validate(&held_out, params, progress));
        }
        Ok(denoiser)
    }

    /// Mean PSNR of the noisy held-out images and of their denoised versions.
    fn validate(
        &self,
        held_out: &[&Sample],
        params: &DenoiseParams,
        progress: &dyn Progress,
    ) -> DenoiseValidation {
        progress.stage("validating", held_out.len() as u64);
        let c = self.meta.spec.channels;
        let (mut before, mut after) = (0.0, 0.0);
        for (i, s) in held_out.iter().enumerate() {
            let noisy = s.noisy.clone().unwrap_or_else(|| {
                let mut v = s.clean.clone();
                let mut rng = ChaCha8Rng::seed_from_u64(params.seed ^ 0x7e57 ^ i as u64);
                params.noise.apply(&mut v, &mut rng);
                v
            });
            let out = self.run_tiled(&noisy, 1, c, s.width, s.height);
            // Identical images have infinite PSNR; cap at 100 dB so one cannot swamp the mean.
            before += psnr(&s.clean, &noisy).unwrap_or(0.0).min(100.0);
            after += psnr(&s.clean, &out).unwrap_or(0.0).min(100.0);
            progress.advance(1);
        }
        progress.finish();
        let n = held_out.len() as f64;
        DenoiseValidation {
            images: held_out.len(),
            psnr_noisy: before / n,
            psnr_denoised: after / n,
        }
    }

    /// Loads a denoiser's model file onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_denoiser(path, device)?;
        Ok(Self::new(weights.denoiser, meta, device))
    }

    /// Loads a denoiser from its model file's bytes (named `path` in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let (weights, meta) = file::load_denoiser_bytes(path, bytes, device)?;
        Ok(Self::new(weights.denoiser, meta, device))
    }

    /// A denoiser of `net` and `meta` on `device`, cutting images into default tiles.
    fn new(net: DenoiseNet, meta: DenoiseMeta, device: &Device) -> Self {
        Self {
            net,
            meta,
            device: device.clone(),
            tile: 0,
        }
        .with_tile(DEFAULT_TILE)
    }

    /// Writes the model file to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let weights = DenoiseWeights {
            denoiser: self.net.clone(),
        };
        file::save_denoiser(path, &weights, &self.meta)
    }

    /// The model file's metadata.
    pub fn meta(&self) -> &DenoiseMeta {
        &self.meta
    }

    /// Uses tiles of `side` pixels (rounded to the network's stride multiple, and at least
    /// wide enough for the blending margins on both sides).
    pub fn with_tile(mut self, side: usize) -> Self {
        let m = self.meta.spec.multiple();
        let floor = 4 * self.overlap();
        self.tile = (side / m * m).max(floor);
        self
    }

    /// Pixels by which tiles overlap (and by which the image is mirrored at its borders).
    pub(crate) fn overlap(&self) -> usize {
        self.meta
            .spec
            .context()
            .next_multiple_of(self.meta.spec.multiple())
    }

    /// The denoised colour values of `planes`, laid out like [`Planes::values`]. A grayscale
    /// model cleans each colour channel on its own; a colour model given a gray image cleans
    /// it as gray RGB and averages the result back.
    pub fn denoise_planes(&self, planes: &Planes) -> Vec<f32> {
        self.denoise_planes_until(planes, &|| false)
            .expect("never stopped")
    }

    /// [`Denoiser::denoise_planes`] that asks `stop` between batches of tiles and gives
    /// `None` as soon as it says so (a client that has gone, a deadline passed), so that
    /// abandoned work on a large image does not run to its end.
    pub fn denoise_planes_until(
        &self,
        planes: &Planes,
        stop: &dyn Fn() -> bool,
    ) -> Option<Vec<f32>> {
        let (w, h) = (planes.width, planes.height);
        Some(match (self.meta.spec.channels, planes.channels) {
            (1, c) => self.run_tiled_until(&planes.values, c, 1, w, h, stop)?,
            (3, 3) => self.run_tiled_until(&planes.values, 1, 3, w, h, stop)?,
            _ => {
                let out = self.run_tiled_until(&planes.with_channels(3), 1, 3, w, h, stop)?;
                let n = w * h;
                (0..n)
                    .map(|i| (out[i] + out[n + i] + out[2 * n + i]) / 3.0)
                    .collect()
            }
        })
    }

    /// Runs the network over `items` images of `channels` planes each (`w` by `h`,
    /// concatenated) in overlapping tiles. Each tile's output is weighted by a ramp that
    /// falls to near zero over the overlap at its edges, so no tile border shows; the image
    /// is mirrored at its own borders so that edge pixels get context too.
    fn run_tiled(
        &self,
        values: &[f32],
        items: usize,
        channels: usize,
        w: usize,
        h: usize,
    ) -> Vec<f32> {
        self.run_tiled_until(values, items, channels, w, h, &|| false)
            .expect("never stopped")
    }

    /// [`Denoiser::run_tiled`], asking `stop` before each batch of tiles.
    fn run_tiled_until(
        &self,
        values: &[f32],
        items: usize,
        channels: usize,
        w: usize,
        h: usize,
        stop: &dyn Fn() -> bool,
    ) -> Option<Vec<f32>> {
        let m = self.meta.spec.multiple();
        let o = self.overlap();
        let pw = (w + 2 * o).next_multiple_of(m);
        let ph = (h + 2 * o).next_multiple_of(m);
        let (tw, th) = (self.tile.min(pw), self.tile.min(ph));
        let xs = tile_starts(pw, tw, o, m);
        let ys = tile_starts(ph, th, o, m);
        // Zero over the outer half of the overlap (whose outputs saw the tile's zero padding),
        // rising to one across the inner half. Neighbouring tiles are at full weight wherever
        // this one is not, so every image pixel has weight at least one.
        let dead = o / 2;
        let ramp = |i: usize, side: usize| -> f32 {
            let r = (o - dead + 1) as f32;
            let from_edge = i.min(side - 1 - i) as f32 - dead as f32 + 1.0;
            (from_edge / r).clamp(0.0, 1.0)
        };
        let mut weight = vec![0.0f32; pw * ph];
        for &y0 in &ys {
            for &x0 in &xs {
                for ty in 0..th {
                    for tx in 0..tw {
                        weight[(y0 + ty) * pw + x0 + tx] += ramp(tx, tw) * ramp(ty, th);
                    }
                }
            }
        }
        let plane = w * h;
        let mut acc = vec![0.0f32; items * channels * pw * ph];
        let mut tiles = Vec::with_capacity(items * xs.len() * ys.len());
        for item in 0..items {
            for &y in &ys {
                tiles.extend(xs.iter().map(|&x| (item, x, y)));
            }
        }
        let tile_len = channels * tw * th;
        for batch in tiles.chunks(TILE_BATCH) {
            if stop() {
                return None;
            }
            let mut input = vec![0.0f32; batch.len() * tile_len];
            input
                .par_chunks_mut(tile_len)
                .zip(batch)
                .for_each(|(dst, &(item, x0, y0))| {
                    for c in 0..channels {
                        let src = &values[(item * channels + c) * plane..][..plane];
                        for ty in 0..th {
                            let sy = mirror(y0 + ty, o, h);
                            let row = &mut dst[(c * th + ty) * tw..][..tw];
                            for (tx, v) in row.iter_mut().enumerate() {
                                *v = src[sy * w + mirror(x0 + tx, o, w)];
                            }
                        }
                    }
                });
            // Built on the inference device directly: no autodiff graph, nothing retained.
            let x = Tensor::<4>::from_data(
                TensorData::new(input, [batch.len(), channels, th, tw]),
                &self.device,
            );
            let out: Vec<f32> = self
                .net
                .forward(x)
                .into_data()
                .try_into_vec()
                .expect("f32 output");
            for (k, &(item, x0, y0)) in batch.iter().enumerate() {
                for c in 0..channels {
                    let dst = &mut acc[(item * channels + c) * pw * ph..][..pw * ph];
                    let src = &out[k * tile_len + c * tw * th..][..tw * th];
                    for ty in 0..th {
                        let wy = ramp(ty, th);
                        for tx in 0..tw {
                            dst[(y0 + ty) * pw + x0 + tx] += src[ty * tw + tx] * wy * ramp(tx, tw);
                        }
                    }
                }
            }
        }
        let mut result = Vec::with_capacity(items * channels * plane);
        for p in 0..items * channels {
            let a = &acc[p * pw * ph..][..pw * ph];
            for y in 0..h {
                for x in 0..w {
                    let i = (y + o) * pw + x + o;
                    result.push((a[i] / weight[i]).clamp(0.0, 1.0));
                }
            }
        }
        Some(result)
    }

    /// Denoises every image of `input` (a file or a folder searched recursively) into
    /// `output`: a folder receiving the same relative paths, or, for a single input file, an
    /// image path. Images keep their size, channels, bit depth and format. Refuses before any
    /// work when an output would overwrite an input. Returns images written and skipped
    /// (unreadable, under `skip_bad`).
    pub fn denoise_paths(
        &self,
        input: &Path,
        output: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
    ) -> Result<(usize, usize)> {
        let jobs = output_paths(input, output, find_images, is_image_file)?;
        progress.stage("denoising", jobs.len() as u64);
        let mut written = 0;
        let mut skipped = 0;
        for (src, dst) in &jobs {
            let img = match decode(src) {
                Ok(img) => img,
                Err(e) if skip_bad => {
                    progress.warn(&format!("skipped: {e}"));
                    skipped += 1;
                    progress.advance(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let planes = Planes::from_image(&img);
            let clean = self.denoise_planes(&planes);
            save_image(&planes.to_image(&clean), dst)?;
            written += 1;
            progress.advance(1);
        }
        progress.finish();
        Ok((written, skipped))
    }
}

/// The (input, output) path pairs of a denoising run over the files `find` lists under
/// `input`. `output` is a folder, or a file path (`is_file` says by its name) when `input`
/// is one file. Inputs under the output folder are left out (they are earlier outputs).
/// Fails when an output would be one of the inputs.
pub(crate) fn output_paths(
    input: &Path,
    output: &Path,
    find: fn(&Path) -> Result<Vec<PathBuf>>,
    is_file: fn(&Path) -> bool,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let out_dir = canonical(output);
    let in_dir = canonical(input);
    if in_dir == out_dir {
        return Err(Error::Invalid(format!(
            "{}: the output would overwrite the input; choose another output folder",
            input.display()
        )));
    }
    // Earlier outputs in an output folder inside the input folder are not inputs.
    let nested = out_dir.starts_with(&in_dir);
    let paths = find(input)?;
    let jobs: Vec<(PathBuf, PathBuf)> = if input.is_file() {
        let name = input.file_name().unwrap_or_default();
        let dst = if is_file(output) && !output.is_dir() {
            output.to_path_buf()
        } else {
            output.join(name)
        };
        vec![(input.to_path_buf(), dst)]
    } else {
        paths
            .iter()
            .filter(|p| !(nested && canonical(p).starts_with(&out_dir)))
            .map(|p| {
                let rel = p.strip_prefix(input).unwrap_or(p);
                (p.clone(), output.join(rel))
            })
            .collect()
    };
    if jobs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: nothing to denoise: every file found is inside the output folder",
            input.display()
        )));
    }
    let inputs: std::collections::HashSet<PathBuf> =
        jobs.iter().map(|(src, _)| canonical(src)).collect();
    for (_, dst) in &jobs {
        // The parent may not exist yet; compare through it when it does.
        let dst_real = match (dst.parent().map(canonical), dst.file_name()) {
            (Some(parent), Some(name)) => parent.join(name),
            _ => dst.clone(),
        };
        if inputs.contains(&dst_real) {
            return Err(Error::Invalid(format!(
                "{}: an output would overwrite this input; choose another output folder",
                dst_real.display()
            )));
        }
    }
    Ok(jobs)
}

/// Start offsets of tiles of side `tile` covering `padded` pixels with overlap `2 * o`,
/// each a multiple of `m`, the last flush with the end.
fn tile_starts(padded: usize, tile: usize, o: usize, m: usize) -> Vec<usize> {
    let step = (tile.saturating_sub(2 * o) / m * m).max(m);
    let mut starts: Vec<usize> = (0..)
        .map(|k| k * step)
        .take_while(|&s| s + tile < padded)
        .collect();
    starts.push(padded - tile);
    starts
}

/// The image coordinate for padded coordinate `p` (padding `o` before the image), mirrored
/// at the borders (without repeating the edge pixel).
fn mirror(p: usize, o: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1) as isize;
    let i = (p as isize - o as isize).rem_euclid(period);
    if i < n as isize {
        i as usize
    } else {
        (period - i) as usize
    }
}

/// Decodes the training images (and their noisy partners) as `channels` planes. Returns the
/// samples and how many were skipped.
fn read_samples(
    root: &Path,
    paths: &[PathBuf],
    channels: usize,
    params: &DenoiseParams,
    progress: &dyn Progress,
) -> Result<(Vec<Sample>, usize)> {
    if let Some(noisy_root) = &params.noisy {
        let missing: Vec<String> = paths
            .iter()
            .map(|p| noisy_root.join(p.strip_prefix(root).unwrap_or(p)))
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "{} clean images have no noisy partner of the same name, e.g. {}",
                missing.len(),
                missing[..missing.len().min(3)].join(", ")
            )));
        }
    }
    progress.stage("reading images", paths.len() as u64);
    let read = |p: &PathBuf| -> Result<Sample> {
        let planes = Planes::from_image(&decode(p)?);
        let noisy = match &params.noisy {
            Some(noisy_root) => {
                let q = noisy_root.join(p.strip_prefix(root).unwrap_or(p));
                let other = Planes::from_image(&decode(&q)?);
                if (other.width, other.height) != (planes.width, planes.height) {
                    return Err(Error::Invalid(format!(
                        "{} is {}x{} but its clean partner {} is {}x{}",
                        q.display(),
                        other.width,
                        other.height,
                        p.display(),
                        planes.width,
                        planes.height
                    )));
                }
                Some(other.with_channels(channels))
            }
            None => None,
        };
        Ok(Sample {
            width: planes.width,
            height: planes.height,
            clean: planes.with_channels(channels),
            noisy,
        })
    };
    let results: Vec<Result<Sample>> = paths
        .par_iter()
        .map(|p| {
            let r = read(p);
            progress.advance(1);
            r
        })
        .collect();
    progress.finish();
    let mut samples = Vec::with_capacity(paths.len());
    let mut skipped = 0;
    for r in results {
        match r {
            Ok(s) => samples.push(s),
            Err(e @ Error::Image { .. }) if params.skip_bad => {
                progress.warn(&format!("skipped: {e}"));
                skipped += 1;
            }
            Err(e) => return Err(e),
        }
    }
    if samples.is_empty() {
        return Err(Error::Invalid(
            "every image failed to decode; nothing to train on".into(),
        ));
    }
    Ok((samples, skipped))
}

/// Trains the network on random patches of `samples` (area-weighted, flipped and rotated at
/// random), corrupted with the noise model or taken from the noisy partner. An epoch is one
/// pass worth of pixels, at most the default number of steps. Without `params.epochs`, the
/// loss on a fixed draw of patches of the `held_out` images (when there are any) is measured
/// after each epoch and the weights of its lowest are kept. Returns the inference network
/// and what the run did.
fn train_denoiser(
    spec: &DenoiseSpec,
    samples: &[&Sample],
    held_out: &[&Sample],
    params: &DenoiseParams,
    device: &Device,
    progress: &dyn Progress,
) -> Result<(DenoiseNet, TrainLog)> {
    let p = spec.patch;
    let c = spec.channels;
    // Patches are drawn in proportion to each image's number of patch positions.
    let positions = |set: &[&Sample]| -> Vec<usize> {
        set.iter()
            .scan(0usize, |acc, s| {
                *acc += (s.width - p + 1) * (s.height - p + 1);
                Some(*acc)
            })
            .collect()
    };
    let cumulative = positions(samples);
    let total = cumulative.last().copied().unwrap_or(0);
    let held_cumulative = positions(held_out);
    let per_epoch = (total / (p * p))
        .max(params.batch_size)
        .min(TARGET_STEPS * params.batch_size);
    let steps_per_epoch = per_epoch.div_ceil(params.batch_size);
    let epochs = params
        .epochs
        .unwrap_or_else(|| TARGET_STEPS.div_ceil(steps_per_epoch))
        .max(1);
    let ad = device.clone().autodiff();
    let net = seeded(&ad, params.seed, || {
        let net = DenoiseNet::new(spec, &ad);
        let _ = net.forward(Tensor::zeros([1, c, p, p], &ad));
        net
    });
    let schedule = Schedule {
        epochs,
        batch_size: params.batch_size,
        learning_rate: params.learning_rate,
        seed: params.seed,
    };
    let slots: Vec<usize> = (0..per_epoch).collect();
    // Slots from `per_epoch` on are validation patches, cut from the held-out images.
    // The schedule fits the time (4,500 steps of 8 patches: ~4.5 minutes on 2 cores), and
    // the held-out patches' squared error is what the denoiser is for: every epoch runs
    // and the lowest one's weights are kept (`Stopping::keep_lowest`).
    let stopping = (params.epochs.is_none() && !held_out.is_empty()).then(|| Stopping {
        validation: (per_epoch..per_epoch + (per_epoch / 10).clamp(params.batch_size, 1024))
            .collect(),
        keep_lowest: true,
    });
    let patch_len = c * p * p;
    let run = run_epochs(
        net,
        &slots,
        schedule,
        stopping.as_ref(),
        device,
        progress,
        |net, chunk, on, rng| {
            let (from, cumulative) = match chunk.first() {
                Some(&i) if i >= per_epoch => (held_out, &held_cumulative),
                _ => (samples, &cumulative),
            };
            let total = cumulative.last().copied().unwrap_or(0);
            let mut clean = vec![0.0f32; chunk.len() * patch_len];
            let mut noisy = vec![0.0f32; chunk.len() * patch_len];
            for (dst_clean, dst_noisy) in
                clean.chunks_mut(patch_len).zip(noisy.chunks_mut(patch_len))
            {
                let r = rng.random_range(0..total);
                let s = from[cumulative.partition_point(|&t| t <= r)];
                let x0 = rng.random_range(0..=s.width - p);
                let y0 = rng.random_range(0..=s.height - p);
                let flip: u8 = rng.random_range(0..8);
                copy_patch(&s.clean, s, c, p, (x0, y0), flip, dst_clean);
                match &s.noisy {
                    Some(n) => copy_patch(n, s, c, p, (x0, y0), flip, dst_noisy),
                    None => {
                        dst_noisy.copy_from_slice(dst_clean);
                        params.noise.apply(dst_noisy, rng);
                    }
                }
            }
            let shape = [chunk.len(), c, p, p];
            let clean = Tensor::<4>::from_data(TensorData::new(clean, shape), on);
            let noisy = Tensor::<4>::from_data(TensorData::new(noisy, shape), on);
            Ok((net.forward(noisy) - clean).powf_scalar(2.0).mean())
        },
    );
    let (net, log) = run?;
    Ok((net.valid(), log))
}

/// Copies the `p`-pixel patch at `origin` of `planes` (one sample's layout) into `dst`,
/// flipped and transposed by the three bits of `flip`.
fn copy_patch(
    planes: &[f32],
    s: &Sample,
    channels: usize,
    p: usize,
    origin: (usize, usize),
    flip: u8,
    dst: &mut [f32],
) {
    let plane = s.width * s.height;
    for c in 0..channels {
        let src = &planes[c * plane..][..plane];
        for y in 0..p {
            for x in 0..p {
                let (mut a, mut b) = if flip & 4 != 0 { (y, x) } else { (x, y) };
                if flip & 1 != 0 {
                    a = p - 1 - a;
                }
                if flip & 2 != 0 {
                    b = p - 1 - b;
                }
                dst[(c * p + y) * p + x] = src[(origin.1 + b) * s.width + origin.0 + a];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::testing::scratch;

    /// Smooth gradients with a few shapes: something a small network can learn to clean.
    fn write_clean(dir: &Path, count: usize, size: u32) {
        for i in 0..count {
            let img = image::GrayImage::from_fn(size, size, |x, y| {
                let v = 0.5
                    + 0.3 * ((x as f32 + 3.0 * i as f32) / 9.0).sin() * ((y as f32) / 13.0).cos();
                image::Luma([(v * 255.0) as u8])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }

    #[test]
    fn trains_removes_noise_and_tiles_match_one_pass() {
        let dir = scratch("denoise-fit");
        write_clean(&dir, 6, 40);
        let params = DenoiseParams {
            noise: "gaussian:0.1".parse().unwrap(),
            width: 8,
            patch: 32,
            epochs: Some(60),
            ..DenoiseParams::default()
        };
        let device = Device::flex();
        let d = Denoiser::fit(&dir, &params, &device, &Silent).unwrap();
        let v = d.meta().validation.clone().unwrap();
        assert_eq!(v.images, 1);
        // Very short training; the network must still beat its own noisy input.
        assert!(v.psnr_denoised > v.psnr_noisy, "{v:?}");
        assert_eq!(d.meta().spec.patch, 32);

        // A non-square image larger than one tile: tiles blended = one pass over it all.
        let (w, h) = (300, 170);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noisy: Vec<f32> = (0..w * h).map(|_| rng.random::<f32>()).collect();
        let d = d.with_tile(4096);
        let whole = d.run_tiled(&noisy, 1, 1, w, h);
        let d = d.with_tile(128);
        assert_eq!(d.tile, 128);
        let tiled = d.run_tiled(&noisy, 1, 1, w, h);
        // Asked between batches of tiles, a stop ends the work at once: after the first
        // batch here, with several to go.
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > 1
        };
        assert!(d.run_tiled_until(&noisy, 1, 1, w, h, &stop).is_none());
        assert_eq!(asked.get(), 2, "stopped before the second batch");
        let never = || false;
        assert_eq!(
            d.run_tiled_until(&noisy, 1, 1, w, h, &never),
            Some(tiled.clone())
        );
        let worst = whole
            .iter()
            .zip(&tiled)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let mean = whole
            .iter()
            .zip(&tiled)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / whole.len() as f32;
        // Less than one grey level of an 8-bit image anywhere, far less on average.
        assert!(
            worst < 1.0 / 255.0,
            "tiles differ from one pass by up to {worst}"
        );
        assert!(
            mean < 1e-4,
            "tiles differ from one pass by {mean} on average"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn real_pairs_train_and_unmatched_or_mis_sized_pairs_are_named() {
        let clean = scratch("denoise-pairs-clean");
        let noisy = scratch("denoise-pairs-noisy");
        write_clean(&clean, 5, 24);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for i in 0..5 {
            let img = image::open(clean.join(format!("{i}.png")))
                .unwrap()
                .to_luma8();
            let dirty = image::GrayImage::from_fn(24, 24, |x, y| {
                let v = img.get_pixel(x, y).0[0] as f32 + rng.random_range(-40.0..40.0);
                image::Luma([v.clamp(0.0, 255.0) as u8])
            });
            dirty.save(noisy.join(format!("{i}.png"))).unwrap();
        }
        let params = DenoiseParams {
            noisy: Some(noisy.clone()),
            width: 4,
            patch: 16,
            epochs: Some(2),
            ..DenoiseParams::default()
        };
        let device = Device::flex();
        let d = Denoiser::fit(&clean, &params, &device, &Silent).unwrap();
        assert_eq!(d.meta().noise, "pairs");
        assert_eq!(d.meta().validation.as_ref().unwrap().images, 1);

        image::GrayImage::new(20, 24)
            .save(noisy.join("4.png"))
            .unwrap();
        let err = Denoiser::fit(&clean, &params, &device, &Silent)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("4.png is 20x24") && err.contains("24x24"),
            "{err}"
        );
        std::fs::remove_file(noisy.join("4.png")).unwrap();
        let err = Denoiser::fit(&clean, &params, &device, &Silent)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("no noisy partner") && err.contains("4.png"),
            "{err}"
        );
        std::fs::remove_dir_all(&clean).unwrap();
        std::fs::remove_dir_all(&noisy).unwrap();
    }

    #[test]
    fn outputs_never_overwrite_inputs() {
        let dir = scratch("denoise-paths");
        write_clean(&dir, 2, 8);
        let err = output_paths(&dir, &dir, find_images, is_image_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overwrite"), "{err}");
        let one = dir.join("0.png");
        assert!(output_paths(&one, &one, find_images, is_image_file).is_err());
        // Outputs nested in the input folder are not read back as inputs.
        let out = dir.join("clean");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(&one, out.join("0.png")).unwrap();
        let jobs = output_paths(&dir, &out, find_images, is_image_file).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].1, out.join("0.png"));
        assert_eq!(
            output_paths(&one, &dir.join("x.tif"), find_images, is_image_file).unwrap()[0].1,
            dir.join("x.tif")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mirror_reflects_without_repeating_the_edge() {
        // Image of 4 pixels padded by 2: 2 1 | 0 1 2 3 | 2 1
        let got: Vec<usize> = (0..8).map(|p| mirror(p, 2, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(tile_starts(100, 40, 8, 4), vec![0, 24, 48, 60]);
        assert_eq!(tile_starts(40, 40, 8, 4), vec![0]);
    }
}
