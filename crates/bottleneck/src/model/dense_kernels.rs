//! The table and audio networks' fully connected layers on the CPU (burn's Flex backend):
//! product, bias and leaky ReLU as one operation with its own backward pass, a burn
//! backend extension like the convolutions of [`super::kernels`].
//!
//! Why: burn runs `leaky_relu(x W + b)` as a product, a broadcast add and the activation's
//! element-wise passes (the dense networks' `0.1 x + 0.9 relu(x)` is four, each writing a
//! fresh tensor). Scoring a 13-feature table spent more time in those passes and their
//! allocations than in the products (`perf`: products 35%, element-wise passes 28%, copies
//! and page faults 13%), at 0.36-0.49x PyTorch's rows/s (bench/throughput_tables.sh).
//! Here the output is cut into tiles of rows and columns; each tile starts from the bias,
//! takes one product and gets its activation while still in cache, tiles in parallel.
//!
//! Deterministic: a tile's shape depends only on the layer's sizes, never on the number of
//! threads, and each output value is one tile's sum, so results are the same on any machine
//! with the same instruction set.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::nn::Linear;
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::kernels::{Mat, matmul, matmul_raw, supported, values, vectorized};

/// Rows and columns of the largest output tile: a 13-feature table's 4,096-row scoring chunk
/// is 32 such tiles.
const TILE: usize = 128;
/// Products cut into fewer tiles than this get smaller ones (down to [`MIN_TILE`]), so a
/// training batch of 64 rows still keeps both cores busy: with one 128-row tile a step ran
/// on one core and the 64-feature network trained at 60% of burn's own speed.
const MIN_TILES: usize = 8;
const MIN_TILE: usize = 32;

/// Products of fewer multiply-adds run their tiles on the calling thread: waking the other
/// core cost more than it saved (the 64-feature network at batch 64 trained at 50-55k
/// rows/s with every product split across cores, 72-76k with these on one, against 68-72k
/// for burn's own layers; bench/throughput_tables.sh's example, alternated runs). The tiles
/// are the same either way, so the results are too.
const SERIAL_BELOW: usize = 1 << 22;

/// Tile sides `(rows, cols)` for an `m x n` product: [`TILE`], halved (the longer side
/// first) while there are fewer than [`MIN_TILES`] tiles. Depends on the sizes only.
fn tile_shape(m: usize, n: usize) -> (usize, usize) {
    let (mut rows, mut cols) = (TILE, TILE);
    while m.div_ceil(rows) * n.div_ceil(cols) < MIN_TILES {
        let can_rows = rows > MIN_TILE && rows / 2 < m;
        let can_cols = cols > MIN_TILE && cols / 2 < n;
        match (can_rows, can_cols) {
            (true, true) if m >= n => rows /= 2,
            (true, true) | (false, true) => cols /= 2,
            (true, false) => rows /= 2,
            (false, false) => break,
        }
    }
    (rows, cols)
}

#[backend_extension(Flex, Autodiff)]
pub trait DenseKernels: Backend {
    /// `x` `[n, d_in]` times `weight` `[d_in, d_out]` plus `bias` `[d_out]`, then leaky ReLU
    /// with negative `slope` (`1` for no activation).
    fn linear_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        slope: f32,
    ) -> FloatTensor<Self>;

    /// `x` `[n, widths[0]]` through a stack of [`DenseKernels::linear_fast`] layers, a block
    /// of rows at a time through all of them. Layer `i` maps `widths[i]` to `widths[i + 1]`
    /// with negative slope `slopes[i]`; `params` holds each layer's weight
    /// `[widths[i], widths[i + 1]]` then its bias, flattened, in layer order (burn's
    /// extensions take single tensors, not lists of them).
    fn stack_fast(
        x: FloatTensor<Self>,
        params: FloatTensor<Self>,
        widths: Vec<usize>,
        slopes: Vec<f32>,
    ) -> FloatTensor<Self>;
}

