//! Synthetic anomalies made on the fly from good images, for training a discriminative head
//! (DRAEM, Zavrtanik et al. 2021): a Perlin-noise mask is filled with a patch of another
//! good image, a flat colour or procedural noise, blended at a random opacity. A share of
//! them are instead rectangles of another good image pasted with Poisson blending (NSA,
//! Schlüter et al. 2022), so that their edges are seamless and only what differs inside
//! them marks them. No external data: everything comes from the batch and the seeded
//! generator.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Share of the images of a batch left unchanged (DRAEM's 0.5): the head must also learn
/// that a normal image has no anomaly anywhere.
const CLEAN_SHARE: f64 = 0.5;
/// Perlin values above this become the mask (DRAEM's 0.5).
const MASK_THRESHOLD: f32 = 0.5;
/// Draws of a mask before an image is left without an anomaly.
const MASK_DRAWS: usize = 4;
/// Largest opacity of the original left under the anomaly (DRAEM's 0.8): from a faint
/// change to a full replacement.
const MAX_OPACITY: f32 = 0.8;

/// Share of the anomalies drawn as Poisson-blended patches of another image of the batch
/// (when it has one); the rest are Perlin-masked fills.
const PATCH_SHARE: f64 = 0.25;
/// Least change (any channel, values in `[0, 1]`) that marks a pixel of a pasted patch as
/// anomalous; smaller changes are undone, so the mask is exactly what changed.
const PATCH_MIN_CHANGE: f32 = 0.05;

/// One batch with anomalies drawn in: the images and the masks of where they were drawn.
pub(crate) struct Synthetic {
    /// `[n, channels, side, side]`, values in `[0, 1]`.
    pub inputs: Vec<f32>,
    /// `[n, 1, side, side]`, 1 where the image was changed.
    pub masks: Vec<f32>,
}

/// Draws anomalies into a copy of `clean` (`n` images `[channels, side, side]`,
/// concatenated, values in `[0, 1]`): about half the images get one, the rest stay
/// unchanged with an empty mask.
pub(crate) fn synthesise(
    clean: &[f32],
    n: usize,
    channels: usize,
    side: usize,
    rng: &mut ChaCha8Rng,
) -> Synthetic {
    let plane = side * side;
    let size = channels * plane;
    let mut inputs = clean.to_vec();
    let mut masks = vec![0.0f32; n * plane];
    for i in 0..n {
        if rng.random_bool(CLEAN_SHARE) {
            continue;
        }
        if n > 1 && rng.random_bool(PATCH_SHARE) {
            let image = &mut inputs[i * size..(i + 1) * size];
            let mask = &mut masks[i * plane..(i + 1) * plane];
            paste_patch(clean, image, mask, i, n, channels, side, rng);
            continue;
        }
        // A field can stay below the threshold everywhere: draw again, a few times.
        let Some(mask) = (0..MASK_DRAWS)
            .map(|_| perlin_mask(side, rng))
            .find(|m| m.iter().any(|&v| v))
        else {
            continue;
        };
        let fill = fill_source(clean, i, n, channels, side, rng);
        let opacity = rng.random_range(0.0..MAX_OPACITY);
        let image = &mut inputs[i * size..(i + 1) * size];
        for c in 0..channels {
            for (p, &m) in mask.iter().enumerate() {
                if m {
                    let v = &mut image[c * plane + p];
                    *v = opacity * *v + (1.0 - opacity) * fill[c * plane + p];
                }
            }
        }
        for (out, &m) in masks[i * plane..(i + 1) * plane].iter_mut().zip(&mask) {
            *out = f32::from(u8::from(m));
        }
    }
    Synthetic { inputs, masks }
}

/// What fills an anomaly in image `i`, `[channels, side, side]`: another good image of the
/// batch turned, flipped and shifted (a plausible part in the wrong place), a flat colour,
/// or procedural noise, with equal odds (the other image only when the batch has one).
fn fill_source(
    clean: &[f32],
    i: usize,
    n: usize,
    channels: usize,
    side: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let plane = side * side;
    let kinds = if n > 1 { 3 } else { 2 };
    match rng.random_range(0..kinds) {
        0 => {
            let colour: Vec<f32> = (0..channels).map(|_| rng.random::<f32>()).collect();
            colour
                .iter()
                .flat_map(|&v| std::iter::repeat_n(v, plane))
                .collect()
        }
        1 => {
            let noise = perlin(side, lattice(side, rng), rng);
            let (lo, hi) = noise
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            let span = (hi - lo).max(1e-6);
            let tint: Vec<(f32, f32)> = (0..channels)
                .map(|_| (rng.random::<f32>(), rng.random::<f32>()))
                .collect();
            tint.iter()
                .flat_map(|&(a, b)| noise.iter().map(move |&v| a + (b - a) * (v - lo) / span))
                .collect()
        }
        _ => {
            let other = (i + rng.random_range(1..n)) % n;
            let size = channels * plane;
            let src = &clean[other * size..(other + 1) * size];
            let turn = rng.random_range(0..8u8);
            let (dy, dx) = (rng.random_range(0..side), rng.random_range(0..side));
            let mut out = vec![0.0f32; size];
            for c in 0..channels {
                for y in 0..side {
                    for x in 0..side {
                        let (sy, sx) = turned(y, x, side, turn);
                        let (sy, sx) = ((sy + dy) % side, (sx + dx) % side);
                        out[c * plane + y * side + x] = src[c * plane + sy * side + sx];
                    }
                }
            }
            out
        }
    }
}

