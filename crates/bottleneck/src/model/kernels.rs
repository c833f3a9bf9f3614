//! The image networks' convolutions on the CPU (burn's Flex backend), forward and backward,
//! as burn backend-extension operations with their own backward pass.
//!
//! Why: profiling a default training run (128x128 grayscale, batch 32) put most of the time
//! outside the matrix products: Flex's general convolution copies its input to NHWC on one
//! thread, zero-fills and gathers an im2col tile per 512 outputs, and computes weight
//! gradients as a convolution with the whole output gradient as its kernel (the input
//! copied again, one narrow product per input channel). Here each band of an image's rows is
//! one im2col and one product (or one product and one col2im), sized to stay in cache;
//! images run in parallel; the weight gradient is one product per band into a per-group
//! sum; the bias is the products' starting value and the transposes live in their strides.
//!
//! Both layers the networks use reduce to two data movements around a product, for a
//! convolution between a "large" side (size `large`) and a "small" side (`small`, the
//! strided output of a convolution or the input of a transposed one):
//! - `im2col`: large-side image `[c, large, large]` -> columns `[c * k * k, small * small]`;
//! - `col2im`: the adjoint, columns back onto the large side, adding overlaps.
//!
//! Results are deterministic: images are summed in fixed groups and a fixed order, whatever
//! the number of threads.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// Images whose weight gradients are summed together before the groups are added in order.
const GRAD_GROUP: usize = 4;
/// Size of one band of columns (see [`bands`]): about half of a core's L2.
const BAND_BYTES: usize = 512 * 1024;

#[backend_extension(Flex, Autodiff)]
pub trait ConvKernels: Backend {
    /// 2-D convolution of `x` `[b, c_in, h, w]` with square `weight` `[c_out, c_in, k, k]`,
    /// `bias` `[c_out]`, equal stride and zero padding on every side, then `activation`.
    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FloatTensor<Self>;

    /// 2-D transposed convolution of `x` `[b, c_in, h, w]` with square `weight`
    /// `[c_in, c_out, k, k]`, `bias` `[c_out]`, equal stride and padding on every side,
    /// then `activation`.
    fn conv_transpose2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FloatTensor<Self>;

    /// Mean of `x` `[b, c, h, w]` over the `window x window` square (odd `window`) around
    /// each pixel, the square clipped at the borders: what `avg_pool2d` with stride 1,
    /// padding `window / 2` and `count_include_pad(false)` gives, as one row pass and one
    /// column pass (burn's pooling backward took 5% of an SSIM training step).
    fn box_mean_fast(x: FloatTensor<Self>, window: usize) -> FloatTensor<Self>;
}

/// The activation a layer's kernels apply to its output while it is still in cache, so the
/// pre-activation tensor is never written out, kept for the backward pass or read again (a
/// separate activation was a pass over the layer's output and another over its gradient,
/// each into a new tensor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Identity,
    /// `max(x, 0)`, exactly as burn's Flex backend computes it and its gradient (NaN
    /// passes through).
    Relu,
    /// `x` where `x >= 0`, `slope * x` elsewhere; `slope` above 0.
    Leaky(f32),
    /// `1 / (1 + e^-x)`, value and gradient exactly as burn's Flex backend computes them:
    /// there a separate pass on one thread forward, and two backward (burn recomputes the
    /// output from the input), took 2% of a training step.
    Sigmoid,
}

/// burn Flex's sigmoid, written the same way so that the values are the same to the bit:
/// the exponential of a non-positive number only, so it never overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Activation {
    /// Applies the activation to `values` in place.
    ///
    /// Every value is computed and stored, never "keep or replace": the wide build turns
    /// a conditional store into masked stores, slow on AMD's cores (the leaky ReLU's were
    /// the hottest instructions of its loop, 3% of a training step). A leaky value is
    /// multiplied by a factor chosen by its sign, `1` or `slope`: bit for bit the select
    /// (`v * 1 = v` for every `v`, zeros and NaN included).
    #[inline(always)]
    fn apply(self, values: &mut [f32]) {
        match self {
            Self::Identity => {}
            Self::Relu => values
                .iter_mut()
                .for_each(|v| *v = if *v <= 0.0 { 0.0 } else { *v }),
            Self::Leaky(slope) => values
                .iter_mut()
                .for_each(|v| *v *= if *v >= 0.0 { 1.0 } else { slope }),
            Self::Sigmoid => values.iter_mut().for_each(|v| *v = sigmoid(*v)),
        }
    }

    /// Turns `grad`, the gradient of the activation's output `out`, into the gradient of
    /// its input, in place. The slope is read from the output's sign, which is the
    /// input's for a positive slope (a negative input too small for `slope * x` to stay
    /// nonzero, under 1e-44, would get the positive side's gradient). Stored
    /// unconditionally, as in [`Self::apply`].
    #[inline(always)]
    fn backward(self, out: &[f32], grad: &mut [f32]) {
        assert_eq!(out.len(), grad.len(), "activation backward: sizes");
        match self {
            Self::Identity => {}
            Self::Relu => grad
                .iter_mut()
                .zip(out)
                .for_each(|(g, &o)| *g = if o <= 0.0 { 0.0 } else { *g }),
            Self::Leaky(slope) => grad
                .iter_mut()
                .zip(out)
                .for_each(|(g, &o)| *g *= if o >= 0.0 { 1.0 } else { slope }),
            // burn's `grad * output * (1 - output)`, in its order.
            Self::Sigmoid => grad
                .iter_mut()
                .zip(out)
                .for_each(|(g, &o)| *g = *g * o * (1.0 - o)),
        }
    }

    /// The same through burn's own operations, for backends without these kernels.
    fn burn(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Identity => x,
            Self::Relu => burn::tensor::activation::relu(x),
            Self::Leaky(slope) => burn::tensor::activation::leaky_relu(x, slope as f64),
            Self::Sigmoid => burn::tensor::activation::sigmoid(x),
        }
    }
}

/// Whether tensors on `device` take the kernels of this module (Flex, with or without
/// autodiff); other backends use burn's own layers.
pub fn supported(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// `conv2d_fast` on high-level tensors (see [`ConvKernels::conv2d_fast`]).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    activation: Activation,
) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ConvKernels>::conv2d_fast(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        stride,
        padding,
        activation,
    ))
}

/// `conv_transpose2d_fast` on high-level tensors.
pub fn conv_transpose2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: usize,
    padding: usize,
    activation: Activation,
) -> Tensor<4> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ConvKernels>::conv_transpose2d_fast(
            x.into_dispatch(),
            weight.into_dispatch(),
            bias.into_dispatch(),
            stride,
            padding,
            activation,
        ),
    )
}

/// [`ConvKernels::box_mean_fast`] on a Flex device, else [`pooled_box_mean`].
pub fn box_mean(x: Tensor<4>, window: usize) -> Tensor<4> {
    if supported(&x.device()) {
        Tensor::from_dispatch(<burn::backend::Dispatch as ConvKernels>::box_mean_fast(
            x.into_dispatch(),
            window,
        ))
    } else {
        pooled_box_mean(x, window)
    }
}

/// The same window mean through burn's average pooling: a row pass then a column pass
/// (exact, borders included, since the valid part of a window is a rectangle).
pub fn pooled_box_mean(x: Tensor<4>, window: usize) -> Tensor<4> {
    use burn::tensor::module::avg_pool2d;
    use burn::tensor::ops::AvgPoolOptions;
    let pass = |t: Tensor<4>, k: [usize; 2]| {
        avg_pool2d(
            t,
            AvgPoolOptions::new(k)
                .with_stride([1, 1])
                .with_padding([k[0] / 2, k[1] / 2])
                .with_count_include_pad(false),
        )
    };
    pass(pass(x, [1, window]), [window, 1])
}