/// Inference-only helpers of the dense networks (no backward pass: training keeps burn's
/// operations).
#[backend_extension(Flex)]
pub trait ColumnKernels: Backend {
    /// `[a, b]` side by side: `a` `[n, da]` and `b` `[n, db]` give `[n, da + db]`.
    fn cat_columns(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;

    /// [`DenseKernels::stack_fast`] of `[a, b]` side by side, without writing them side by
    /// side: the first layer multiplies `a` and `b` by their own rows of its weight, and a
    /// row of `b` that is all ones adds the sum of its rows (a fully observed table row's
    /// mask).
    fn stack_beside_fast(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        params: FloatTensor<Self>,
        widths: Vec<usize>,
        slopes: Vec<f32>,
    ) -> FloatTensor<Self>;
}

/// `[a, b]` side by side (`Tensor::cat(vec![a, b], 1)`), in one pass of row copies on a
/// Flex device without autodiff, else burn's `cat`. Burn's copies a row of each at a time
/// through its general path: scoring a 13-feature table (values beside their mask, 13 + 13
/// columns) spent 24% of its time there (`perf`, bench/throughput_tables.sh's example).
pub fn cat_columns(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let device = a.device();
    if !supported(&device) || device.is_autodiff() {
        return Tensor::cat(vec![a, b], 1);
    }
    Tensor::from_dispatch(<burn::backend::Dispatch as ColumnKernels>::cat_columns(
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

impl ColumnKernels for Flex {
    fn stack_beside_fast(
        a: FlexTensor,
        b: FlexTensor,
        params: FlexTensor,
        widths: Vec<usize>,
        slopes: Vec<f32>,
    ) -> FlexTensor {
        let ([n, da], [nb, db]) = (shape2(&a), shape2(&b));
        assert_eq!(n, nb, "stack_beside_fast: {n} rows beside {nb}");
        let (a, b) = (values(&a), values(&b));
        let input = StackInput::Beside {
            a: a.storage(),
            da,
            b: b.storage(),
            db,
        };
        flex_stack(input, n, da + db, params, &widths, &slopes)
    }

    fn cat_columns(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let ([n, da], [nb, db]) = (shape2(&a), shape2(&b));
        assert_eq!(n, nb, "cat_columns: {n} rows beside {nb}");
        let (a, b) = (values(&a), values(&b));
        let (a, b): (&[f32], &[f32]) = (a.storage(), b.storage());
        let mut out = Vec::with_capacity(n * (da + db));
        for r in 0..n {
            out.extend_from_slice(&a[r * da..][..da]);
            out.extend_from_slice(&b[r * db..][..db]);
        }
        FlexTensor::from_data(TensorData::new(out, [n, da + db]))
    }
}

/// `linear.forward(x)`, followed by a leaky ReLU of negative slope `slope` if given, as one
/// [`DenseKernels::linear_fast`] on a Flex device; elsewhere (or without a bias) burn's own
/// layer and activation.
pub fn linear_layer(linear: &Linear, x: Tensor<2>, slope: Option<f64>) -> Tensor<2> {
    match &linear.bias {
        Some(bias) if supported(&x.device()) => {
            Tensor::from_dispatch(<burn::backend::Dispatch as DenseKernels>::linear_fast(
                x.into_dispatch(),
                linear.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
                slope.unwrap_or(1.0) as f32,
            ))
        }
        _ => {
            let y = linear.forward(x);
            match slope {
                Some(s) => burn::tensor::activation::leaky_relu(y, s),
                None => y,
            }
        }
    }
}

/// `layers` (each a layer and the slope of the leaky ReLU after it, if any) applied to `x`
/// in turn: on a Flex device without autodiff one [`DenseKernels::stack_fast`], which takes
/// each block of rows through every layer while it is in cache; elsewhere
/// [`linear_layer`] after [`linear_layer`].
pub fn linear_stack(layers: &[(&Linear, Option<f64>)], x: Tensor<2>) -> Tensor<2> {
    if !fusable(layers, &x) {
        return layers
            .iter()
            .fold(x, |x, &(layer, slope)| linear_layer(layer, x, slope));
    }
    fused_stack(layers, x)
}

/// [`linear_stack`] of `[a, b]` side by side (`cat_columns(a, b)`): on a Flex device
/// without autodiff, one [`ColumnKernels::stack_beside_fast`], which never writes the two
/// side by side (scoring a 784-feature table, values beside their mask, spent ~6% of its
/// time copying them into one tensor on one thread while the other core waited) and skips
/// the product of a mask row that is all ones (see `beside_first_layer`). Equal to the
/// stack of `cat_columns(a, b)` up to float rounding, not bit for bit.
pub fn linear_stack_beside(
    layers: &[(&Linear, Option<f64>)],
    a: Tensor<2>,
    b: Tensor<2>,
) -> Tensor<2> {
    if !fusable(layers, &a) {
        return linear_stack(layers, cat_columns(a, b));
    }
    let (params, widths, slopes) = packed_params(layers, a.dims()[1] + b.dims()[1]);
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ColumnKernels>::stack_beside_fast(
            a.into_dispatch(),
            b.into_dispatch(),
            params.into_dispatch(),
            widths,
            slopes,
        ),
    )
}

/// Whether [`linear_stack`] takes `layers` on `x` as one operation: every layer has a bias,
/// and `x` is on a Flex device without autodiff.
fn fusable(layers: &[(&Linear, Option<f64>)], x: &Tensor<2>) -> bool {
    !layers.is_empty()
        && layers.iter().all(|(l, _)| l.bias.is_some())
        && supported(&x.device())
        && !x.device().is_autodiff()
}

/// The stack operations' `params`, `widths` (from `d_in`) and `slopes` for `layers`.
fn packed_params(
    layers: &[(&Linear, Option<f64>)],
    d_in: usize,
) -> (Tensor<1>, Vec<usize>, Vec<f32>) {
    let mut widths = vec![d_in];
    let mut params = Vec::with_capacity(2 * layers.len());
    for (layer, _) in layers {
        widths.push(layer.weight.dims()[1]);
        params.push(layer.weight.val().flatten::<1>(0, 1));
        params.extend(layer.bias.as_ref().map(|b| b.val()));
    }
    let slopes = layers
        .iter()
        .map(|&(_, s)| s.unwrap_or(1.0) as f32)
        .collect();
    (Tensor::cat(params, 0), widths, slopes)
}

/// [`DenseKernels::stack_fast`] of `layers` (all with a bias) on `x`, on any device the
/// extension serves.
fn fused_stack(layers: &[(&Linear, Option<f64>)], x: Tensor<2>) -> Tensor<2> {
    let (params, widths, slopes) = packed_params(layers, x.dims()[1]);
    Tensor::from_dispatch(<burn::backend::Dispatch as DenseKernels>::stack_fast(
        x.into_dispatch(),
        params.into_dispatch(),
        widths,
        slopes,
    ))
}

/// The parameters of layer after layer in [`DenseKernels::stack_fast`]'s `params`: each
/// layer's weight and bias ranges.
fn param_ranges(
    widths: &[usize],
) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
    widths.windows(2).scan(0usize, |offset, pair| {
        let w = *offset..*offset + pair[0] * pair[1];
        let b = w.end..w.end + pair[1];
        *offset = b.end;
        Some((w, b))
    })
}

fn shape2(t: &FlexTensor) -> [usize; 2] {
    let s = t.shape();
    assert_eq!(s.num_dims(), 2, "linear_fast: two-dimensional tensors only");
    [s[0], s[1]]
}

/// Where the tiles of one product write: disjoint parts of one row-major matrix.
#[derive(Clone, Copy)]
struct Dst(*mut f32);

// SAFETY: the tiles handed a Dst write disjoint parts of a buffer their caller holds
// mutably for the whole parallel loop.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

/// The product `lhs[m x k] * rhs[k x n]` in new memory, as [`tiled_product`] computes it
/// without accumulating.
/// The memory is not zeroed first: a product that does not accumulate writes every value
/// without reading any (`gemm` with `read_dst` false stores its sums, or zeros where `k` is
/// 0). Zeroing was a pass on the calling thread over each weight gradient every step (6 MB
/// for the 784-feature table network, ~4% of its training time, the other core idle).
fn new_product(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: the allocation holds m x n values; the product writes every one of them
    // (above) before anything reads them, so all are initialised when the length is set.
    unsafe {
        tiled_product(out.as_mut_ptr(), m, n, k, lhs, rhs, false, 1.0);
        out.set_len(m * n);
    }
    out
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]` (`dst` row-major, exactly `m x n`), as tiles
/// of [`tile_shape`] in parallel; `accumulate` adds to `dst`, and with `slope != 1`
/// negative results are then multiplied by `slope`.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` values, written by no one else during the
/// call; where `accumulate` is true or `slope` is not 1 they must be initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_product(
    dst: *mut f32,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    slope: f32,
) {
    let (tile_rows, tile_cols) = tile_shape(m, n);
    let (row_tiles, col_tiles) = (m.div_ceil(tile_rows), n.div_ceil(tile_cols));
    let out = Dst(dst);
    let tile = |t: usize| {
        // Whole values, not their pointer fields (which are not Send), into the closure.
        let (out, lhs, rhs) = (out, lhs, rhs);
        let (i0, j0) = ((t / col_tiles) * tile_rows, (t % col_tiles) * tile_cols);
        let (rows, cols) = (tile_rows.min(m - i0), tile_cols.min(n - j0));
        // SAFETY: row r of this tile is dst[(i0 + r) * n + j0..][..cols], inside `dst`
        // (i0 + r < m, j0 + cols <= n) and written by no other tile.
        let row = |r: usize| unsafe {
            std::slice::from_raw_parts_mut(out.0.add((i0 + r) * n + j0), cols)
        };
        let lhs = Mat {
            ptr: lhs.ptr.wrapping_offset(i0 as isize * lhs.rs),
            ..lhs
        };
        let rhs = Mat {
            ptr: rhs.ptr.wrapping_offset(j0 as isize * rhs.cs),
            ..rhs
        };
        // SAFETY: the tile is rows x cols of `dst` at row stride n, this tile's alone;
        // `lhs` (from row i0) and `rhs` (from column j0) stay inside the m x k and k x n
        // views the caller made from its slices.
        unsafe {
            matmul_raw(
                out.0.add(i0 * n + j0),
                n,
                rows,
                cols,
                k,
                lhs,
                rhs,
                accumulate,
            )
        };
        if slope != 1.0 {
            for r in 0..rows {
                // A select, not a branch: the signs are random, and a branch on them
                // mispredicted often enough to take 40% of a 64-feature network's time.
                for v in row(r) {
                    *v = if *v < 0.0 { *v * slope } else { *v };
                }
            }
        }
    };
    let tiles = 0..row_tiles * col_tiles;
    if m * n * k < SERIAL_BELOW {
        tiles.for_each(tile);
    } else {
        tiles.into_par_iter().for_each(tile);
    }
}

/// Leaky ReLU with negative `slope`, in place, as wide as the CPU allows ([`vectorized`]):
/// the scoring stack's activation (9% of scoring a 13-feature table in the baseline
/// build's 4-lane loop). Each value is multiplied by a factor chosen by its sign (`slope`,
/// or exactly one) and always stored: not a branch (random signs), and not "keep or
/// replace", which the wide build turns into masked stores, slow on AMD's cores (15% of a
/// profile, see bench/RESULTS.md). The closure takes `slope` by value: borrowed, it was
/// loaded for every value and the loop compiled to scalar code with a branch, scoring at
/// half the speed. Bit for bit the values of `if v < 0 { v * slope } else { v }`.
/// Training's tiles keep that loop (a call per tile row measured no faster).
fn leaky_relu_in_place(values: &mut [f32], slope: f32) {
    vectorized(
        #[inline(always)]
        move || {
            for v in values.iter_mut() {
                *v *= if *v < 0.0 { slope } else { 1.0 };
            }
        },
    )
}

/// The forward pass on plain values: `[n, d_in] x [d_in, d_out] + bias`, activated.
fn linear_forward(x: &[f32], w: &[f32], bias: &[f32], d_in: usize, slope: f32) -> Vec<f32> {
    let d_out = bias.len();
    assert!(
        x.len().is_multiple_of(d_in) && w.len() == d_in * d_out,
        "linear_fast: input of {} values, weight of {} for {d_in} -> {d_out}",
        x.len(),
        w.len()
    );
    let n = x.len() / d_in;
    // Every row starts from the bias (one pass, instead of zeroing and then copying).
    let mut out = Vec::with_capacity(n * d_out);
    for _ in 0..n {
        out.extend_from_slice(bias);
    }
    // SAFETY: `out` holds the n x d_out values, all initialised (to the bias).
    unsafe {
        tiled_product(
            out.as_mut_ptr(),
            n,
            d_out,
            d_in,
            Mat::rows(x, d_in),
            Mat::rows(w, d_out),
            true,
            slope,
        )
    };
    out
}

/// Rows that go through a whole stack of layers together: a 13-feature table's 4,096-row
/// scoring chunk is 32 blocks, each layer's output at most 128 x 512 values (256 KiB).
const STACK_ROWS: usize = 128;

/// One layer of a stack on plain values: weight `[d_in, d_out]`, bias `[d_out]`, slope.
type StackLayer<'a> = (&'a [f32], &'a [f32], f32);

/// What enters a stack: rows of `d_in` values, or rows of `a` (`da` values) and `b` (`db`)
/// side by side.
#[derive(Clone, Copy)]
enum StackInput<'a> {
    Rows(&'a [f32]),
    Beside {
        a: &'a [f32],
        da: usize,
        b: &'a [f32],
        db: usize,
    },
}

/// The first layer's product for a block of rows of `a` beside rows of `b`: `dst` (`rows x
/// d`, holding the bias) plus `[a, b] w`, computed as `a w_a` plus, for each row of `b`,
/// `b w_b`, or `ones` (the sum of `w_b`'s rows) where that row is all ones. A table's mask
/// is all ones on every fully observed row, so scoring such rows multiplies half the first
/// layer's weights (784 features: 1,568 -> 784 inputs, 27% of the network's multiply-adds)
/// and copies nothing side by side. Each row's result depends on that row alone.
fn beside_first_layer(
    dst: &mut [f32],
    w: &[f32],
    ones: &[f32],
    (a, da): (&[f32], usize),
    (b, db): (&[f32], usize),
) {
    let d = ones.len();
    let rows = dst.len() / d;
    let (lhs, rhs) = (Mat::rows(a, da), Mat::rows(&w[..da * d], d));
    matmul(dst, d, rows, d, da, lhs, rhs, true);
    let w_b = &w[da * d..][..db * d];
    let mut gappy = Vec::new();
    for (r, (row, out)) in b.chunks_exact(db).zip(dst.chunks_exact_mut(d)).enumerate() {
        if row.iter().all(|&v| v == 1.0) {
            out.iter_mut().zip(ones).for_each(|(o, s)| *o += s);
        } else {
            gappy.push(r);
        }
    }
    if gappy.is_empty() {
        return;
    }
    let picked: Vec<f32> = gappy
        .iter()
        .flat_map(|&r| b[r * db..][..db].iter().copied())
        .collect();
    let g = gappy.len();
    let mut product = vec![0.0f32; g * d];
    let (lhs, rhs) = (Mat::rows(&picked, db), Mat::rows(w_b, d));
    matmul(&mut product, d, g, d, db, lhs, rhs, false);
    for (&r, p) in gappy.iter().zip(product.chunks_exact(d)) {
        dst[r * d..][..d]
            .iter_mut()
            .zip(p)
            .for_each(|(o, p)| *o += p);
    }
}

/// [`DenseKernels::stack_fast`] on plain values: `n` rows of `d_in` values through `layers`.
fn stack_forward(input: StackInput, n: usize, d_in: usize, layers: &[StackLayer]) -> Vec<f32> {
    let mut width = d_in;
    for (i, (w, b, _)) in layers.iter().enumerate() {
        assert!(
            w.len() == width * b.len(),
            "stack_fast: layer {i} has a weight of {} values for {width} -> {}",
            w.len(),
            b.len()
        );
        width = b.len();
    }
    match input {
        StackInput::Rows(x) => assert_eq!(x.len(), n * d_in, "stack_fast: input size"),
        StackInput::Beside { a, da, b, db } => assert!(
            a.len() == n * da && b.len() == n * db && da + db == d_in,
            "stack_fast: inputs of {} and {} values for {n} rows of {da} + {db} -> {d_in}",
            a.len(),
            b.len()
        ),
    }
    let d_out = width;
    let widest = layers.iter().map(|l| l.1.len()).max().unwrap_or(0);
    // Beside inputs: what a row of `b` that is all ones adds to the first layer (the sum of
    // the weight's `b` rows), once for the whole call.
    let ones = match input {
        StackInput::Beside { da, db, .. } => {
            let (w, d) = (layers[0].0, layers[0].1.len());
            let mut sum = vec![0.0f32; d];
            for row in w[da * d..].chunks_exact(d).take(db) {
                sum.iter_mut().zip(row).for_each(|(s, w)| *s += w);
            }
            sum
        }
        StackInput::Rows(_) => Vec::new(),
    };
    // Not zeroed: each block starts its rows from the bias (below), and every value of
    // the output is one block's. Zeroing first was a pass over the whole output (12.8 MB
    // for a 4,096-row chunk of 784 features) on the calling thread.
    let mut out: Vec<f32> = Vec::with_capacity(n * d_out);
    let block = |(index, o): (usize, &mut [std::mem::MaybeUninit<f32>])| {
        let rows = o.len() / d_out;
        let r0 = index * STACK_ROWS;
        let mut bufs = [vec![0.0f32; rows * widest], vec![0.0f32; rows * widest]];
        let last = layers.len() - 1;
        // The output block starts from the last layer's bias, which initialises it.
        for row in o.chunks_exact_mut(d_out) {
            row.write_copy_of_slice(layers[last].1);
        }
        // SAFETY: every value of `o` was written just above, and MaybeUninit<f32> has the
        // layout of f32.
        let o: &mut [f32] =
            unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast::<f32>(), o.len()) };
        let mut width = d_in;
        for (i, &(w, bias, slope)) in layers.iter().enumerate() {
            let d = bias.len();
            let [even, odd] = &mut bufs;
            let (src, dst) = if i % 2 == 0 {
                (&*odd, even)
            } else {
                (&*even, odd)
            };
            let dst = if i == last {
                &mut *o
            } else {
                let dst = &mut dst[..rows * d];
                for row in dst.chunks_exact_mut(d) {
                    row.copy_from_slice(bias);
                }
                dst
            };
            if let (0, StackInput::Beside { a, da, b, db }) = (i, input) {
                let (a, b) = (&a[r0 * da..][..rows * da], &b[r0 * db..][..rows * db]);
                beside_first_layer(dst, w, &ones, (a, da), (b, db));
            } else {
                let src = match input {
                    StackInput::Rows(x) if i == 0 => &x[r0 * d_in..][..rows * d_in],
                    _ => &src[..rows * width],
                };
                let (lhs, rhs) = (Mat::rows(src, width), Mat::rows(w, d));
                matmul(dst, d, rows, d, width, lhs, rhs, true);
            }
            if slope != 1.0 {
                leaky_relu_in_place(dst, slope);
            }
            width = d;
        }
    };
    let per_row: usize = layers.iter().map(|l| l.0.len()).sum();
    let rows = STACK_ROWS * d_out.max(1);
    let spare = &mut out.spare_capacity_mut()[..n * d_out];
    if n * per_row < SERIAL_BELOW {
        spare.chunks_mut(rows).enumerate().for_each(block);
    } else {
        spare.par_chunks_mut(rows).enumerate().for_each(block);
    }
    // SAFETY: the blocks initialised all n * d_out values (each its whole chunk, above).
    unsafe { out.set_len(n * d_out) };
    out
}

