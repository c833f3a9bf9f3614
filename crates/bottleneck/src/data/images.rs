//! Image sources: folders searched recursively, decoding of 8/16-bit grayscale and colour
//! files, and the fixed preprocessing (channels, square resize) stored in the model file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{DynamicImage, imageops::FilterType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::tiles::{self, ScaledImage, Tiles};
use crate::error::{Error, Result};

/// File endings read as images (compared without case).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// Whether `path` ends in one of [`IMAGE_EXTENSIONS`].
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every image file below `dir`, sorted by path so runs are reproducible. A single image
/// file is returned on its own. Fails when the path is missing or holds no images.
pub fn find_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Err(Error::Missing {
            path: dir.to_path_buf(),
        });
    }
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut found = Vec::new();
    // Folders are followed through symlinks (two links to one folder list it twice), but
    // never into a folder that is already on the way down, so a link loop cannot recurse
    // forever. Each entry carries the real paths of the folders above it.
    let mut stack = vec![(dir.to_path_buf(), Vec::<PathBuf>::new())];
    while let Some((d, mut above)) = stack.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| Error::io(&d, e))?;
        if above.contains(&real) {
            continue;
        }
        above.push(real);
        let entries = std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                stack.push((path, above.clone()));
            } else if is_image_file(&path) {
                found.push(path);
            }
        }
    }
    if found.is_empty() {
        return Err(Error::NoImages {
            path: dir.to_path_buf(),
        });
    }
    found.sort();
    Ok(found)
}

/// The folder of training images for `data`: `data/train/good` for a root in the MVTec AD
/// layout, `data` itself otherwise.
pub fn training_folder(data: &Path) -> PathBuf {
    let good = data.join("train").join("good");
    if good.is_dir() {
        good
    } else {
        data.to_path_buf()
    }
}

/// Most pixels of one image decoded from a file unless raised with [`set_max_pixels`]: 64
/// megapixels (8000 x 8000), about 1 GB at the peak of decoding and converting one image.
/// Checked in the file's header before decoding, since a small compressed file can decode
/// to gigabytes (a 380 KB PNG of 400 megapixels took 2 GB).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the most pixels one image may have for this process (see [`DEFAULT_MAX_PIXELS`]).
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels.max(1), Ordering::Relaxed);
}

/// The most pixels one image may have.
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

/// Bytes one pixel can take at the peak of decoding and converting (the decoded image and
/// its float copy, four channels).
pub const PEAK_BYTES_PER_PIXEL: u64 = 20;

/// Width and height of the image at `path` from its header, without decoding. Fails naming
/// the file when it is not an image or has more pixels than [`max_pixels`].
pub fn dimensions(path: &Path) -> Result<(u32, u32)> {
    let bad = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let (w, h) = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_dimensions()
        .map_err(|e| bad(e.to_string()))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels() {
        return Err(bad(format!(
            "{w}x{h} is {:.1} megapixels, above the limit of {:.1} megapixels per image \
             (max_pixels)",
            pixels as f64 / 1e6,
            max_pixels() as f64 / 1e6
        )));
    }
    Ok((w, h))
}

/// Decodes the image at `path`, after checking its size in the header ([`dimensions`]).
/// Fails naming the file when it cannot be read or decoded, or is too large.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    dimensions(path)?;
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    // The header checked above could still differ from what the decoder finds (a
    // multi-frame TIFF): the decoder holds to the same bound.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels().saturating_mul(8));
    reader.limits(limits);
    reader.decode().map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `paths` cut into batches of at most `max_images` whose images together stay under
/// `budget` bytes at the peak of decoding ([`PEAK_BYTES_PER_PIXEL`], sizes from the headers;
/// a file whose header cannot be read counts as nothing and fails when decoded). A batch
/// holds at least one image. Returns the start of each batch and its end.
pub fn batches_by_bytes(
    paths: &[PathBuf],
    max_images: usize,
    budget: u64,
) -> Vec<std::ops::Range<usize>> {
    let sizes: Vec<u64> = paths
        .par_iter()
        .map(|p| {
            image::image_dimensions(p)
                .map(|(w, h)| u64::from(w) * u64::from(h) * PEAK_BYTES_PER_PIXEL)
                .unwrap_or(0)
        })
        .collect();
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_images || bytes + size > budget) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < paths.len() {
        out.push(start..paths.len());
    }
    out
}