/// Sizes of one layer, named from the convolution's point of view: `large` is the side of
/// the image a convolution reads (a transposed convolution writes), `small` the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    /// Channels on the large and small sides.
    c_large: usize,
    c_small: usize,
    large: usize,
    small: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    /// Rows of the column matrix: `c_large * k * k`.
    fn col_rows(&self) -> usize {
        self.c_large * self.k * self.k
    }
    fn small_area(&self) -> usize {
        self.small * self.small
    }
    fn large_area(&self) -> usize {
        self.large * self.large
    }

    /// A convolution of `x` `[b, c, n, n]` by `weight` `[c_out, c, k, k]`.
    fn of_conv(x: &[usize], weight: &[usize], stride: usize, padding: usize) -> Self {
        let (large, k) = (x[2], weight[2]);
        assert!(
            x[2] == x[3] && weight[2] == weight[3] && weight[1] == x[1] && stride > 0,
            "conv2d_fast: square images and kernels only, got x {x:?}, weight {weight:?}"
        );
        assert!(
            large + 2 * padding >= k,
            "conv2d_fast: kernel larger than the image"
        );
        Self {
            batch: x[0],
            c_large: x[1],
            c_small: weight[0],
            large,
            small: (large + 2 * padding - k) / stride + 1,
            k,
            stride,
            padding,
        }
    }

    /// A transposed convolution of `x` `[b, c, n, n]` by `weight` `[c, c_out, k, k]`.
    fn of_transpose(x: &[usize], weight: &[usize], stride: usize, padding: usize) -> Self {
        let (small, k) = (x[2], weight[2]);
        assert!(
            x[2] == x[3] && weight[2] == weight[3] && weight[0] == x[1] && stride > 0,
            "conv_transpose2d_fast: square images and kernels only, got x {x:?}, weight {weight:?}"
        );
        let large = ((small - 1) * stride + k)
            .checked_sub(2 * padding)
            .expect("conv_transpose2d_fast: padding larger than the output");
        Self {
            batch: x[0],
            c_large: weight[1],
            c_small: x[1],
            large,
            small,
            k,
            stride,
            padding,
        }
    }
}

/// Columns `[c * k * k, band]` of one large-side image `[c, large, large]` for the
/// small-side rows `rows` (band = their positions); positions in the padding are 0.
///
/// Each input row is copied once into a zero-padded row; kernel column `kx` then reads
/// every `stride`-th value of it from `kx`: one contiguous copy at stride 1, a gather loop
/// otherwise (the strided layers' rows are short, 4-32 values on 64-pixel tiles, where a
/// copy call per kernel column cost more than the copy: 17% of a training step).
#[inline(always)]
fn im2col(g: &Geometry, image: &[f32], rows: std::ops::Range<usize>, cols: &mut [f32]) {
    let (n, k, s, p, w) = (g.large, g.k, g.stride, g.padding, g.small);
    let band = rows.len() * w;
    // Long enough for `w` whole strides from any kx.
    let mut padded = vec![0.0f32; (w * s + k).max(n + p)];
    for c in 0..g.c_large {
        let plane = &image[c * n * n..(c + 1) * n * n];
        for ky in 0..k {
            for (i, oy) in rows.clone().enumerate() {
                let y = oy * s + ky;
                let inside = y >= p && y < n + p;
                if inside {
                    padded[p..p + n].copy_from_slice(&plane[(y - p) * n..][..n]);
                }
                for kx in 0..k {
                    let dst = &mut cols[((c * k + ky) * k + kx) * band + i * w..][..w];
                    match (inside, s) {
                        (false, _) => dst.fill(0.0),
                        (true, 1) => dst.copy_from_slice(&padded[kx..kx + w]),
                        (true, 2) => every::<2>(&padded[kx..], dst),
                        (true, _) => every_nth(&padded[kx..], s, dst),
                    }
                }
            }
        }
    }
}

/// `dst[j] = src[j * S]`: a compile-time stride, which the compiler vectorises.
#[inline(always)]
fn every<const S: usize>(src: &[f32], dst: &mut [f32]) {
    for (d, group) in dst.iter_mut().zip(src.chunks_exact(S)) {
        *d = group[0];
    }
}

/// `dst[j] = src[j * stride]`.
#[inline(always)]
fn every_nth(src: &[f32], stride: usize, dst: &mut [f32]) {
    for (d, v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
        *d = *v;
    }
}

/// Adds columns `[c * k * k, band]` of the small-side rows `rows` onto the large-side image
/// `[c, large, large]`: the adjoint of [`im2col`], through the row's `stride` phases
/// (`phase[r][j] = padded[j * stride + r]`: the kernel columns summed into the phases,
/// interleaved back into a padded row, added).
#[inline(always)]
fn col2im(g: &Geometry, cols: &[f32], rows: std::ops::Range<usize>, image: &mut [f32]) {
    let (n, k, s, p, w) = (g.large, g.k, g.stride, g.padding, g.small);
    let band = rows.len() * w;
    let len = w + (k - 1) / s;
    let mut padded = vec![0.0f32; (len * s).max(n + p)];
    let mut phases = vec![0.0f32; len * s];
    for c in 0..g.c_large {
        let plane = &mut image[c * n * n..(c + 1) * n * n];
        for ky in 0..k {
            for (i, oy) in rows.clone().enumerate() {
                let y = oy * s + ky;
                if y < p || y >= n + p {
                    continue;
                }
                phases.fill(0.0);
                for kx in 0..k {
                    let src = &cols[((c * k + ky) * k + kx) * band + i * w..][..w];
                    let from = (kx % s) * len + kx / s;
                    for (d, v) in phases[from..from + w].iter_mut().zip(src) {
                        *d += v;
                    }
                }
                match s {
                    1 => padded[..len].copy_from_slice(&phases),
                    // The strided layers' stride: one pass over both phases, which the
                    // compiler vectorises (the general loop below reads one phase value
                    // at a time: 4.6% of a training step).
                    2 => {
                        let (even, odd) = phases.split_at(len);
                        for ((pair, &e), &o) in
                            padded[..2 * len].chunks_exact_mut(2).zip(even).zip(odd)
                        {
                            pair[0] = e;
                            pair[1] = o;
                        }
                    }
                    _ => {
                        for (j, group) in padded[..len * s].chunks_exact_mut(s).enumerate() {
                            for (r, v) in group.iter_mut().enumerate() {
                                *v = phases[r * len + j];
                            }
                        }
                    }
                }
                for (d, v) in plane[(y - p) * n..][..n].iter_mut().zip(&padded[p..p + n]) {
                    *d += v;
                }
            }
        }
    }
}

/// Layers with at most this many small-side channels (an output layer's 1 or 3 image
/// channels) run as direct loops instead of columns and a product: their columns have
/// `c_large * k * k` rows for a product with at most this many rows, so writing and reading
/// them costs more than the product itself. The image networks' 3x3 output layer (32
/// channels in, 1 out, 64 px) moved 1.2 million column values an image three times a step
/// for 1.2 million multiply-adds each.
const DIRECT_MAX_CHANNELS: usize = 4;

fn direct(g: &Geometry) -> bool {
    g.c_small <= DIRECT_MAX_CHANNELS
}

/// The small-side columns `ox` whose large-side column `ox * stride + kx - padding` lies
/// inside the image, for kernel column `kx`.
#[inline(always)]
fn tap_range(g: &Geometry, kx: usize) -> std::ops::Range<usize> {
    let (n, s, p) = (g.large, g.stride, g.padding);
    let lo = p.saturating_sub(kx).div_ceil(s);
    let hi = match (n + p).checked_sub(kx + 1) {
        Some(last) => (last / s + 1).min(g.small),
        None => 0,
    };
    lo..hi.max(lo)
}

/// The large-side row read by small-side row `oy` through kernel row `ky`, if inside.
#[inline(always)]
fn tap_row(g: &Geometry, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky)
        .checked_sub(g.padding)
        .filter(|&y| y < g.large)
}

/// `dst[i] += a * src[i * stride]` over `dst`.
#[inline(always)]
fn axpy_strided(dst: &mut [f32], a: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        for (d, v) in dst.iter_mut().zip(src) {
            *d += a * v;
        }
    } else {
        for (d, v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d += a * v;
        }
    }
}

/// `dst[i * stride] += a * src[i]` over `src`.
#[inline(always)]
fn axpy_scatter(dst: &mut [f32], a: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        for (d, v) in dst.iter_mut().zip(src) {
            *d += a * v;
        }
    } else {
        for (d, v) in dst.iter_mut().step_by(stride).zip(src) {
            *d += a * v;
        }
    }
}

/// `sum(a[i] * b[i * stride])` over `a`.
#[inline(always)]
fn dot_strided(a: &[f32], b: &[f32], stride: usize) -> f32 {
    if stride == 1 {
        return dot(a, b);
    }
    a.iter()
        .zip(b.iter().step_by(stride))
        .map(|(x, y)| x * y)
        .sum()
}

/// Lanes [`dot`] sums side by side: four AVX2 vectors, so that four chains of additions
/// run at once instead of waiting on each other's latency.
const DOT_LANES: usize = 32;

/// `sum(a[i] * b[i])` over `a`, in [`DOT_LANES`] lanes added in a fixed order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    let mut lanes = [0.0f32; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..DOT_LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// One tap of a direct layer: small-side channel `co` and row `oy` meet large-side channel
/// `c` through weight `w[weight]`, small-side columns `cols` against the large-side plane
/// from `large_at` on (at the stride).
struct Tap {
    co: usize,
    c: usize,
    oy: usize,
    weight: usize,
    cols: std::ops::Range<usize>,
    large_at: usize,
}

