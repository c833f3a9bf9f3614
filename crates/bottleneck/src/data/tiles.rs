//! Native-resolution tiles for detection: a model that reads square tiles of the image at
//! its own resolution (or a chosen scale) instead of the whole image shrunk to one input,
//! so a defect a few pixels wide stays a few pixels wide. Training reads random crops;
//! scoring cuts overlapping tiles (stride half a tile, as anomalib's Tiler), trims each
//! tile's outer quarter where a neighbour covers it, and averages the overlaps into a map
//! at the image's size.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How a tiled model sees an image: resized by `scale` (1 is the native resolution), then
/// cut into tiles of the model's input side. Stored in the model file's `prep.tiles`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiles {
    pub scale: f32,
}

/// Largest crops per training image per pass: enough for a 2,048-pixel image at twice its
/// area in 128-pixel tiles.
pub const MAX_CROPS_PER_IMAGE: usize = 512;

/// An image at the scale a tiled model reads it: channel-major values, `channels * h * w`.
#[derive(Debug, Clone)]
pub struct ScaledImage {
    pub values: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

/// Random crops per training image in one pass over the set: the image's area covered about
/// twice (at least one crop, at most [`MAX_CROPS_PER_IMAGE`]).
pub fn crops_per_image(width: usize, height: usize, tile: usize) -> usize {
    let area = (width * height) as f64;
    let tile_area = (tile * tile) as f64;
    ((2.0 * area / tile_area).ceil() as usize).clamp(1, MAX_CROPS_PER_IMAGE)
}

/// Where crop `index` of a training run seeded `seed` starts in a `width x height` image:
/// uniform over the positions where a `tile` fits (the corner when it does not). The same
/// index always gives the same crop, so a run is reproducible and its batches need no
/// shared random state.
pub fn crop_origin(
    seed: u64,
    index: usize,
    width: usize,
    height: usize,
    tile: usize,
) -> (usize, usize) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let x = rng.random_range(0..=width.saturating_sub(tile));
    let y = rng.random_range(0..=height.saturating_sub(tile));
    (x, y)
}

/// Starts of the tiles along a side of `len` pixels: every half tile, and a last one that
/// ends at the edge, so every pixel lies in the inner half of some tile. One tile at 0 when
/// the side is no longer than a tile.
pub fn starts(len: usize, tile: usize) -> Vec<usize> {
    if len <= tile {
        return vec![0];
    }
    let stride = (tile / 2).max(1);
    let mut out: Vec<usize> = (0..)
        .map(|k| k * stride)
        .take_while(|&s| s + tile < len)
        .collect();
    out.push(len - tile);
    out
}

/// Every tile's origin over a `width x height` image, row by row.
pub fn origins(width: usize, height: usize, tile: usize) -> Vec<(usize, usize)> {
    let xs = starts(width, tile);
    starts(height, tile)
        .into_iter()
        .flat_map(|y| xs.iter().map(move |&x| (x, y)))
        .collect()
}

/// The `tile x tile` crop of `image` at `(x0, y0)` (channel-major) appended to `out`;
/// pixels past the image's edge repeat the edge.
pub fn cut(
    image: &ScaledImage,
    channels: usize,
    x0: usize,
    y0: usize,
    tile: usize,
    out: &mut Vec<f32>,
) {
    let (w, h) = (image.width, image.height);
    for c in 0..channels {
        let plane = &image.values[c * w * h..(c + 1) * w * h];
        for ty in 0..tile {
            let row = &plane[(y0 + ty).min(h - 1) * w..][..w];
            if x0 + tile <= w {
                out.extend_from_slice(&row[x0..x0 + tile]);
            } else {
                out.extend((0..tile).map(|tx| row[(x0 + tx).min(w - 1)]));
            }
        }
    }
}

/// Weight of a tile's maps away from its edges: the outer quarter of a tile sees less
/// context (and the smoothing's border), so it counts only where no neighbour's inner half
/// covers the pixel; the image's own edges are always inner.
const TRIMMED: f32 = 1e-3;

/// Weights of the pixels along one side of a tile starting at `start` in a side of `len`.
fn side_weights(start: usize, tile: usize, len: usize) -> Vec<f32> {
    let quarter = tile / 4;
    (0..tile)
        .map(|i| {
            let low = i >= quarter || start == 0;
            let high = i + quarter < tile || start + tile >= len;
            if low && high { 1.0 } else { TRIMMED }
        })
        .collect()
}