/// How images become network inputs: channel count and the side of the square they are
/// resized to, or with `tiles` the side of the square tiles they are cut into at their own
/// resolution (times the tiles' scale). Pixel values are scaled to `[0, 1]` whatever the
/// bit depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePrep {
    pub channels: usize,
    pub image_size: usize,
    /// Read in tiles of `image_size` at the images' own resolution (absent in whole-image
    /// models and in files from before tiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<Tiles>,
}

impl ImagePrep {
    /// Values per image, channel-major (`channels * size * size`).
    pub fn len(&self) -> usize {
        self.channels * self.image_size * self.image_size
    }

    /// Always false: a prep holds at least one value.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The network input for `img`: resized (bilinear), converted to the prep's channels,
    /// laid out channel-major.
    pub fn tensorize(&self, img: &DynamicImage) -> Vec<f32> {
        self.planes_at(img, self.image_size, self.image_size)
    }

    /// The network inputs of `images` ([`ImagePrep::tensorize`], in parallel), concatenated
    /// in their order.
    pub fn tensorize_all<'a>(
        &self,
        images: impl ParallelIterator<Item = &'a DynamicImage>,
    ) -> Vec<f32> {
        images.flat_map_iter(|img| self.tensorize(img)).collect()
    }

    /// Decodes and tensorizes the file at `path`.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(self.tensorize(&decode(path)?))
    }

    /// Side of the anomaly map of a `width x height` image: the input square, or for a
    /// tiled model the image's size at the tiles' scale.
    pub fn map_size(&self, width: u32, height: u32) -> (usize, usize) {
        match self.tiles {
            None => (self.image_size, self.image_size),
            Some(t) => scaled_size(width, height, t.scale),
        }
    }

    /// `img` at the scale a tiled model reads it (its own size for whole-image models),
    /// converted to the prep's channels, channel-major.
    pub fn scaled(&self, img: &DynamicImage) -> ScaledImage {
        let scale = self.tiles.map_or(1.0, |t| t.scale);
        let (w, h) = scaled_size(img.width(), img.height(), scale);
        ScaledImage {
            values: self.planes_at(img, w, h),
            width: w,
            height: h,
        }
    }

    /// `img` resized (bilinear) to `w x h` unless it has that size, converted to the
    /// prep's channels, channel-major in `[0, 1]`.
    fn planes_at(&self, img: &DynamicImage, w: usize, h: usize) -> Vec<f32> {
        let (w, h) = (w as u32, h as u32);
        let same = (w, h) == (img.width(), img.height());
        let mut out = Vec::with_capacity(self.channels * w as usize * h as usize);
        if self.channels == 1 {
            let mut luma = img.to_luma32f();
            if !same {
                luma = image::imageops::resize(&luma, w, h, FilterType::Triangle);
            }
            out.extend(luma.pixels().map(|p| p.0[0].clamp(0.0, 1.0)));
        } else {
            let mut rgb = img.to_rgb32f();
            if !same {
                rgb = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
            }
            for c in 0..3 {
                out.extend(rgb.pixels().map(|p| p.0[c].clamp(0.0, 1.0)));
            }
        }
        out
    }
}

/// A `width x height` image's size at `scale`, at least one pixel a side.
fn scaled_size(width: u32, height: u32, scale: f32) -> (usize, usize) {
    let side = |v: u32| ((v as f64 * scale as f64).round() as usize).max(1);
    (side(width), side(height))
}