/// Calls `f` on every tap with columns inside the image, in the order co, c, ky, oy, kx
/// (the order each output value's terms are added in).
#[inline(always)]
fn for_each_tap(g: &Geometry, mut f: impl FnMut(Tap)) {
    let (n, k, s, p) = (g.large, g.k, g.stride, g.padding);
    for co in 0..g.c_small {
        for c in 0..g.c_large {
            for ky in 0..k {
                for oy in 0..g.small {
                    let Some(y) = tap_row(g, oy, ky) else {
                        continue;
                    };
                    for kx in 0..k {
                        let cols = tap_range(g, kx);
                        if cols.is_empty() {
                            continue;
                        }
                        let large_at = y * n + cols.start * s + kx - p;
                        let weight = ((co * g.c_large + c) * k + ky) * k + kx;
                        f(Tap {
                            co,
                            c,
                            oy,
                            weight,
                            cols,
                            large_at,
                        });
                    }
                }
            }
        }
    }
}

/// [`conv_forward`] of one image by direct loops: `out` `[c_small, small^2]` holds the
/// bias and gets the taps added.
#[inline(always)]
fn direct_forward(g: &Geometry, image: &[f32], w: &[f32], out: &mut [f32]) {
    if let Some(flat) = Flat::of(g) {
        return flat.forward(g, image, w, out);
    }
    let (n, m) = (g.large, g.small);
    for_each_tap(
        g,
        #[inline(always)]
        |t| {
            let row = &mut out[(t.co * m + t.oy) * m..];
            let src = &image[t.c * n * n + t.large_at..];
            axpy_strided(&mut row[t.cols], w[t.weight], src, g.stride);
        },
    );
}

/// [`conv_adjoint`] of one image by direct loops: adds the taps of `y` `[c_small,
/// small^2]` onto `out` `[c_large, large^2]`.
#[inline(always)]
fn direct_adjoint(g: &Geometry, y: &[f32], w: &[f32], out: &mut [f32]) {
    if let Some(flat) = Flat::of(g) {
        return flat.adjoint(g, y, w, out);
    }
    let (n, m) = (g.large, g.small);
    for_each_tap(
        g,
        #[inline(always)]
        |t| {
            let dst = &mut out[t.c * n * n + t.large_at..];
            let src = &y[(t.co * m + t.oy) * m..][t.cols];
            axpy_scatter(dst, w[t.weight], src, g.stride);
        },
    );
}

/// A stride-1 direct layer on planes laid out at the zero-padded input's width: there a
/// tap `(ky, kx)` is one shift of the whole plane, so each weight multiplies the plane as
/// a whole ([`gather_taps`], in blocks) instead of one short row at a time with its range
/// worked out (the output layer's rows, 64 values split at the borders, spent more time on
/// ranges and slices than on arithmetic: the direct loops were 15% of a 3-channel training
/// step).
///
/// Each value's terms are added in the order of the row-by-row loops ([`for_each_tap`]);
/// the taps that fall in the padding add `w * 0`, which leaves every nonzero sum as it is
/// (only an exact zero's sign could differ).
struct Flat {
    /// Padded side `large + 2 * padding`: the row stride of every plane here.
    width: usize,
    /// Flat positions from the first small-side value to the last, at that stride.
    span: usize,
}

impl Flat {
    #[inline(always)]
    fn of(g: &Geometry) -> Option<Self> {
        let width = g.large + 2 * g.padding;
        (g.stride == 1 && g.small > 0 && g.padding < g.k).then(|| Self {
            width,
            span: (g.small - 1) * width + g.small,
        })
    }

    /// `plane` `[side, side]` into `padded` at row stride `width`, from row and column `at`.
    #[inline(always)]
    fn place(&self, plane: &[f32], side: usize, at: usize, padded: &mut [f32]) {
        for (y, row) in plane.chunks_exact(side).enumerate() {
            padded[(y + at) * self.width + at..][..side].copy_from_slice(row);
        }
    }

    /// The inverse of [`Self::place`].
    #[inline(always)]
    fn take(&self, padded: &[f32], side: usize, at: usize, plane: &mut [f32]) {
        for (y, row) in plane.chunks_exact_mut(side).enumerate() {
            row.copy_from_slice(&padded[(y + at) * self.width + at..][..side]);
        }
    }

    /// Planes `[count, side, side]` into a new zeroed buffer of `count * stride` values,
    /// each placed from `offset` on at this width (zeros between rows), `stride` apart.
    #[inline(always)]
    fn spread(&self, planes: &[f32], side: usize, stride: usize, offset: usize) -> Vec<f32> {
        let count = planes.len() / (side * side);
        let mut spread = vec![0.0f32; count * stride];
        for (i, plane) in planes.chunks_exact(side * side).enumerate() {
            self.place(plane, side, 0, &mut spread[i * stride + offset..]);
        }
        spread
    }

    /// Calls `f(c, padded)` for each large-side channel `c` of `image`, with `padded` its
    /// plane at this width inside a border of zeros `padding` wide.
    #[inline(always)]
    fn for_each_large_plane(&self, g: &Geometry, image: &[f32], mut f: impl FnMut(usize, &[f32])) {
        let n = g.large;
        // The border is never written, so it stays zero from one channel to the next.
        let mut padded = vec![0.0f32; self.width * self.width];
        for c in 0..g.c_large {
            self.place(&image[c * n * n..][..n * n], n, g.padding, &mut padded);
            f(c, &padded);
        }
    }

    /// Where tap `(ky, kx)` of a plane starts at this width: `ky * width + kx`.
    #[inline(always)]
    fn shifts(&self, k: usize) -> Vec<usize> {
        (0..k * k).map(|t| t / k * self.width + t % k).collect()
    }

    /// [`direct_forward`]: the small-side planes gather their taps, input channel by
    /// channel.
    #[inline(always)]
    fn forward(&self, g: &Geometry, image: &[f32], w: &[f32], out: &mut [f32]) {
        let (m, k, c_large) = (g.small, g.k, g.c_large);
        let shifts = self.shifts(k);
        let mut sums = self.spread(out, m, self.span, 0);
        self.for_each_large_plane(g, image, |c, padded| {
            for (co, dst) in sums.chunks_exact_mut(self.span).enumerate() {
                let taps = &w[(co * c_large + c) * k * k..][..k * k];
                gather_taps(dst, &[(padded, taps)], &shifts);
            }
        });
        for (co, plane) in out.chunks_exact_mut(m * m).enumerate() {
            self.take(&sums[co * self.span..], m, 0, plane);
        }
    }

    /// [`direct_weight_grad`]: each weight's sum is one dot product of the small-side
    /// plane, laid out at the padded width with zeros between its rows, with the padded
    /// large-side plane from the tap's shift on (the zeros take `0 * x` terms in place of
    /// the row ends). The row-by-row sums did a horizontal sum of their lanes per output
    /// row and tap: 6% of a 3-channel training step, most of it in those sums.
    #[inline(always)]
    fn weight_grad(&self, g: &Geometry, image: &[f32], small: &[f32], acc: &mut [f32]) {
        let (m, k, c_large) = (g.small, g.k, g.c_large);
        let shifts = self.shifts(k);
        let dy = self.spread(small, m, self.span, 0);
        self.for_each_large_plane(g, image, |c, padded| {
            for (co, d) in dy.chunks_exact(self.span).enumerate() {
                let sums = &mut acc[(co * c_large + c) * k * k..][..k * k];
                for (sum, &shift) in sums.iter_mut().zip(&shifts) {
                    *sum += dot(d, &padded[shift..]);
                }
            }
        });
    }

    /// [`direct_adjoint`]: each large-side plane gathers the taps of every small-side
    /// channel. The small side's planes sit at the padded width with zeros between rows,
    /// and with a margin of zeros around them as wide as the farthest tap, so that every
    /// tap reads inside them (the taps that fall in the margin add `w * 0`).
    #[inline(always)]
    fn adjoint(&self, g: &Geometry, y: &[f32], w: &[f32], out: &mut [f32]) {
        let (n, m, k, c_large) = (g.large, g.small, g.k, g.c_large);
        let shifts = self.shifts(k);
        let margin = shifts[k * k - 1];
        let plane_len = margin + self.width * self.width;
        let small = self.spread(y, m, plane_len, margin);
        // Read backwards: tap t adds `small[q - shift_t]` onto position `q`.
        let back: Vec<usize> = shifts.iter().map(|&s| margin - s).collect();
        let mut padded = vec![0.0f32; self.width * self.width];
        for (c, plane) in out.chunks_exact_mut(n * n).enumerate() {
            padded.fill(0.0);
            self.place(plane, n, g.padding, &mut padded);
            let sources: Vec<(&[f32], &[f32])> = small
                .chunks_exact(plane_len)
                .enumerate()
                .map(|(co, src)| (src, &w[(co * c_large + c) * k * k..][..k * k]))
                .collect();
            gather_taps(&mut padded, &sources, &back);
            self.take(&padded, n, g.padding, plane);
        }
    }
}