/// A stack on the Flex backend: `input` (`n` rows of `widths[0]` values) through the layers
/// that `params`, `widths` and `slopes` describe (see [`DenseKernels::stack_fast`]).
fn flex_stack(
    input: StackInput,
    n: usize,
    d_in: usize,
    params: FlexTensor,
    widths: &[usize],
    slopes: &[f32],
) -> FlexTensor {
    let expected: usize = widths.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
    assert!(
        widths.len() == slopes.len() + 1
            && !slopes.is_empty()
            && widths.first() == Some(&d_in)
            && params.shape().num_elements() == expected,
        "stack_fast: [{n}, {d_in}] in, widths {widths:?}, {} slopes, {} parameters",
        slopes.len(),
        params.shape().num_elements()
    );
    let params = values(&params);
    let p: &[f32] = params.storage();
    let layers: Vec<StackLayer> = param_ranges(widths)
        .zip(slopes)
        .map(|((w, b), &s)| (&p[w], &p[b], s))
        .collect();
    let out = stack_forward(input, n, d_in, &layers);
    FlexTensor::from_data(TensorData::new(out, [n, widths[widths.len() - 1]]))
}

impl DenseKernels for Flex {
    fn stack_fast(
        x: FlexTensor,
        params: FlexTensor,
        widths: Vec<usize>,
        slopes: Vec<f32>,
    ) -> FlexTensor {
        let [n, d_in] = shape2(&x);
        let x = values(&x);
        flex_stack(
            StackInput::Rows(x.storage()),
            n,
            d_in,
            params,
            &widths,
            &slopes,
        )
    }