/// Pastes a rectangle of another image of the batch into `image` (image `i`, `[channels,
/// side, side]`) at another place, Poisson-blended ([`poisson_blend`]) as NSA does, and
/// marks in `mask` (`[side, side]`) the pixels it changed by at least [`PATCH_MIN_CHANGE`];
/// smaller changes are undone. Sides of the rectangle are drawn from a sixteenth to half of
/// the image's (at least 3 pixels). Leaves the image unchanged when nothing differs enough.
#[allow(clippy::too_many_arguments)]
fn paste_patch(
    clean: &[f32],
    image: &mut [f32],
    mask: &mut [f32],
    i: usize,
    n: usize,
    channels: usize,
    side: usize,
    rng: &mut ChaCha8Rng,
) {
    let plane = side * side;
    let lo = (side / 16).max(3).min(side);
    let hi = (side / 2).max(lo);
    let (h, w) = (rng.random_range(lo..=hi), rng.random_range(lo..=hi));
    let (ty, tx) = (
        rng.random_range(0..=side - h),
        rng.random_range(0..=side - w),
    );
    let (sy, sx) = (
        rng.random_range(0..=side - h),
        rng.random_range(0..=side - w),
    );
    let other = (i + rng.random_range(1..n)) % n;
    let source = &clean[other * channels * plane..(other + 1) * channels * plane];
    let rect = |plane_values: &[f32], y0: usize, x0: usize| -> Vec<f32> {
        (0..h)
            .flat_map(|y| &plane_values[(y0 + y) * side + x0..(y0 + y) * side + x0 + w])
            .copied()
            .collect()
    };
    let mut blended = Vec::with_capacity(channels);
    let mut changed = vec![false; h * w];
    for c in 0..channels {
        let target = rect(&image[c * plane..(c + 1) * plane], ty, tx);
        let patch = rect(&source[c * plane..(c + 1) * plane], sy, sx);
        let f = poisson_blend(&target, &patch, h, w);
        for (k, (a, b)) in f.iter().zip(&target).enumerate() {
            changed[k] |= (a - b).abs() >= PATCH_MIN_CHANGE;
        }
        blended.push(f);
    }
    for k in (0..h * w).filter(|&k| changed[k]) {
        let at = (ty + k / w) * side + tx + k % w;
        mask[at] = 1.0;
        for (c, f) in blended.iter().enumerate() {
            image[c * plane + at] = f[k];
        }
    }
}

/// Poisson image editing (Pérez et al. 2003, seamless cloning) of a `h x w` `patch` into
/// the same-sized `target`, both row-major: the result keeps the target on the rectangle's
/// border and the patch's gradients inside, so the patch's content shows without its
/// edges. Solved as the patch plus a harmonic correction (the border's difference spread
/// inwards) by successive over-relaxation; clamped to `[0, 1]`.
fn poisson_blend(target: &[f32], patch: &[f32], h: usize, w: usize) -> Vec<f32> {
    let border = |y: usize, x: usize| y == 0 || x == 0 || y + 1 == h || x + 1 == w;
    // The correction: exact on the border, the border's mean inside to start from.
    let mut c: Vec<f32> = target.iter().zip(patch).map(|(t, p)| t - p).collect();
    let (sum, count) = (0..h * w)
        .filter(|&k| border(k / w, k % w))
        .fold((0.0f32, 0usize), |(s, n), k| (s + c[k], n + 1));
    let mean = sum / count.max(1) as f32;
    for (k, v) in c.iter_mut().enumerate() {
        if !border(k / w, k % w) {
            *v = mean;
        }
    }
    // Over-relaxation at the optimal factor for a grid of this size converges in about
    // its longer side in sweeps.
    let long = h.max(w) as f32;
    let omega = 2.0 / (1.0 + (std::f32::consts::PI / long).sin());
    for _ in 0..(2 * h.max(w) + 10) {
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                let k = y * w + x;
                let around = c[k - 1] + c[k + 1] + c[k - w] + c[k + w];
                c[k] += omega * (around / 4.0 - c[k]);
            }
        }
    }
    patch
        .iter()
        .zip(&c)
        .map(|(p, c)| (p + c).clamp(0.0, 1.0))
        .collect()
}