/// Values of `dst` held in registers while [`gather_taps`] adds their taps: 4 AVX-512
/// vectors.
const TAP_BLOCK: usize = 64;

/// `dst[i] += a_t * src[i + shift_t]` for each source `(src, a)` in turn and each of
/// its taps `t` in turn, the same terms in the same order as one pass over `dst` per tap,
/// but with each block of `dst` loaded and stored once instead of once a tap (the direct
/// output layer did a load, a store and a multiply-add per value and tap, twice the loads
/// and stores the CPU can issue beside its multiply-adds).
#[inline(always)]
fn gather_taps(dst: &mut [f32], sources: &[(&[f32], &[f32])], shifts: &[usize]) {
    let mut blocks = dst.chunks_exact_mut(TAP_BLOCK);
    let mut at = 0;
    for d in &mut blocks {
        let mut acc = [0.0f32; TAP_BLOCK];
        acc.copy_from_slice(d);
        for &(src, taps) in sources {
            for (&shift, &a) in shifts.iter().zip(taps) {
                let x = &src[at + shift..][..TAP_BLOCK];
                for (s, v) in acc.iter_mut().zip(x) {
                    *s += a * v;
                }
            }
        }
        d.copy_from_slice(&acc);
        at += TAP_BLOCK;
    }
    let rest = blocks.into_remainder();
    for &(src, taps) in sources {
        for (&shift, &a) in shifts.iter().zip(taps) {
            axpy_strided(rest, a, &src[at + shift..], 1);
        }
    }
}

/// [`conv_weight_grad`]'s share of one image by direct loops, added to `acc` `[c_small,
/// c_large * k * k]`.
#[inline(always)]
fn direct_weight_grad(g: &Geometry, image: &[f32], small: &[f32], acc: &mut [f32]) {
    if let Some(flat) = Flat::of(g) {
        return flat.weight_grad(g, image, small, acc);
    }
    let (n, k, s, p, m) = (g.large, g.k, g.stride, g.padding, g.small);
    for co in 0..g.c_small {
        let dy = &small[co * m * m..][..m * m];
        for c in 0..g.c_large {
            let src = &image[c * n * n..][..n * n];
            for ky in 0..k {
                for kx in 0..k {
                    let r = tap_range(g, kx);
                    if r.is_empty() {
                        continue;
                    }
                    let mut sum = 0.0f32;
                    for oy in 0..m {
                        let Some(y) = tap_row(g, oy, ky) else {
                            continue;
                        };
                        let from = y * n + r.start * s + kx - p;
                        sum += dot_strided(&dy[oy * m..][r.clone()], &src[from..], s);
                    }
                    acc[((co * g.c_large + c) * k + ky) * k + kx] += sum;
                }
            }
        }
    }
}

/// Column bands over the small side: whole rows of it, about [`BAND_BYTES`] of columns
/// each, so a band's columns stay in cache between being written and being read.
#[inline(always)]
fn bands(g: &Geometry) -> impl Iterator<Item = std::ops::Range<usize>> {
    let per_row = g.col_rows() * g.small * std::mem::size_of::<f32>();
    let step = (BAND_BYTES / per_row.max(1)).clamp(1, g.small);
    (0..g.small.div_ceil(step)).map(move |i| i * step..((i + 1) * step).min(g.small))
}

thread_local! {
    /// Each thread's column buffer, kept between images and layers: a fresh one per image
    /// was zero-filled (every value is then written by [`im2col`] or a product) and, at up
    /// to [`BAND_BYTES`], often fresh pages from the kernel: 1.6% of a training step.
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Calls `f(band, start, len, cols)` for each band of `g` in order: the band's small-side
/// rows, its first position and number of positions on the small side, and the thread's
/// column buffer cut to its `[c_large * k * k, len]` columns, whose values are unspecified
/// (each user writes the part it reads first). The buffer is taken out of the thread's slot
/// for the loop, so `f` runs here, inside [`vectorized`], not inside the slot's accessor
/// (if `f` ever reached another image's work on this thread, that one would find the slot
/// empty and allocate its own).
#[inline(always)]
fn for_each_band(
    g: &Geometry,
    mut f: impl FnMut(std::ops::Range<usize>, usize, usize, &mut [f32]),
) {
    let widest = bands(g).map(|b| b.len()).max().unwrap_or(0);
    let mut cols = COLUMNS.take();
    cols.resize(cols.len().max(g.col_rows() * widest * g.small), 0.0);
    for band in bands(g) {
        let (start, len) = (band.start * g.small, band.len() * g.small);
        f(band, start, len, &mut cols[..g.col_rows() * len]);
    }
    COLUMNS.set(cols);
}

/// A row-major matrix view for [`matmul`]: `rows x cols` with row stride `rs` and column
/// stride `cs` (a transposed view swaps them).
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub(super) ptr: *const f32,
    pub(super) rs: isize,
    pub(super) cs: isize,
}