    fn linear_fast(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, slope: f32) -> FlexTensor {
        let ([n, d_in], [w_in, d_out]) = (shape2(&x), shape2(&weight));
        assert!(
            w_in == d_in && bias.shape().num_elements() == d_out,
            "linear_fast: x [{n}, {d_in}], weight [{w_in}, {d_out}], bias of {}",
            bias.shape().num_elements()
        );
        let (x, w, b) = (values(&x), values(&weight), values(&bias));
        let out = linear_forward(x.storage(), w.storage(), b.storage(), d_in, slope);
        FlexTensor::from_data(TensorData::new(out, [n, d_out]))
    }
}

/// What the backward pass needs: the input and weight, and the output where an activation
/// followed (its sign is the pre-activation's, the slope being positive).
#[derive(Debug, Clone)]
struct LinearSaved {
    x: FlexTensor,
    weight: FlexTensor,
    activated: Option<(FlexTensor, f32)>,
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearSaved;

    fn backward(self, ops: Ops<LinearSaved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = values(&grads.consume::<Flex>(&ops.node));
        let LinearSaved {
            x,
            weight,
            activated,
        } = ops.state;
        let [n, d_out] = shape2(&grad);
        // The gradient before the activation.
        let g: Cow<[f32]> = match &activated {
            Some((out, slope)) => {
                let out = values(out);
                grad.storage::<f32>()
                    .iter()
                    .zip(out.storage::<f32>())
                    .map(|(&g, &y)| if y >= 0.0 { g } else { slope * g })
                    .collect::<Vec<f32>>()
                    .into()
            }
            None => grad.storage::<f32>().into(),
        };
        if let Some(node) = node_x {
            let w = values(&weight);
            let d_in = shape2(&w)[0];
            let dx = new_product(
                n,
                d_in,
                d_out,
                Mat::rows(&g, d_out),
                Mat::transposed(w.storage(), d_out),
            );
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(dx, [n, d_in])),
            );
        }
        if let Some(node) = node_w {
            let x = values(&x);
            let d_in = shape2(&x)[1];
            let dw = new_product(
                d_in,
                d_out,
                n,
                Mat::transposed(x.storage(), d_in),
                Mat::rows(&g, d_out),
            );
            grads.register::<Flex>(
                node.id,
                FlexTensor::from_data(TensorData::new(dw, [d_in, d_out])),
            );
        }
        if let Some(node) = node_b {
            let mut db = vec![0.0f64; d_out];
            for row in g.chunks_exact(d_out) {
                for (s, &v) in db.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
            let db: Vec<f32> = db.into_iter().map(|v| v as f32).collect();
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(db, [d_out])));
        }
    }
}