/// Tile maps averaged into one map over a `width x height` image.
pub struct Stitch {
    width: usize,
    height: usize,
    tile: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Stitch {
    /// An empty map over a `width x height` image cut into `tile`-pixel tiles.
    pub fn new(width: usize, height: usize, tile: usize) -> Self {
        Self {
            width,
            height,
            tile,
            sum: vec![0.0; width * height],
            weight: vec![0.0; width * height],
        }
    }

    /// Adds the `tile x tile` `map` of the tile at `(x0, y0)`; its part past the image's
    /// edge is dropped.
    pub fn add(&mut self, x0: usize, y0: usize, map: &[f32]) {
        let t = self.tile;
        let wx = side_weights(x0, t, self.width);
        let wy = side_weights(y0, t, self.height);
        for ty in 0..t.min(self.height - y0) {
            let row = (y0 + ty) * self.width;
            for tx in 0..t.min(self.width - x0) {
                let w = wx[tx] * wy[ty];
                self.sum[row + x0 + tx] += w * map[ty * t + tx];
                self.weight[row + x0 + tx] += w;
            }
        }
    }

    /// The averaged map, `height * width` values row by row.
    pub fn finish(self) -> Vec<f32> {
        self.sum
            .into_iter()
            .zip(self.weight)
            .map(|(s, w)| if w > 0.0 { s / w } else { 0.0 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_cover_the_side_in_inner_halves() {
        assert_eq!(starts(100, 128), vec![0]);
        assert_eq!(starts(128, 128), vec![0]);
        assert_eq!(starts(256, 128), vec![0, 64, 128]);
        assert_eq!(starts(300, 128), vec![0, 64, 128, 172]);
        for len in [129, 200, 333, 1024] {
            let s = starts(len, 64);
            // Each pixel is in some tile's inner half, or in the first or last tile's edge.
            for p in 0..len {
                let inner = s.iter().any(|&a| {
                    let lo = if a == 0 { 0 } else { a + 16 };
                    let hi = if a + 64 >= len { len } else { a + 48 };
                    (lo..hi).contains(&p)
                });
                assert!(inner, "pixel {p} of {len}: {s:?}");
            }
        }
    }

    #[test]
    fn stitched_constant_tiles_give_the_constant_and_trim_the_borders() {
        // Tiles carrying their own index: inside, a pixel takes the tile whose inner half
        // holds it; at the image's edges the edge tile.
        let (w, h, t) = (40, 24, 16);
        let mut s = Stitch::new(w, h, t);
        for (k, &(x, y)) in origins(w, h, t).iter().enumerate() {
            s.add(x, y, &vec![k as f32; t * t]);
        }
        let map = s.finish();
        assert_eq!(map.len(), w * h);
        let xs = starts(w, t);
        assert_eq!(xs, vec![0, 8, 16, 24]);
        // Inner spans along x: tile 0 [0, 12), tile 1 [12, 20), tile 2 [20, 28), tile 3
        // [28, 40). Pixel (10, 0) takes tile 0; tile 1 covers it trimmed.
        assert!((map[10] - 0.0).abs() < 0.01, "{}", map[10]);
        // Pixel (14, 0) takes tile 1; tile 0 covers it trimmed.
        assert!((map[14] - 1.0).abs() < 0.01, "{}", map[14]);
        // A constant map stitches to the constant everywhere.
        let mut s = Stitch::new(w, h, t);
        for &(x, y) in &origins(w, h, t) {
            s.add(x, y, &vec![2.5; t * t]);
        }
        assert!(s.finish().iter().all(|&v| (v - 2.5).abs() < 1e-5));
    }

    #[test]
    fn cuts_repeat_the_edge_past_a_small_image() {
        let img = ScaledImage {
            values: (0..6).map(|v| v as f32).collect(),
            width: 3,
            height: 2,
        };
        let mut out = Vec::new();
        cut(&img, 1, 0, 0, 4, &mut out);
        assert_eq!(
            out,
            vec![
                0., 1., 2., 2., 3., 4., 5., 5., 3., 4., 5., 5., 3., 4., 5., 5.
            ]
        );
        out.clear();
        cut(&img, 1, 1, 0, 2, &mut out);
        assert_eq!(out, vec![1., 2., 4., 5.]);
    }

    #[test]
    fn crops_are_reproducible_and_inside() {
        let a = crop_origin(7, 12, 300, 200, 64);
        assert_eq!(a, crop_origin(7, 12, 300, 200, 64));
        let all: Vec<_> = (0..200).map(|i| crop_origin(7, i, 300, 200, 64)).collect();
        assert!(all.iter().all(|&(x, y)| x <= 236 && y <= 136));
        // Spread over the image, not stuck in a corner.
        assert!(all.iter().any(|&(x, _)| x > 200) && all.iter().any(|&(x, _)| x < 30));
        assert_eq!(crop_origin(7, 3, 50, 40, 64), (0, 0));
        assert_eq!(crops_per_image(1024, 1024, 128), 128);
        assert_eq!(crops_per_image(64, 64, 128), 1);
    }
}