// SAFETY: a Mat only reads the slice it was made from, which its maker keeps alive and
// unchanged for as long as the Mat is used (every use below is within one function call).
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    pub(super) fn rows(data: &[f32], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
    pub(super) fn transposed(data: &[f32], cols: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// Panics unless `dst` holds `m` rows of `n` values at row stride `dst_rs`: what every
/// product writing through a raw pointer relies on.
fn check_destination(dst: &[f32], dst_rs: usize, m: usize, n: usize) {
    assert!(
        n <= dst_rs && dst.len() >= m.saturating_sub(1) * dst_rs + n,
        "matmul: destination too small"
    );
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]` on this thread, `dst` row-major with row
/// stride `dst_rs`; `accumulate` adds to `dst`.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    check_destination(dst, dst_rs, m, n);
    // SAFETY: `dst` holds m rows of n values at stride dst_rs (checked above).
    unsafe { matmul_raw(dst.as_mut_ptr(), dst_rs, m, n, k, lhs, rhs, accumulate) }
}

/// [`matmul`] into a raw destination.
///
/// # Safety
/// `dst` must be valid for writes of m rows of n values at row stride `dst_rs`, written by
/// no one else during the call; `lhs` and `rhs` must be views of live slices holding
/// `m x k` and `k x n` values at their strides (the callers derive every size from the
/// shapes of the slices they view).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul_raw(
    dst: *mut f32,
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The precision of a convolution's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    F32,
    /// bfloat16 operands, float32 sums ([`super::bf16`]).
    Bf16,
}

impl Precision {
    /// Training's: bfloat16 where asked for and the CPU has it (see [`super::bf16`]), else
    /// float32. Inference is always float32.
    fn training() -> Self {
        #[cfg(test)]
        if let Some(p) = tests::TRAINING_PRECISION.get() {
            return p;
        }
        match super::bf16::available() {
            true => Self::Bf16,
            false => Self::F32,
        }
    }
}

/// [`matmul`] at `precision`.
#[allow(clippy::too_many_arguments)]
fn product(
    precision: Precision,
    dst: &mut [f32],
    dst_rs: usize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    match precision {
        Precision::F32 => matmul(dst, dst_rs, m, n, k, lhs, rhs, accumulate),
        Precision::Bf16 => {
            check_destination(dst, dst_rs, m, n);
            // SAFETY: `dst` holds m rows of n values at stride dst_rs (checked above);
            // Bf16 is only chosen where the CPU runs the kernel (Precision::training).
            unsafe {
                super::bf16::matmul(
                    dst.as_mut_ptr(),
                    dst_rs as isize,
                    1,
                    m,
                    n,
                    k,
                    lhs,
                    rhs,
                    accumulate,
                )
            }
        }
    }
}

/// A layer's weight as the left operand of its products, `m x k`: packed once per layer
/// call for bfloat16, so every image and band of the batch reads the same packed copy.
struct WeightOperand {
    view: Mat,
    m: usize,
    k: usize,
    packed: Option<super::bf16::PackedA>,
}

impl WeightOperand {
    /// `view` must stay valid while the operand is used (the callers keep the weight's
    /// slice alive over the whole layer call).
    fn new(precision: Precision, view: Mat, m: usize, k: usize) -> Self {
        let packed = (precision == Precision::Bf16).then(|| {
            // SAFETY: `view` holds m x k values (each caller makes it from the weight's
            // slice of that size); Bf16 is only chosen where the CPU runs the kernel.
            unsafe { super::bf16::PackedA::new(view, m, k) }
        });
        Self { view, m, k, packed }
    }

    /// `dst[m x n] (+)= weight * rhs[k x n]`, `dst` row-major at stride `dst_rs`.
    fn product(&self, dst: &mut [f32], dst_rs: usize, n: usize, rhs: Mat, accumulate: bool) {
        let (m, k) = (self.m, self.k);
        let Some(packed) = &self.packed else {
            return matmul(dst, dst_rs, m, n, k, self.view, rhs, accumulate);
        };
        check_destination(dst, dst_rs, m, n);
        // SAFETY: `dst` holds m rows of n values at stride dst_rs (checked above); `rhs`
        // views k x n live values (the callers' columns or gradients).
        unsafe {
            super::bf16::matmul_packed(
                dst.as_mut_ptr(),
                dst_rs as isize,
                1,
                packed,
                n,
                rhs,
                accumulate,
            )
        }
    }
}

/// The contiguous f32 values of a Flex tensor.
pub(crate) fn values(t: &FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "the CPU kernels take float32 tensors"
    );
    t.to_contiguous()
}

fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// A new output of `images` parts of `per` values, each part filled then passed to
/// `f(image index, part)`, one image per task, in parallel. A part is `planes.len()`
/// equal planes, plane `i` filled with `planes[i]` (a layer's bias); with no `planes`, it
/// is zero-filled. Each part is filled by the task that then works on it, just before,
/// instead of the whole output on the calling thread while the others wait
/// (`vec![0.0; n]`: 2% of a training step on one thread), and only once (zeroing before
/// the bias was 2-4% of training the denoiser's U-Net).
fn per_image(
    images: usize,
    per: usize,
    planes: Option<&[f32]>,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let len = images * per;
    if len == 0 {
        return Vec::new();
    }
    let plane = match planes {
        Some(v) if !v.is_empty() && per.is_multiple_of(v.len()) => per / v.len(),
        Some(v) => panic!("per_image: {per} values per image in {} planes", v.len()),
        None => per,
    };
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(per)
        .enumerate()
        .for_each(|(b, part)| {
            let values = planes.unwrap_or(&[0.0]);
            for (p, &v) in part.chunks_mut(plane).zip(values) {
                p.fill(std::mem::MaybeUninit::new(v));
            }
            // SAFETY: every value of `part` was written just above, and MaybeUninit<f32>
            // has f32's layout.
            let o = unsafe { &mut *(part as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
            vectorized(
                #[inline(always)]
                || f(b, o),
            )
        });
    // SAFETY: the first `len` values are written: the parts above cover them all.
    unsafe { out.set_len(len) };
    out
}

/// Runs `f` compiled for the widest vector instructions the CPU has, AVX-512 or AVX2,
/// chosen at run time (pulp's dispatch): the loops of the columns, the direct layers, the
/// activations and the box filter then run 16 or 8 lanes wide instead of the baseline
/// build's 4 (SSE2). The functions `f` calls are `#[inline(always)]` so that they are
/// compiled inside it. Results stay bit for bit those of the baseline build: lanes only
/// split work between independent values, and LLVM never fuses a multiply and an add
/// into one rounding without fast-math flags, which Rust does not set.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Sums `f(image)` (each `len` values) over all images, in fixed groups of [`GRAD_GROUP`]
/// added in order, so the result does not depend on the number of threads.
fn sum_over_images(batch: usize, len: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let groups: Vec<Vec<f32>> = (0..batch.div_ceil(GRAD_GROUP))
        .into_par_iter()
        .map(|g| {
            let mut acc = vec![0.0f32; len];
            for b in g * GRAD_GROUP..((g + 1) * GRAD_GROUP).min(batch) {
                vectorized(
                    #[inline(always)]
                    || f(b, &mut acc),
                );
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f32; len];
    for g in groups {
        for (t, v) in total.iter_mut().zip(g) {
            *t += v;
        }
    }
    total
}

/// Values [`bias_grad`] sums side by side, each lane in its own `f64`.
const BIAS_LANES: usize = 32;

/// Sum over images and positions of `grad` `[b, c, area]`: the bias gradient. Channels
/// run in parallel (one thread took 2% of a training step), each summed in image order
/// into [`BIAS_LANES`] `f64` lanes, then across them: one `f64` running sum was a chain of
/// dependent additions, 2% of a training step in `perf` (1% in lanes). `f64` keeps the sums exact to far below
/// `f32`'s rounding, so the result rarely differs from the one-chain sum's in any bit
/// (3-epoch weights of the three image networks are byte for byte the same).
fn bias_grad(grad: &[f32], batch: usize, channels: usize, area: usize) -> Vec<f32> {
    (0..channels)
        .into_par_iter()
        .map(|c| {
            vectorized(
                #[inline(always)]
                || {
                    let mut lanes = [0.0f64; BIAS_LANES];
                    for b in 0..batch {
                        let plane = &grad[(b * channels + c) * area..][..area];
                        let blocks = plane.chunks_exact(BIAS_LANES);
                        let tail = blocks.remainder();
                        for block in blocks {
                            for (l, &v) in lanes.iter_mut().zip(block) {
                                *l += v as f64;
                            }
                        }
                        for (l, &v) in lanes.iter_mut().zip(tail) {
                            *l += v as f64;
                        }
                    }
                    lanes.iter().sum::<f64>() as f32
                },
            )
        })
        .collect()
}

/// Convolution forward: `[b, c_large, large^2]` -> `[b, c_small, small^2]`, then
/// `activation`.
fn conv_forward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    activation: Activation,
    p: Precision,
) -> Vec<f32> {
    let (rows, area) = (g.col_rows(), g.small_area());
    let weight = WeightOperand::new(p, Mat::rows(w, rows), g.c_small, rows);
    assert_eq!(
        bias.len(),
        g.c_small,
        "conv_forward: a bias per output channel"
    );
    per_image(
        g.batch,
        g.c_small * area,
        Some(bias),
        #[inline(always)]
        |b, o| {
            let image = &x[b * g.c_large * g.large_area()..][..g.c_large * g.large_area()];
            if direct(g) {
                direct_forward(g, image, w, o);
            } else {
                for_each_band(
                    g,
                    #[inline(always)]
                    |band, start, len, cols| {
                        im2col(g, image, band, cols);
                        weight.product(&mut o[start..], area, len, Mat::rows(cols, len), true);
                    },
                );
            }
            activation.apply(o);
        },
    )
}

/// Adjoint of the convolution in its input: `[b, c_small, small^2]` (with the weight
/// `[c_small, c_large * k * k]`) -> `[b, c_large, large^2]`, plus `bias` per channel, then
/// `activation`. A transposed convolution's forward pass and a convolution's input
/// gradient.
fn conv_adjoint(
    g: &Geometry,
    y: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    activation: Activation,
    p: Precision,
) -> Vec<f32> {
    let (rows, area) = (g.col_rows(), g.small_area());
    let weight = WeightOperand::new(p, Mat::transposed(w, rows), rows, g.c_small);
    if let Some(bias) = bias {
        assert_eq!(
            bias.len(),
            g.c_large,
            "conv_adjoint: a bias per output channel"
        );
    }
    per_image(
        g.batch,
        g.c_large * g.large_area(),
        bias,
        #[inline(always)]
        |b, o| {
            let yb = &y[b * g.c_small * area..][..g.c_small * area];
            if direct(g) {
                direct_adjoint(g, yb, w, o);
            } else {
                for_each_band(
                    g,
                    #[inline(always)]
                    |band, start, len, cols| {
                        weight.product(cols, len, len, Mat::rows(&yb[start..], area), false);
                        col2im(g, cols, band, o);
                    },
                );
            }
            activation.apply(o);
        },
    )
}

/// Weight gradient `[c_small, c_large * k * k]` of a convolution from its large-side input
/// and small-side output gradient (for a transposed convolution: its output gradient and
/// input, with the weight laid out `[c_small, c_large, k, k]` as it is).
fn conv_weight_grad(g: &Geometry, large: &[f32], small: &[f32], p: Precision) -> Vec<f32> {
    let (rows, area) = (g.col_rows(), g.small_area());
    // The sums are kept transposed, `[c_k_k, c_small]`: columns times the output
    // gradient's transpose. Both operands run along the summed positions, and both
    // products run that shape several times faster with the many column rows as the
    // output's rows: `gemm` at 95-108 GFLOP/s against 19-25 the other way round for
    // 32 x 512..1024 (one core, the development machine; bf16 130-148 against 118-136).
    let transposed = !direct(g);
    let total = sum_over_images(
        g.batch,
        g.c_small * rows,
        #[inline(always)]
        |b, acc| {
            let image = &large[b * g.c_large * g.large_area()..][..g.c_large * g.large_area()];
            let sb = &small[b * g.c_small * area..][..g.c_small * area];
            if direct(g) {
                return direct_weight_grad(g, image, sb, acc);
            }
            for_each_band(
                g,
                #[inline(always)]
                |band, start, len, cols| {
                    im2col(g, image, band, cols);
                    let (m, n, lhs, rhs) = match transposed {
                        true => (
                            rows,
                            g.c_small,
                            Mat::rows(cols, len),
                            Mat::transposed(&sb[start..], area),
                        ),
                        false => (
                            g.c_small,
                            rows,
                            Mat::rows(&sb[start..], area),
                            Mat::transposed(cols, len),
                        ),
                    };
                    product(p, acc, n, m, n, len, lhs, rhs, true);
                },
            );
        },
    );
    match transposed {
        true => (0..g.c_small * rows)
            .map(|i| total[(i % rows) * g.c_small + i / rows])
            .collect(),
        false => total,
    }
}

fn shape4(t: &FlexTensor) -> [usize; 4] {
    let s = t.shape();
    [s[0], s[1], s[2], s[3]]
}

/// One layer's forward pass: a convolution, or with `transposed` a transposed one, then
/// `act`, with its products at precision `p`.
fn layer_forward(
    g: &Geometry,
    transposed: bool,
    (x, weight, bias): (&FlexTensor, &FlexTensor, &FlexTensor),
    act: Activation,
    p: Precision,
) -> FlexTensor {
    let (x, w, bias) = (values(x), values(weight), values(bias));
    match transposed {
        true => {
            let out = conv_adjoint(g, x.storage(), w.storage(), Some(bias.storage()), act, p);
            tensor(out, [g.batch, g.c_large, g.large, g.large])
        }
        false => {
            let out = conv_forward(g, x.storage(), w.storage(), bias.storage(), act, p);
            tensor(out, [g.batch, g.c_small, g.small, g.small])
        }
    }
}

impl ConvKernels for Flex {
    fn conv2d_fast(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FlexTensor {
        let g = Geometry::of_conv(&shape4(&x), &shape4(&weight), stride, padding);
        layer_forward(&g, false, (&x, &weight, &bias), activation, Precision::F32)
    }

    fn conv_transpose2d_fast(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FlexTensor {
        let g = Geometry::of_transpose(&shape4(&x), &shape4(&weight), stride, padding);
        layer_forward(&g, true, (&x, &weight, &bias), activation, Precision::F32)
    }

    fn box_mean_fast(x: FlexTensor, window: usize) -> FlexTensor {
        box_filter(&x, window, false)
    }
}

/// Values in the window of radius `r` around position `i` of a line of `n`, clipped to the
/// line.
#[inline(always)]
fn window_count(i: usize, n: usize, r: usize) -> f32 {
    ((i + r + 1).min(n) - i.saturating_sub(r)) as f32
}

/// `out[i]`: the sum of `v` over the clipped window of radius `r` around `i`, added in
/// order from the window's first value. The windows that fit inside the line are summed as
/// `2r + 1` shifted copies of `v` added in turn, which vectorises across positions and keeps
/// every sum's order.
#[inline(always)]
fn window_sums(v: &[f32], out: &mut [f32], r: usize) {
    let n = v.len();
    for i in (0..n).filter(|&i| i < r || i + r >= n) {
        out[i] = v[i.saturating_sub(r)..(i + r + 1).min(n)].iter().sum();
    }
    if n > 2 * r {
        let inner = &mut out[r..n - r];
        inner.fill(-0.0);
        for d in 0..=2 * r {
            for (o, x) in inner.iter_mut().zip(&v[d..]) {
                *o += x;
            }
        }
    }
}

/// [`ConvKernels::box_mean_fast`] (rows, then columns) or, with `adjoint`, its transpose
/// (columns, then rows), plane by plane in parallel. Forward, each window's sum is divided
/// by its count; the adjoint spreads each value over the windows that hold it, divided by
/// their counts. The column pass adds whole rows, so both passes run along memory.
fn box_filter(x: &FlexTensor, window: usize, adjoint: bool) -> FlexTensor {
    let x = values(x);
    let [_, _, h, w] = shape4(&x);
    let r = window / 2;
    let mut out = vec![0.0f32; x.storage::<f32>().len()];
    out.par_chunks_mut(h * w)
        .zip(x.storage::<f32>().par_chunks(h * w))
        .for_each(|(dst, src)| {
            vectorized(
                #[inline(always)]
                || {
                    let mut mid = vec![0.0f32; h * w];
                    let mut scaled = vec![0.0f32; w];
                    let mut rows = |src: &[f32], dst: &mut [f32]| {
                        for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
                            if adjoint {
                                for (j, (c, v)) in scaled.iter_mut().zip(s).enumerate() {
                                    *c = v / window_count(j, w, r);
                                }
                                window_sums(&scaled, d, r);
                            } else {
                                window_sums(s, d, r);
                                for (i, v) in d.iter_mut().enumerate() {
                                    *v /= window_count(i, w, r);
                                }
                            }
                        }
                    };
                    let cols = |src: &[f32], dst: &mut [f32]| {
                        for (i, d) in dst.chunks_exact_mut(w).enumerate() {
                            d.fill(-0.0);
                            for j in i.saturating_sub(r)..(i + r + 1).min(h) {
                                let s = &src[j * w..(j + 1) * w];
                                match adjoint {
                                    true => {
                                        let count = window_count(j, h, r);
                                        d.iter_mut().zip(s).for_each(|(o, v)| *o += v / count);
                                    }
                                    false => d.iter_mut().zip(s).for_each(|(o, v)| *o += v),
                                }
                            }
                            if !adjoint {
                                let count = window_count(i, h, r);
                                d.iter_mut().for_each(|v| *v /= count);
                            }
                        }
                    };
                    if adjoint {
                        cols(src, &mut mid);
                        rows(&mid, dst);
                    } else {
                        rows(src, &mut mid);
                        cols(&mid, dst);
                    }
                },
            )
        });
    FlexTensor::from_data(TensorData::new(out, x.shape()))
}

#[derive(Debug)]
struct BoxMeanBackward;

impl Backward<Flex, 1> for BoxMeanBackward {
    /// The window.
    type State = usize;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, box_filter(&grad, ops.state, true));
        }
    }
}

/// What the backward pass of either layer needs.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
    geometry: Geometry,
    /// A transposed convolution: its input is on the small side, its output on the large.
    transposed: bool,
    /// The forward pass's products' precision, kept for the backward pass's.
    precision: Precision,
    /// Unless the activation is the identity: it and the layer's output, from which its
    /// gradient is read.
    activated: Option<(Activation, FlexTensor)>,
}