impl<C: CheckpointStrategy> DenseKernels for Autodiff<Flex, C> {
    /// Layer after layer, each tracked for the backward pass (the parameters sliced out of
    /// `params` by tracked operations, so their gradients reach it).
    fn stack_fast(
        x: FloatTensor<Self>,
        params: FloatTensor<Self>,
        widths: Vec<usize>,
        slopes: Vec<f32>,
    ) -> FloatTensor<Self> {
        let slice = |r: std::ops::Range<usize>| {
            Self::float_slice(params.clone(), &[burn::tensor::Slice::from(r)])
        };
        param_ranges(&widths)
            .zip(widths.windows(2))
            .zip(slopes)
            .fold(x, |x, (((w, b), pair), s)| {
                let w = Self::float_reshape(slice(w), Shape::new([pair[0], pair[1]]));
                Self::linear_fast(x, w, slice(b), s)
            })
    }

    fn linear_fast(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        slope: f32,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let out = Flex::linear_fast(x.clone(), weight.clone(), bias, slope);
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let activated = (slope != 1.0).then(|| (out.clone(), slope));
                let saved = LinearSaved {
                    x,
                    weight,
                    activated,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    use crate::model::kernels::tests::assert_close;

    type Grads = burn::tensor::Gradients;

    /// Both gradients of a layer's weight and bias, from two backward passes, agree.
    fn assert_layer_grads(what: &str, layer: &Linear, ga: &Grads, gb: &Grads) {
        let w = layer.weight.val();
        assert_close(
            &format!("{what} weight gradient"),
            w.grad(ga).unwrap(),
            w.grad(gb).unwrap(),
        );
        let b = layer.bias.as_ref().unwrap().val();
        assert_close(
            &format!("{what} bias gradient"),
            b.grad(ga).unwrap().unsqueeze::<2>(),
            b.grad(gb).unwrap().unsqueeze::<2>(),
        );
    }

    /// Output and the gradients of input, weight and bias agree with burn's own layer and
    /// activation, for shapes that fill tiles exactly, leave partial tiles in both
    /// directions, and hold a single row or feature.
    #[test]
    fn linear_matches_burns_layer_forward_and_backward() {
        let device = Device::flex().autodiff();
        let shapes = [
            (5, 13, 3),
            (64, 26, 64),
            (300, 129, 257),
            (1, 1, 1),
            (130, 784, 1),
        ];
        for (n, d_in, d_out) in shapes {
            for slope in [None, Some(0.1)] {
                let what = format!("{n}x{d_in}->{d_out}, slope {slope:?}");
                // Drawn under the lock that keeps concurrent tests' draws apart.
                let (layer, x, weights) = crate::train::seeded(&device, 11, || {
                    let layer = LinearConfig::new(d_in, d_out).init(&device);
                    let normal = Distribution::Normal(0.0, 1.0);
                    let x = Tensor::<2>::random([n, d_in], normal, &device).require_grad();
                    // Parameters are drawn on first use.
                    let _ = layer.forward(x.clone());
                    let weights = Tensor::<2>::random([n, d_out], normal, &device);
                    (layer, x, weights)
                });
                let ours = linear_layer(&layer, x.clone(), slope);
                let plain = layer.forward(x.clone());
                let reference = match slope {
                    Some(s) => burn::tensor::activation::leaky_relu(plain, s),
                    None => plain,
                };
                assert_close(
                    &format!("{what}: output"),
                    ours.clone().inner(),
                    reference.clone().inner(),
                );
                // The loss weighs every output differently.
                let ga = (ours * weights.clone()).sum().backward();
                let gb = (reference * weights).sum().backward();
                assert_close(
                    &format!("{what}: input gradient"),
                    x.grad(&ga).unwrap(),
                    x.grad(&gb).unwrap(),
                );
                assert_layer_grads(&format!("{what}:"), &layer, &ga, &gb);
            }
        }
    }

    /// The wide leaky ReLU gives, bit for bit, the select it replaced, for every sign,
    /// both zeros, infinities, NaN and subnormals, and for lengths that leave a tail after
    /// the vector lanes.
    #[test]
    fn leaky_relu_in_place_is_the_select_bit_for_bit() {
        let values = crate::model::kernels::tests::awkward_floats();
        for slope in [0.1f32, 0.2, 0.0] {
            for len in [0, 1, 7, 8, 9, 17, values.len()] {
                let mut ours = values[..len].to_vec();
                leaky_relu_in_place(&mut ours, slope);
                let expected: Vec<u32> = values[..len]
                    .iter()
                    .map(|&v| if v < 0.0 { v * slope } else { v }.to_bits())
                    .collect();
                let ours: Vec<u32> = ours.iter().map(|v| v.to_bits()).collect();
                assert_eq!(ours, expected, "slope {slope}, {len} values");
            }
        }
    }

    #[test]
    fn tiles_split_small_products_and_depend_on_sizes_only() {
        // A scoring chunk: full tiles.
        assert_eq!(tile_shape(4096, 64), (128, 128));
        // A training batch of 64 rows of a 256-wide layer: 8 tiles of 64 x 32.
        assert_eq!(tile_shape(64, 256), (128, 32));
        // The longer side is halved first.
        assert_eq!(tile_shape(256, 128), (32, 128));
        // Too small to split further: one tile.
        assert_eq!(tile_shape(5, 3), (128, 128));
        assert_eq!(tile_shape(0, 0), (128, 128));
    }

    /// `n` rows of 26 values through 26 -> 64 -> 32 -> 3 -> 13, leaky ReLU after the first
    /// two: the 13-feature table network's shape, its scoring chunk among the sizes.
    fn stack_case(device: &Device, n: usize) -> (Vec<Linear>, Tensor<2>) {
        crate::train::seeded(device, 5, || {
            let layers: Vec<Linear> = [(26, 64), (64, 32), (32, 3), (3, 13)]
                .iter()
                .map(|&(i, o)| LinearConfig::new(i, o).init(device))
                .collect();
            let x = Tensor::<2>::random([n, 26], Distribution::Normal(0.0, 1.0), device);
            let _ = layers.iter().fold(x.clone(), |x, l| l.forward(x));
            (layers, x)
        })
    }

    const STACK_SLOPES: [Option<f64>; 4] = [Some(0.1), Some(0.1), None, None];

    fn reference_stack(layers: &[Linear], x: Tensor<2>) -> Tensor<2> {
        layers
            .iter()
            .zip(STACK_SLOPES)
            .fold(x, |x, (l, s)| match s {
                Some(s) => burn::tensor::activation::leaky_relu(l.forward(x), s),
                None => l.forward(x),
            })
    }

    /// On the inference device the whole stack is one operation; it gives burn's layer by
    /// layer values, for one row, partial blocks, and a scoring chunk (run on both cores).
    #[test]
    fn stack_matches_burns_layers_one_after_another() {
        let device = Device::flex();
        for n in [1, 5, 300, 4096] {
            let (layers, x) = stack_case(&device, n);
            let stack: Vec<(&Linear, Option<f64>)> = layers.iter().zip(STACK_SLOPES).collect();
            let ours = linear_stack(&stack, x.clone());
            assert_close(
                &format!("stack of {n} rows"),
                ours,
                reference_stack(&layers, x),
            );
        }
    }

    /// Values beside a mask give the stack of the two written side by side: one row,
    /// partial blocks, a scoring chunk on both cores, and on the autodiff device (burn's
    /// `cat`, bit for bit there); with masks of random values, all ones (the first layer's
    /// ones-row sum) and a mix, where each row matches its own reference whatever its
    /// neighbours are.
    #[test]
    fn stack_beside_is_the_stack_of_the_columns_side_by_side() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            for n in [1, 5, 300, 4096] {
                let (layers, x) = stack_case(&device, n);
                let stack: Vec<(&Linear, Option<f64>)> = layers.iter().zip(STACK_SLOPES).collect();
                // 26 inputs: 13 values beside 13 mask columns, as a 13-feature table.
                let values = x.clone().narrow(1, 0, 13);
                let random = x.narrow(1, 13, 13);
                let ones = Tensor::<2>::ones([n, 13], &device);
                // Every third row all ones, the others random.
                let every_third = Tensor::<2>::from_data(
                    TensorData::new(
                        (0..n * 13)
                            .map(|i| {
                                if (i / 13) % 3 == 0 {
                                    1.0
                                } else {
                                    (i % 7) as f32 * 0.3
                                }
                            })
                            .collect::<Vec<f32>>(),
                        [n, 13],
                    ),
                    &device,
                );
                for (what, mask) in [("random", random), ("ones", ones), ("mixed", every_third)] {
                    let ours = linear_stack_beside(&stack, values.clone(), mask.clone());
                    let reference = linear_stack(&stack, cat_columns(values.clone(), mask));
                    assert_eq!(ours.dims(), [n, 13]);
                    let ours: Vec<f32> = ours.into_data().try_into_vec().unwrap();
                    let reference: Vec<f32> = reference.into_data().try_into_vec().unwrap();
                    if device.is_autodiff() {
                        assert!(ours == reference, "{what}, {n} rows on {device:?}");
                        continue;
                    }
                    for (i, (o, r)) in ours.iter().zip(&reference).enumerate() {
                        assert!(
                            (o - r).abs() <= 1e-5 * (1.0 + r.abs()),
                            "{what}, {n} rows, value {i}: {o} against {r}"
                        );
                    }
                }
            }
        }
        // A row's result does not depend on the other rows of its block: row 0 (all ones)
        // gives the same bits in a block of two, among 299 all-ones rows and among 299
        // gappy ones.
        let device = Device::flex();
        let (layers, x) = stack_case(&device, 300);
        let stack: Vec<(&Linear, Option<f64>)> = layers.iter().zip(STACK_SLOPES).collect();
        let values = x.clone().narrow(1, 0, 13);
        let first = |mask: Tensor<2>, n: usize| -> Vec<u32> {
            let out = linear_stack_beside(&stack, values.clone().narrow(0, 0, n), mask);
            let out: Vec<f32> = out.narrow(0, 0, 1).into_data().try_into_vec().unwrap();
            out.iter().map(|v| v.to_bits()).collect()
        };
        let gappy = Tensor::cat(
            vec![
                Tensor::<2>::ones([1, 13], &device),
                x.narrow(1, 13, 13).narrow(0, 1, 299),
            ],
            0,
        );
        let alone = first(Tensor::ones([2, 13], &device), 2);
        assert_eq!(first(Tensor::ones([300, 13], &device), 300), alone);
        assert_eq!(first(gappy, 300), alone);
    }