/// Pixel `(y, x)` of a square of `side` under one of the 8 turns and flips.
fn turned(y: usize, x: usize, side: usize, turn: u8) -> (usize, usize) {
    let last = side - 1;
    let (y, x) = if turn & 4 != 0 { (x, y) } else { (y, x) };
    match turn & 3 {
        0 => (y, x),
        1 => (x, last - y),
        2 => (last - y, last - x),
        _ => (last - x, y),
    }
}

/// Lattice cells of a Perlin field across `side` pixels, one count per axis drawn
/// independently from 1, 2, 4, ... up to cells of 4 pixels (at most 32), so blobs range from
/// one covering much of the image to specks, round or stretched.
fn lattice(side: usize, rng: &mut ChaCha8Rng) -> (usize, usize) {
    let finest = (side / 4).max(1).ilog2().min(5);
    (
        1 << rng.random_range(0..=finest),
        1 << rng.random_range(0..=finest),
    )
}

/// The mask of one anomaly: a Perlin field over `side` pixels thresholded at
/// [`MASK_THRESHOLD`], row-major.
fn perlin_mask(side: usize, rng: &mut ChaCha8Rng) -> Vec<bool> {
    let cells = lattice(side, rng);
    perlin(side, cells, rng)
        .into_iter()
        .map(|v| v > MASK_THRESHOLD)
        .collect()
}