/// Values per task of an activation's backward pass over a whole batch.
const ACTIVATION_CHUNK: usize = 1 << 16;

#[derive(Debug)]
struct LayerBackward;

impl Backward<Flex, 3> for LayerBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let mut grad = values(&grads.consume::<Flex>(&ops.node));
        let Saved {
            x,
            weight,
            geometry: g,
            transposed,
            precision: p,
            activated,
        } = ops.state;
        if let Some((activation, out)) = activated {
            // In place unless another node still holds the gradient (then copied first),
            // in chunks across threads.
            let out = values(&out);
            grad.storage_mut::<f32>()
                .par_chunks_mut(ACTIVATION_CHUNK)
                .zip(out.storage::<f32>().par_chunks(ACTIVATION_CHUNK))
                .for_each(|(grad, out)| vectorized(|| activation.backward(out, grad)));
        }
        let dy = grad.storage::<f32>();
        if let Some(node) = node_x {
            let w = values(&weight);
            let dx = if transposed {
                let bias = vec![0.0; g.c_small];
                let dx = conv_forward(&g, dy, w.storage(), &bias, Activation::Identity, p);
                tensor(dx, [g.batch, g.c_small, g.small, g.small])
            } else {
                let dx = conv_adjoint(&g, dy, w.storage(), None, Activation::Identity, p);
                tensor(dx, [g.batch, g.c_large, g.large, g.large])
            };
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_w {
            let x = values(&x);
            let dw = match transposed {
                true => conv_weight_grad(&g, dy, x.storage(), p),
                false => conv_weight_grad(&g, x.storage(), dy, p),
            };
            grads.register::<Flex>(node.id, tensor(dw, [g.c_small, g.c_large, g.k, g.k]));
        }
        if let Some(node) = node_b {
            let (channels, area) = match transposed {
                true => (g.c_large, g.large_area()),
                false => (g.c_small, g.small_area()),
            };
            let db = bias_grad(dy, g.batch, channels, area);
            let db = FlexTensor::from_data(TensorData::new(db, [channels]));
            grads.register::<Flex>(node.id, db);
        }
    }
}