    /// The operation's autodiff form (layer by layer, parameters sliced out of the packed
    /// tensor) passes gradients to every layer's weight and bias and to the input.
    #[test]
    fn stack_on_autodiff_passes_every_gradient() {
        let device = Device::flex().autodiff();
        let (layers, x) = stack_case(&device, 40);
        let x = x.require_grad();
        let stack: Vec<(&Linear, Option<f64>)> = layers.iter().zip(STACK_SLOPES).collect();
        let ours = fused_stack(&stack, x.clone());
        let reference = reference_stack(&layers, x.clone());
        assert_close(
            "autodiff stack",
            ours.clone().inner(),
            reference.clone().inner(),
        );
        let weights = crate::train::seeded(&device, 6, || {
            Tensor::<2>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device)
        });
        let ga = (ours * weights.clone()).sum().backward();
        let gb = (reference * weights).sum().backward();
        assert_close(
            "stack input gradient",
            x.grad(&ga).unwrap(),
            x.grad(&gb).unwrap(),
        );
        for (i, layer) in layers.iter().enumerate() {
            assert_layer_grads(&format!("stack layer {i}"), layer, &ga, &gb);
        }
    }

    /// The inference device (no autodiff) takes the same kernel and gives the same values.
    #[test]
    fn inference_device_gives_the_same_output() {
        let device = Device::flex();
        let (layer, x) = crate::train::seeded(&device, 3, || {
            let layer = LinearConfig::new(40, 200).init(&device);
            let x = Tensor::<2>::random([150, 40], Distribution::Normal(0.0, 1.0), &device);
            let _ = layer.forward(x.clone());
            (layer, x)
        });
        let ours = linear_layer(&layer, x.clone(), Some(0.2));
        let reference = burn::tensor::activation::leaky_relu(layer.forward(x), 0.2);
        assert_close("inference output", ours, reference);
    }

    /// Side by side as burn's `cat` puts them, value for value, including a view that
    /// does not start at its buffer's start and an empty side.
    #[test]
    fn cat_columns_matches_burns_cat() {
        let device = Device::flex();
        let a = Tensor::<2>::random([37, 13], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<2>::random([40, 5], Distribution::Normal(0.0, 1.0), &device);
        let b = b.narrow(0, 3, 37);
        let ours = cat_columns(a.clone(), b.clone());
        let reference = Tensor::cat(vec![a.clone(), b], 1);
        assert_eq!(ours.dims(), [37, 18]);
        assert_eq!(ours.into_data(), reference.into_data());
        let empty = Tensor::<2>::zeros([37, 0], &device);
        assert_eq!(cat_columns(a.clone(), empty).into_data(), a.into_data());
    }
}