/// Perlin gradient noise (Perlin 2002: random unit gradients on a lattice, quintic fade)
/// over `side x side` pixels with `(rows, cols)` lattice cells, scaled by sqrt 2 as DRAEM's
/// so that values span about `[-1, 1]`, row-major.
fn perlin(side: usize, (rows, cols): (usize, usize), rng: &mut ChaCha8Rng) -> Vec<f32> {
    let gradients: Vec<(f32, f32)> = (0..(rows + 1) * (cols + 1))
        .map(|_| {
            let a = rng.random_range(0.0..std::f32::consts::TAU);
            (a.cos(), a.sin())
        })
        .collect();
    let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
    let mut out = Vec::with_capacity(side * side);
    for y in 0..side {
        let v = (y as f32 + 0.5) * rows as f32 / side as f32;
        let (gy, fy) = (v.floor() as usize, v.fract());
        for x in 0..side {
            let u = (x as f32 + 0.5) * cols as f32 / side as f32;
            let (gx, fx) = (u.floor() as usize, u.fract());
            let dot = |cy: usize, cx: usize| {
                let (a, b) = gradients[(gy + cy) * (cols + 1) + gx + cx];
                a * (fx - cx as f32) + b * (fy - cy as f32)
            };
            let top = dot(0, 0) + fade(fx) * (dot(0, 1) - dot(0, 0));
            let bottom = dot(1, 0) + fade(fx) * (dot(1, 1) - dot(1, 0));
            out.push(std::f32::consts::SQRT_2 * (top + fade(fy) * (bottom - top)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn anomalies_change_only_their_mask_and_repeat_with_the_seed() {
        let (n, channels, side) = (16, 3, 32);
        let mut base = ChaCha8Rng::seed_from_u64(1);
        let clean: Vec<f32> = (0..n * channels * side * side)
            .map(|_| base.random::<f32>())
            .collect();
        let a = synthesise(&clean, n, channels, side, &mut ChaCha8Rng::seed_from_u64(7));
        let b = synthesise(&clean, n, channels, side, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!((a.inputs.clone(), a.masks.clone()), (b.inputs, b.masks));
        let plane = side * side;
        let mut marked = 0;
        for i in 0..n {
            let mask = &a.masks[i * plane..(i + 1) * plane];
            marked += usize::from(mask.iter().any(|&m| m > 0.0));
            for c in 0..channels {
                for (p, &m) in mask.iter().enumerate() {
                    let at = (i * channels + c) * plane + p;
                    if m == 0.0 {
                        assert_eq!(a.inputs[at], clean[at], "outside the mask nothing moves");
                    }
                    assert!((0.0..=1.0).contains(&a.inputs[at]));
                }
            }
        }
        // About half of 16 images get an anomaly, and an anomaly changes its image.
        assert!((3..=13).contains(&marked), "{marked} of {n} marked");
        assert!(a.inputs != clean);
    }

    #[test]
    fn poisson_blending_keeps_the_patch_content_and_drops_its_level() {
        let (h, w) = (20, 24);
        // A flat target at 0.3; a patch at 0.8 with a square 0.2 brighter in its middle.
        let target = vec![0.3f32; h * w];
        let inside = |k: usize| (7..13).contains(&(k / w)) && (9..15).contains(&(k % w));
        let patch: Vec<f32> = (0..h * w)
            .map(|k| if inside(k) { 1.0 } else { 0.8 })
            .collect();
        let f = poisson_blend(&target, &patch, h, w);
        // The border is the target's; the patch's level (0.8) is gone and its square is
        // about 0.2 above the surroundings, as its gradients say.
        for (k, &v) in f.iter().enumerate() {
            let (y, x) = (k / w, k % w);
            if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                assert_eq!(v, 0.3);
            }
        }
        let centre = f[10 * w + 12];
        let edge = f[2 * w + 2];
        assert!((edge - 0.3).abs() < 0.05, "{edge}");
        assert!((centre - edge - 0.2).abs() < 0.05, "{centre} {edge}");
        // A patch that differs from the target by a constant blends to the target itself.
        let shifted: Vec<f32> = target.iter().map(|v| v + 0.4).collect();
        let same = poisson_blend(&target, &shifted, h, w);
        assert!(same.iter().all(|v| (v - 0.3).abs() < 1e-3), "{same:?}");
        // A flat patch into a ramp: the correction is the ramp itself (a linear function is
        // harmonic), which the relaxation must reach from the border's mean.
        let ramp: Vec<f32> = (0..h * w).map(|k| 0.1 + 0.02 * (k % w) as f32).collect();
        let flat = poisson_blend(&ramp, &vec![0.5; h * w], h, w);
        for (k, (a, b)) in flat.iter().zip(&ramp).enumerate() {
            assert!((a - b).abs() < 2e-3, "pixel {k}: {a} against {b}");
        }
    }

    #[test]
    fn pasted_patches_mark_what_they_change_and_only_that() {
        let (n, channels, side) = (2, 1, 32);
        // Two images: a smooth ramp, and one with a bright bar across its middle rows.
        let mut clean = vec![0.0f32; n * side * side];
        for y in 0..side {
            for x in 0..side {
                clean[y * side + x] = 0.2 + 0.01 * x as f32;
                clean[side * side + y * side + x] = if (12..20).contains(&y) { 0.9 } else { 0.1 };
            }
        }
        let mut marked = 0;
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut image = clean[..side * side].to_vec();
            let mut mask = vec![0.0f32; side * side];
            paste_patch(
                &clean, &mut image, &mut mask, 0, n, channels, side, &mut rng,
            );
            for (p, (&m, (&a, &b))) in mask.iter().zip(image.iter().zip(&clean)).enumerate() {
                match m > 0.0 {
                    true => assert!((a - b).abs() >= PATCH_MIN_CHANGE, "{seed} {p}"),
                    false => assert_eq!(a, b, "{seed} {p}: unmarked pixels keep their value"),
                }
            }
            marked += usize::from(mask.iter().any(|&m| m > 0.0));
        }
        // The bar shows wherever a patch takes part of it.
        assert!(marked >= 5, "{marked} of 20 patches changed something");
    }

    #[test]
    fn perlin_masks_cover_a_share_and_vary_with_the_lattice() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let cover = |cells| {
            let field = perlin(64, cells, &mut ChaCha8Rng::seed_from_u64(5));
            assert!(field.iter().all(|v| v.abs() <= 1.0), "Perlin stays bounded");
            field.iter().filter(|&&v| v > MASK_THRESHOLD).count()
        };
        // Coarse and fine lattices give different masks; neither covers everything.
        let (coarse, fine) = (cover((2, 2)), cover((16, 16)));
        assert!(coarse < 64 * 64 && fine < 64 * 64 && coarse != fine);
        let mut any = 0;
        for _ in 0..50 {
            any += usize::from(perlin_mask(64, &mut rng).iter().any(|&m| m));
        }
        assert!(any >= 25, "{any} of 50 masks non-empty");
        for turn in 0..8 {
            let mut seen = std::collections::HashSet::new();
            for y in 0..5 {
                for x in 0..5 {
                    seen.insert(turned(y, x, 5, turn));
                }
            }
            assert_eq!(seen.len(), 25, "turn {turn} is a permutation");
        }
    }
}