/// Runs one layer on the inner tensors and records it for the backward pass.
fn tracked_layer<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    (stride, padding): (usize, usize),
    transposed: bool,
    activation: Activation,
) -> FloatTensor<Autodiff<Flex, C>> {
    let (xs, ws) = (x.shape().dims::<4>(), weight.shape().dims::<4>());
    let geometry = match transposed {
        true => Geometry::of_transpose(&xs, &ws, stride, padding),
        false => Geometry::of_conv(&xs, &ws, stride, padding),
    };
    let nodes = [x.node(), weight.node(), bias.node()];
    let (x, weight, bias) = (
        x.into_primitive(),
        weight.into_primitive(),
        bias.into_primitive(),
    );
    let precision = Precision::training();
    let out = layer_forward(
        &geometry,
        transposed,
        (&x, &weight, &bias),
        activation,
        precision,
    );
    let saved = Saved {
        x,
        weight,
        geometry,
        transposed,
        precision,
        activated: (activation != Activation::Identity).then(|| (activation, out.clone())),
    };
    match LayerBackward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<C: CheckpointStrategy> ConvKernels for Autodiff<Flex, C> {
    fn box_mean_fast(x: FloatTensor<Self>, window: usize) -> FloatTensor<Self> {
        let node = x.node();
        let out = box_filter(&x.into_primitive(), window, false);
        match BoxMeanBackward
            .prepare::<C>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(window, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn conv2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FloatTensor<Self> {
        tracked_layer::<C>(x, weight, bias, (stride, padding), false, activation)
    }

    fn conv_transpose2d_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> FloatTensor<Self> {
        tracked_layer::<C>(x, weight, bias, (stride, padding), true, activation)
    }
}

/// `activation` of `conv.forward(x)` through this module's kernels when they apply (Flex
/// device, square image and kernel, equal stride and padding, bias, no groups or
/// dilation), else burn's own.
pub fn conv_layer(
    conv: &burn::nn::conv::Conv2d,
    x: Tensor<4>,
    activation: Activation,
) -> Tensor<4> {
    use burn::nn::PaddingConfig2d;
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(a, b, c, d) if a == b && b == c && c == d => Some(a),
        PaddingConfig2d::Valid => Some(0),
        _ => None,
    };
    match (&conv.bias, padding) {
        (Some(bias), Some(p))
            if supported(&x.device())
                && x.dims()[2] == x.dims()[3]
                && conv.kernel_size[0] == conv.kernel_size[1]
                && conv.stride[0] == conv.stride[1]
                && conv.dilation == [1, 1]
                && conv.groups == 1 =>
        {
            conv2d(
                x,
                conv.weight.val(),
                bias.val(),
                conv.stride[0],
                p,
                activation,
            )
        }
        _ => activation.burn(conv.forward(x)),
    }
}

/// `activation` of `deconv.forward(x)` through this module's kernels when they apply, else
/// burn's own.
pub fn conv_transpose_layer(
    deconv: &burn::nn::conv::ConvTranspose2d,
    x: Tensor<4>,
    activation: Activation,
) -> Tensor<4> {
    match &deconv.bias {
        Some(bias)
            if supported(&x.device())
                && x.dims()[2] == x.dims()[3]
                && deconv.kernel_size[0] == deconv.kernel_size[1]
                && deconv.stride[0] == deconv.stride[1]
                && deconv.padding[0] == deconv.padding[1]
                && deconv.padding_out == [0, 0]
                && deconv.dilation == [1, 1]
                && deconv.groups == 1 =>
        {
            conv_transpose2d(
                x,
                deconv.weight.val(),
                bias.val(),
                deconv.stride[0],
                deconv.padding[0],
                activation,
            )
        }
        _ => activation.burn(deconv.forward(x)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{Conv2dConfig, ConvTranspose2dConfig};

    thread_local! {
        /// Overrides [`Precision::training`] on a test's thread.
        pub(super) static TRAINING_PRECISION: std::cell::Cell<Option<Precision>> =
            const { std::cell::Cell::new(None) };
    }

    /// A standard normal tensor from its own seeded generator, not the device's: the
    /// device's is shared by every test running at once, so draws from it interleave and a
    /// failure would not repeat.
    fn normal<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        use rand::SeedableRng;
        use rand_distr::Distribution as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| rand_distr::StandardNormal.sample(&mut rng))
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// `a` and `b` agree to 1e-5 of `b`'s largest magnitude (also used by the dense kernels'
    /// tests).
    pub(crate) fn assert_close<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>) {
        assert_within(what, a, b, 1e-5);
    }

    /// `a` and `b` differ by at most `tolerance` times the largest magnitude in `b`.
    fn assert_within<const D: usize>(what: &str, a: Tensor<D>, b: Tensor<D>, tolerance: f32) {
        let values = |t: Tensor<D>| t.into_data().iter::<f32>().collect::<Vec<f32>>();
        let (a, b) = (values(a), values(b));
        assert_eq!(a.len(), b.len(), "{what}: sizes");
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a
            .iter()
            .zip(&b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= tolerance * scale,
            "{what}: max difference {worst} against scale {scale}"
        );
    }

    /// Output, input gradient and weight and bias gradients of `ours` and `reference` (the
    /// same layer through burn's own kernels) agree, for a loss that weighs every output
    /// differently.
    fn check(
        what: &str,
        x_shape: [usize; 4],
        ours: impl Fn(Tensor<4>) -> Tensor<4>,
        reference: impl Fn(Tensor<4>) -> Tensor<4>,
        weight: Tensor<4>,
        bias: Tensor<1>,
    ) {
        let device = Device::flex().autodiff();
        // bfloat16 operands carry 8 significant bits (relative error up to 2^-9 each).
        let tolerance = match TRAINING_PRECISION.get() {
            Some(Precision::Bf16) => 1e-2,
            _ => 1e-5,
        };
        let assert_close =
            |what: &str, a: Tensor<4>, b: Tensor<4>| assert_within(what, a, b, tolerance);
        let x = normal(x_shape, 7, &device).require_grad();
        let a = ours(x.clone());
        let b = reference(x.clone());
        let w = normal(a.dims(), 8, &device);
        assert_close(
            &format!("{what} output"),
            a.clone().inner(),
            b.clone().inner(),
        );
        let ga = (a * w.clone()).sum().backward();
        let gb = (b * w).sum().backward();
        assert_close(
            &format!("{what} input gradient"),
            x.grad(&ga).unwrap(),
            x.grad(&gb).unwrap(),
        );
        assert_close(
            &format!("{what} weight gradient"),
            weight.grad(&ga).unwrap(),
            weight.grad(&gb).unwrap(),
        );
        let (ba, bb) = (bias.grad(&ga).unwrap(), bias.grad(&gb).unwrap());
        assert_close(
            &format!("{what} bias gradient"),
            ba.unsqueeze::<4>(),
            bb.unsqueeze::<4>(),
        );
    }

    #[test]
    fn activations_give_known_values_and_gradients() {
        let x = [-2.0, -0.5, 0.0, -0.0, 0.5, 3.0, -1e-3, f32::NAN];
        let grad = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let run = |a: Activation| {
            let mut out = x;
            a.apply(&mut out);
            let mut g = grad;
            a.backward(&out, &mut g);
            (out, g)
        };
        let (out, g) = run(Activation::Leaky(0.25));
        assert_eq!(&out[..7], &[-0.5, -0.125, 0.0, -0.0, 0.5, 3.0, -0.25e-3]);
        assert_eq!(&g[..7], &[0.25, 0.5, 3.0, 4.0, 5.0, 6.0, 1.75]);
        assert!(out[7].is_nan() && g[7] == 2.0, "NaN takes the slope side");
        let (out, g) = run(Activation::Relu);
        assert_eq!(&out[..7], &[0.0, 0.0, 0.0, 0.0, 0.5, 3.0, 0.0]);
        assert_eq!(&g[..7], &[0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
        assert!(
            out[7].is_nan() && g[7] == 8.0,
            "NaN passes, as in burn's relu"
        );
        assert_eq!(run(Activation::Identity).1, grad);
        let (out, g) = run(Activation::Sigmoid);
        let want = [
            0.11920292, 0.37754068, 0.5, 0.5, 0.62245935, 0.95257413, 0.49975, 0.0,
        ];
        for (i, (&o, &w)) in out.iter().zip(&want).enumerate().take(7) {
            assert!((o - w).abs() < 1e-6, "sigmoid({}) = {o}, not {w}", x[i]);
            let dw = grad[i] * w * (1.0 - w);
            assert!(
                (g[i] - dw).abs() < 1e-5,
                "sigmoid'({}): {} not {dw}",
                x[i],
                g[i]
            );
        }
        assert!(out[7].is_nan() && g[7].is_nan());
        // Far out on either side: 0 and 1 exactly, no overflow.
        let mut far = [-200.0f32, 200.0];
        Activation::Sigmoid.apply(&mut far);
        assert_eq!(far, [0.0, 1.0]);
    }

    /// Both signs, both zeros, infinities, NaN, subnormals and the extremes, then 1,000
    /// ordinary values of both signs: for the bit-for-bit tests of element-wise loops (their
    /// lengths cut it to leave tails after the vector lanes).
    pub(crate) fn awkward_floats() -> Vec<f32> {
        let mut values = vec![
            0.0f32,
            -0.0,
            1.5,
            -1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::MIN_POSITIVE / 4.0,
            f32::MIN_POSITIVE / 4.0,
            f32::MAX,
            f32::MIN,
        ];
        values.extend((0..1000).map(|i| ((i * 7919) % 2001) as f32 / 37.0 - 27.0));
        values
    }

    /// The stored-always activations give, bit for bit, the selects they replaced (the
    /// old keep-or-replace loops), for every sign, both zeros, infinities, NaN and
    /// subnormals, built wide as the kernels call them and for lengths that leave a tail
    /// after the vector lanes.
    #[test]
    fn activations_are_the_selects_bit_for_bit() {
        let values = awkward_floats();
        let grads: Vec<f32> = values.iter().rev().copied().collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        for a in [
            Activation::Relu,
            Activation::Leaky(0.2),
            Activation::Leaky(0.0),
        ] {
            // The loops they replaced.
            let forward = |v: f32| match a {
                Activation::Relu if v <= 0.0 => 0.0,
                Activation::Leaky(slope) => {
                    if v >= 0.0 {
                        v
                    } else {
                        slope * v
                    }
                }
                _ => v,
            };
            let backward = |g: f32, o: f32| match a {
                Activation::Relu if o <= 0.0 => 0.0,
                Activation::Leaky(slope) => {
                    if o >= 0.0 {
                        g
                    } else {
                        slope * g
                    }
                }
                _ => g,
            };
            for len in [0, 1, 7, 8, 9, 17, values.len()] {
                let mut out = values[..len].to_vec();
                let mut grad = grads[..len].to_vec();
                vectorized(|| a.apply(&mut out));
                vectorized(|| a.backward(&out, &mut grad));
                let want: Vec<f32> = values[..len].iter().map(|&v| forward(v)).collect();
                assert_eq!(bits(&out), bits(&want), "{a:?} forward, {len} values");
                let want: Vec<f32> = grads[..len]
                    .iter()
                    .zip(&out)
                    .map(|(&g, &o)| backward(g, o))
                    .collect();
                assert_eq!(bits(&grad), bits(&want), "{a:?} backward, {len} values");
            }
        }
    }

    #[test]
    fn box_mean_matches_burns_average_pool_forward_and_backward() {
        let device = Device::flex().autodiff();
        // Windows wider than the image on one side, as on the other, and equal to it.
        for (shape, window) in [([2, 3, 9, 13], 7), ([1, 2, 5, 4], 7), ([3, 1, 7, 7], 3)] {
            let x = normal(shape, 3, &device).require_grad();
            let theirs = pooled_box_mean(x.clone(), window);
            let ours = box_mean(x.clone(), window);
            assert_close("box mean", ours.clone().inner(), theirs.clone().inner());
            let w = normal(shape, 4, &device);
            let ga = (ours * w.clone()).sum().backward();
            let gb = (theirs * w).sum().backward();
            assert_close(
                "box mean gradient",
                x.grad(&ga).unwrap(),
                x.grad(&gb).unwrap(),
            );
        }
        // A known answer: the mean of 1..=5 in a window of 3, clipped at both ends.
        let line = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]], &Device::flex());
        let got: Vec<f32> = box_mean(line, 3).into_data().iter::<f32>().collect();
        assert_eq!(got, vec![1.5, 2.0, 3.0, 4.0, 4.5]);
    }

    #[test]
    fn bands_cover_the_small_side_in_order() {
        let g = Geometry::of_conv(&[1, 8, 64, 64], &[4, 8, 3, 3], 1, 1);
        let bands: Vec<_> = bands(&g).collect();
        assert!(bands.len() > 1, "{bands:?}");
        assert_eq!(bands.first().unwrap().start, 0);
        assert_eq!(bands.last().unwrap().end, 64);
        assert!(bands.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn convolutions_match_burns_own_forward_and_backward() {
        TRAINING_PRECISION.set(Some(Precision::F32));
        convolutions_match(&format!("{:?}", Precision::F32));
    }

    /// The same with the products in bfloat16, as training runs them where the CPU has it.
    #[test]
    fn bfloat16_convolutions_match_burns_own_within_its_precision() {
        if !super::super::bf16::cpu_runs_kernel() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        TRAINING_PRECISION.set(Some(Precision::Bf16));
        convolutions_match(&format!("{:?}", Precision::Bf16));
    }

    fn convolutions_match(precision: &str) {
        let device = Device::flex().autodiff();
        // Else both sides would be burn's own layers.
        assert!(supported(&device) && supported(&Device::flex()));
        // (c_in, c_out, side, kernel, stride, padding): the autoencoder's strided 4x4, the
        // output 3x3, an odd size, no padding, one whose columns span several bands, a
        // kernel wider than the image's inside and a stride of 3 (im2col's general
        // gather); both through columns (over DIRECT_MAX_CHANNELS outputs) and through
        // direct loops (the rest; at stride 1 those run on padded planes, see `Flat`).
        let convs = [
            (3, 5, 16, 4, 2, 1),
            (2, 6, 10, 3, 3, 1),
            (4, 1, 9, 3, 1, 1),
            (2, 3, 11, 4, 2, 1),
            (2, 6, 11, 4, 2, 1),
            (3, 2, 7, 3, 2, 0),
            (3, 2, 7, 3, 1, 0),
            (3, 5, 7, 3, 2, 0),
            (8, 4, 64, 3, 1, 1),
            (8, 5, 64, 3, 1, 1),
            (32, 1, 64, 3, 1, 1),
            (2, 3, 3, 5, 1, 2),
            (2, 7, 3, 5, 1, 2),
        ];
        let routes = |cases: &[(usize, usize, usize, usize, usize, usize)], small_is_out| {
            cases
                .iter()
                .map(|&(ci, co, ..)| if small_is_out { co } else { ci } <= DIRECT_MAX_CHANNELS)
                .collect::<std::collections::BTreeSet<bool>>()
                .len()
        };
        assert_eq!(routes(&convs, true), 2, "both routes of conv2d are tested");
        // Each activation on every case, fused against burn's own after the layer; in
        // bfloat16 the identity only, since an output within its rounding of 0 can take the
        // other side of an activation than burn's float32 does, and its gradient with it.
        let activations = match TRAINING_PRECISION.get() {
            Some(Precision::Bf16) => vec![Activation::Identity],
            _ => vec![
                Activation::Identity,
                Activation::Relu,
                Activation::Leaky(0.2),
                Activation::Sigmoid,
            ],
        };
        for ((ci, co, side, k, s, p), act) in convs
            .into_iter()
            .flat_map(|case| activations.iter().map(move |&a| (case, a)))
        {
            // Drawn under the lock that keeps other tests' draws out of the sequence.
            let (conv, wt, bias) = crate::train::seeded(&device, 11, || {
                let conv = Conv2dConfig::new([ci, co], [k, k])
                    .with_stride([s, s])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(&device);
                let (wt, bias) = (conv.weight.val(), conv.bias.as_ref().unwrap().val());
                (conv, wt, bias)
            });
            check(
                &format!("{precision} conv {ci}->{co} {side}px k{k} s{s} p{p} {act:?}"),
                [3, ci, side, side],
                |x| conv_layer(&conv, x, act),
                |x| act.burn(conv.forward(x)),
                wt,
                bias,
            );
        }
        let transposed = [
            (5, 3, 8, 4, 2, 1),
            (2, 4, 5, 3, 1, 1),
            (6, 4, 5, 3, 1, 1),
            (3, 2, 6, 4, 2, 0),
            (5, 2, 6, 4, 2, 0),
            (2, 3, 5, 3, 1, 0),
            (4, 3, 5, 2, 2, 0),
            (4, 16, 32, 4, 2, 1),
            (8, 16, 32, 4, 2, 1),
        ];
        assert_eq!(routes(&transposed, false), 2, "both routes of transposed");
        for ((ci, co, side, k, s, p), act) in transposed
            .into_iter()
            .flat_map(|case| activations.iter().map(move |&a| (case, a)))
        {
            let (deconv, wt, bias) = crate::train::seeded(&device, 12, || {
                let deconv = ConvTranspose2dConfig::new([ci, co], [k, k])
                    .with_stride([s, s])
                    .with_padding([p, p])
                    .init(&device);
                let (wt, bias) = (deconv.weight.val(), deconv.bias.as_ref().unwrap().val());
                (deconv, wt, bias)
            });
            check(
                &format!("{precision} transposed {ci}->{co} {side}px k{k} s{s} p{p} {act:?}"),
                [2, ci, side, side],
                |x| conv_transpose_layer(&deconv, x, act),
                |x| act.burn(deconv.forward(x)),
                wt,
                bias,
            );
        }
    }
}