/// Channels to use for a set of images: 3 when any of the first few is in colour, else 1.
/// Grayscale stays one channel (tools that force three channels triple the work). With
/// `skip_bad`, files that cannot be decoded are passed over here as they are when the set
/// is read; otherwise the first one is the error.
pub fn detect_channels(paths: &[PathBuf], skip_bad: bool) -> Result<usize> {
    let mut looked = 0;
    let mut first_error = None;
    for path in paths {
        match decode(path) {
            Ok(img) if img.color().has_color() => return Ok(3),
            Ok(_) => looked += 1,
            Err(e) if skip_bad => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
        if looked == 16 {
            break;
        }
    }
    match first_error {
        Some(e) if looked == 0 => Err(e),
        _ => Ok(1),
    }
}

/// Channels to use for images in memory, by the rule of [`detect_channels`].
pub fn channels_of(images: &[DynamicImage]) -> usize {
    if images.iter().take(16).any(|img| img.color().has_color()) {
        3
    } else {
        1
    }
}

/// Side of the first image's longer edge, used to pick a default input size; with
/// `skip_bad`, of the first image whose header can be read.
pub fn native_size(paths: &[PathBuf], skip_bad: bool) -> Result<usize> {
    let mut first_error = None;
    for path in paths {
        match dimensions(path) {
            Ok((w, h)) => return Ok(w.max(h) as usize),
            Err(e) if skip_bad => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_error.unwrap_or_else(|| Error::Invalid("no images".into())))
}

/// Training images kept in memory when they fit under a budget, or decoded batch by batch
/// when they do not, so 20,000 large images never need 20,000 decoded copies.
pub struct ImageSet {
    paths: Vec<PathBuf>,
    prep: ImagePrep,
    cache: Option<Vec<f32>>,
    /// A tiled set's images at their scale, when they fit the budget.
    scaled: Option<Vec<ScaledImage>>,
    /// Training samples per image: 1, or a tiled set's random crops per pass.
    crops: usize,
    /// Seed of a tiled set's crop positions.
    crop_seed: u64,
}

/// Decoded training images above this many bytes are streamed from disk instead of cached.
pub const CACHE_BUDGET_BYTES: usize = 768 << 20;

impl ImageSet {
    /// Opens `paths`, decoding each once to check it (and to cache it when the set fits in
    /// [`CACHE_BUDGET_BYTES`]). A file that fails to decode is an error, or with `skip_bad`
    /// is dropped and returned in the list of skipped files with its reason.
    pub fn open(
        paths: Vec<PathBuf>,
        prep: ImagePrep,
        skip_bad: bool,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(Self, Vec<Error>)> {
        if prep.tiles.is_some() {
            return Self::open_scaled(paths, prep, skip_bad, progress);
        }
        let n = prep.len();
        let cache_it = paths.len() * n * 4 <= CACHE_BUDGET_BYTES;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let tick = || progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        // Decode straight into the cache's slots so the peak is one copy of the set.
        let mut cache = cache_it.then(|| vec![0.0f32; paths.len() * n]);
        let results: Vec<Result<()>> = match cache.as_mut() {
            Some(c) => c
                .par_chunks_mut(n)
                .zip(paths.par_iter())
                .map(|(slot, p)| {
                    let r = prep.load(p).map(|v| slot.copy_from_slice(&v));
                    tick();
                    r
                })
                .collect(),
            None => paths
                .par_iter()
                .map(|p| {
                    let r = prep.load(p).map(|_| ());
                    tick();
                    r
                })
                .collect(),
        };
        let mut kept_paths = Vec::with_capacity(paths.len());
        let mut skipped = Vec::new();
        let mut write = 0;
        for (read, (path, r)) in paths.into_iter().zip(results).enumerate() {
            match r {
                Ok(()) => {
                    if let Some(c) = cache.as_mut()
                        && write != read
                    {
                        c.copy_within(read * n..(read + 1) * n, write * n);
                    }
                    write += 1;
                    kept_paths.push(path);
                }
                Err(e) if skip_bad => skipped.push(e),
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = cache.as_mut() {
            c.truncate(write * n);
        }
        if kept_paths.is_empty() {
            return Err(Error::Invalid(
                "every image failed to decode; nothing to train on".into(),
            ));
        }
        Ok((
            Self {
                paths: kept_paths,
                prep,
                cache,
                scaled: None,
                crops: 1,
                crop_seed: 0,
            },
            skipped,
        ))
    }

    /// [`ImageSet::open`] for a tiled prep: images kept at their scale when they fit the
    /// budget (sizes from the headers), else decoded again for each batch of crops.
    fn open_scaled(
        paths: Vec<PathBuf>,
        prep: ImagePrep,
        skip_bad: bool,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(Self, Vec<Error>)> {
        let scale = prep.tiles.map_or(1.0, |t| t.scale);
        let bytes: usize = paths
            .par_iter()
            .map(|p| {
                dimensions(p).map_or(0, |(w, h)| {
                    let (w, h) = scaled_size(w, h, scale);
                    w * h * prep.channels * 4
                })
            })
            .sum();
        let cache_it = bytes <= CACHE_BUDGET_BYTES;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<Option<ScaledImage>>> = paths
            .par_iter()
            .map(|p| {
                let r = decode(p).map(|img| cache_it.then(|| prep.scaled(&img)));
                progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
                r
            })
            .collect();
        let mut kept_paths = Vec::with_capacity(paths.len());
        let mut kept = Vec::new();
        let mut skipped = Vec::new();
        let mut first_size = None;
        for (path, r) in paths.into_iter().zip(results) {
            match r {
                Ok(img) => {
                    if first_size.is_none() {
                        first_size = match &img {
                            Some(i) => Some((i.width, i.height)),
                            None => {
                                let (w, h) = dimensions(&path)?;
                                Some(scaled_size(w, h, scale))
                            }
                        };
                    }
                    kept.extend(img);
                    kept_paths.push(path);
                }
                Err(e) if skip_bad => skipped.push(e),
                Err(e) => return Err(e),
            }
        }
        let Some((w, h)) = first_size else {
            return Err(Error::Invalid(
                "every image failed to decode; nothing to train on".into(),
            ));
        };
        let crops = tiles::crops_per_image(w, h, prep.image_size);
        Ok((
            Self {
                paths: kept_paths,
                prep,
                cache: None,
                scaled: cache_it.then_some(kept),
                crops,
                crop_seed: 0,
            },
            skipped,
        ))
    }

    /// The set with a tiled set's crops placed by `seed`.
    pub fn with_crop_seed(mut self, seed: u64) -> Self {
        self.crop_seed = seed;
        self
    }

    /// Training samples per image: 1, or a tiled set's crops per pass over its images.
    /// Sample `i * crops() + c` is image `i`'s crop `c`.
    pub fn crops(&self) -> usize {
        self.crops
    }

    /// Image `i` at its tiles' scale (its own size for a whole-image set).
    pub fn scaled_image(&self, i: usize) -> Result<std::borrow::Cow<'_, ScaledImage>> {
        match &self.scaled {
            Some(images) => Ok(std::borrow::Cow::Borrowed(&images[i])),
            None => Ok(std::borrow::Cow::Owned(
                self.prep.scaled(&decode(&self.paths[i])?),
            )),
        }
    }

    /// A set of images already in memory, prepared once and kept. Each is named
    /// `image <i>` (from 0) where a path would be.
    pub fn from_images(images: &[DynamicImage], prep: ImagePrep) -> Self {
        if prep.tiles.is_some() {
            let scaled: Vec<ScaledImage> = images.par_iter().map(|i| prep.scaled(i)).collect();
            let crops = scaled.first().map_or(1, |i| {
                tiles::crops_per_image(i.width, i.height, prep.image_size)
            });
            return Self {
                paths: (0..images.len())
                    .map(|i| PathBuf::from(format!("image {i}")))
                    .collect(),
                prep,
                cache: None,
                scaled: Some(scaled),
                crops,
                crop_seed: 0,
            };
        }
        let n = prep.len();
        let mut cache = vec![0.0f32; images.len() * n];
        cache
            .par_chunks_mut(n)
            .zip(images.par_iter())
            .for_each(|(slot, img)| slot.copy_from_slice(&prep.tensorize(img)));
        Self {
            paths: (0..images.len())
                .map(|i| PathBuf::from(format!("image {i}")))
                .collect(),
            prep,
            cache: Some(cache),
            scaled: None,
            crops: 1,
            crop_seed: 0,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when the set holds no image (never after a successful [`ImageSet::open`]).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The images' paths, in set order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The preprocessing every image went through.
    pub fn prep(&self) -> &ImagePrep {
        &self.prep
    }

    /// The inputs of the samples at `indices` (images, or a tiled set's crops: see
    /// [`ImageSet::crops`]), concatenated channel-major.
    pub fn batch(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let n = self.prep.len();
        if self.prep.tiles.is_some() {
            // Each image once, however many of its crops the batch holds (decoding is the
            // cost when the set is not cached).
            let mut images: Vec<usize> = indices.iter().map(|&i| i / self.crops).collect();
            images.sort_unstable();
            images.dedup();
            let decoded: Vec<std::borrow::Cow<'_, ScaledImage>> = images
                .par_iter()
                .map(|&i| self.scaled_image(i))
                .collect::<Result<_>>()?;
            let t = self.prep.image_size;
            let mut out = Vec::with_capacity(indices.len() * n);
            for &i in indices {
                let k = images
                    .binary_search(&(i / self.crops))
                    .expect("decoded above");
                let img = &decoded[k];
                let (x, y) = tiles::crop_origin(self.crop_seed, i, img.width, img.height, t);
                tiles::cut(img, self.prep.channels, x, y, t, &mut out);
            }
            return Ok(out);
        }
        match &self.cache {
            Some(cache) => {
                let mut out = Vec::with_capacity(indices.len() * n);
                for &i in indices {
                    out.extend_from_slice(&cache[i * n..(i + 1) * n]);
                }
                Ok(out)
            }
            None => {
                let parts: Result<Vec<Vec<f32>>> = indices
                    .par_iter()
                    .map(|&i| self.prep.load(&self.paths[i]))
                    .collect();
                Ok(parts?.concat())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::scratch;

    #[test]
    fn batches_are_bounded_by_decoded_bytes_not_only_by_count() {
        let dir = crate::testing::scratch("batches");
        let mut paths = Vec::new();
        for (i, side) in [10u32, 10, 100, 10, 10, 10].iter().enumerate() {
            let p = dir.join(format!("{i}.png"));
            image::GrayImage::new(*side, *side).save(&p).unwrap();
            paths.push(p);
        }
        let small = 100 * PEAK_BYTES_PER_PIXEL;
        // Room for three small images: the large one comes alone.
        let b = batches_by_bytes(&paths, 32, 3 * small);
        assert_eq!(b, vec![0..2, 2..3, 3..6]);
        // The count still caps a batch.
        assert_eq!(batches_by_bytes(&paths, 4, u64::MAX), vec![0..4, 4..6]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sixteen_bit_gray_is_scaled_to_unit_range_and_stays_one_channel() {
        let d = scratch("images-gray16");
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(8, 8, |x, _| {
            image::Luma([if x < 4 { 0 } else { 65535 }])
        });
        let p = d.join("a.png");
        img.save(&p).unwrap();
        let paths = find_images(&d).unwrap();
        assert_eq!(detect_channels(&paths, false).unwrap(), 1);
        let prep = ImagePrep {
            channels: 1,
            image_size: 8,
            tiles: None,
        };
        let v = prep.load(&p).unwrap();
        assert_eq!(v.len(), 64);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[7], 1.0);
    }

    #[test]
    fn colour_is_three_planes_and_corrupt_file_is_named() {
        let d = scratch("images-rgb");
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 0]));
        img.save(d.join("red.png")).unwrap();
        std::fs::write(d.join("broken.png"), b"not a png").unwrap();
        let paths = find_images(&d).unwrap();
        assert_eq!(paths.len(), 2);
        let prep = ImagePrep {
            channels: 3,
            image_size: 4,
            tiles: None,
        };
        let v = prep.load(&d.join("red.png")).unwrap();
        assert_eq!(&v[0..16], &[1.0; 16]);
        assert_eq!(&v[16..48], &[0.0; 32]);
        let err = ImageSet::open(paths.clone(), prep.clone(), false, &|_| {})
            .err()
            .unwrap();
        assert!(err.to_string().contains("broken.png"), "{err}");
        let (set, skipped) = ImageSet::open(paths, prep, true, &|_| {}).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(skipped.len(), 1);
        // broken.png sorts first: the cache is compacted so slot 0 holds red.png.
        assert_eq!(set.batch(&[0]).unwrap(), v);
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_cut_and_repeated_links_kept() {
        let d = scratch("images-loop");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        image::GrayImage::new(4, 4)
            .save(d.join("sub/a.png"))
            .unwrap();
        std::os::unix::fs::symlink(&d, d.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("again")).unwrap();
        // The loop (sub/up -> root) is cut; a second link to sub lists its image again.
        let mut want = vec![d.join("again/a.png"), d.join("sub/a.png")];
        want.sort();
        let got = find_images(&d).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_and_missing_folders_are_clear_errors() {
        let d = scratch("images-empty");
        assert!(matches!(find_images(&d), Err(Error::NoImages { .. })));
        assert!(matches!(
            find_images(&d.join("nope")),
            Err(Error::Missing { .. })
        ));
    }
}
