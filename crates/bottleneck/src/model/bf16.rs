//! Matrix products with bfloat16 operands and float32 sums, for training the image networks
//! on CPUs with AVX512_BF16 (AMD Zen 4 and later, Intel Sapphire Rapids and later), when
//! asked for with `BOTTLENECK_PRECISION=bf16`.
//!
//! Why: `vdpbf16ps` does two multiply-adds per float32 lane per instruction: measured on the
//! development machine (one core, 24 independent sums), 138 GFLOP/s against 70 for float32
//! FMA. The `gemm` crate has no bfloat16 kernel, hence this one. The products alone run
//! 1.3-2x faster than `gemm`'s float32, but a whole training step only ~10% faster (the
//! column copies and the packing stay), and the default image detector ranked lower with it
//! in two seeds of three, so it is not the default (bench/RESULTS.md, "Default training
//! time").
//!
//! Operands are rounded to bfloat16 (8 significant bits, round to nearest even) as they are
//! packed; every product of two bfloat16 values is exact in float32 and the sums are float32:
//! the precision of mixed-precision training (PyTorch's `autocast` on CPU). Only training
//! uses it; scores, calibration and exported models stay float32. Results are deterministic:
//! the blocking depends only on the shapes.
//!
//! Layout: both operands are packed into panels of pairs along k, one `u32` per pair (the
//! lower half holds the even k): `A` in panels of [`MR`] rows, `B` in panels of 32 columns,
//! each `[pair][width]`. The micro-kernel broadcasts one row's pair of `A` and multiplies it
//! with 16 columns' pairs of `B` per instruction.

use super::kernels::Mat;

/// Rows of `A` per micro-kernel call (8 rows x 32 columns = 16 vector sums).
const MR: usize = 8;
/// Columns of `B` per panel (two vectors of 16).
const NR: usize = 32;
/// Values of k per block (128 pairs: a `B` panel is 16 KB, in L1 with an `A` panel).
const KC: usize = 256;
/// Rows of `A` packed per block (128 rows x 128 pairs = 64 KB, in L2).
const MC: usize = 128;

/// Whether training asked for bfloat16 products (`BOTTLENECK_PRECISION=bf16`) and this CPU
/// runs the kernel. Off by default: on the default image detector (brick, three seeds) it
/// trained 10-23% faster, with image AUROC lower in two seeds of three (bench/RESULTS.md).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let wanted = std::env::var("BOTTLENECK_PRECISION")
            .map(|v| v.eq_ignore_ascii_case("bf16"))
            .unwrap_or(false);
        wanted && cpu_runs_kernel()
    })
}

/// Whether this CPU has the instructions the kernel uses.
#[cfg(target_arch = "x86_64")]
pub fn cpu_runs_kernel() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU has the instructions the kernel uses.
#[cfg(not(target_arch = "x86_64"))]
pub fn cpu_runs_kernel() -> bool {
    false
}

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits.
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The float32 value of bfloat16 bits.
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// One operand of a product viewed as `X[kk][x]`: `k` values along the sum and `width`
/// along the kept side, `X[kk][x] = ptr[kk * ks + x * xs]`.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    ks: isize,
    xs: isize,
}

/// Packs `X[k0 .. k0 + kc][x0 .. x0 + xn]` into panels of `panel` values of x, each
/// `[pair][x]` (`kc.div_ceil(2)` pairs of `panel` `u32`s): what the kernel reads for `B`,
/// and for `A` when its rows are not contiguous along k. Positions beyond the matrix are 0.
///
/// # Safety
/// `op` must view live values for every `kk < k0 + kc`, `x < x0 + xn`; `out` must hold
/// `xn.div_ceil(panel) * panel * kc.div_ceil(2)` values; [`cpu_runs_kernel`] must hold.
unsafe fn pack_across(
    op: Operand,
    k0: usize,
    kc: usize,
    x0: usize,
    xn: usize,
    panel: usize,
    out: &mut [u32],
) {
    let pairs = kc.div_ceil(2);
    let at = |kk: usize, x: usize| -> f32 {
        // SAFETY: in range by this function's contract.
        unsafe {
            *op.ptr
                .offset((k0 + kk) as isize * op.ks + (x0 + x) as isize * op.xs)
        }
    };
    // Scratch for the path contiguous along k only.
    let mut block = if op.ks == 1 {
        vec![0u32; panel * 16]
    } else {
        Vec::new()
    };
    for (p, dst) in out
        .chunks_mut(pairs * panel)
        .take(xn.div_ceil(panel))
        .enumerate()
    {
        let width = panel.min(xn - p * panel);
        let mut q = 0;
        // Contiguous along k (a weight gradient's output gradient): 16 pairs of each x
        // converted at once, then written across.
        #[cfg(target_arch = "x86_64")]
        if op.ks == 1 {
            while 2 * q + 32 <= kc {
                for (x, chunk) in block.chunks_mut(16).take(width).enumerate() {
                    let from = (k0 + 2 * q) as isize + (x0 + p * panel + x) as isize * op.xs;
                    // SAFETY: 32 values of column x from pair q on (contract).
                    unsafe { convert32(op.ptr.offset(from), chunk.as_mut_ptr()) };
                }
                for qq in 0..16 {
                    let row = &mut dst[(q + qq) * panel..(q + qq + 1) * panel];
                    for (x, slot) in row.iter_mut().enumerate() {
                        *slot = if x < width { block[x * 16 + qq] } else { 0 };
                    }
                }
                q += 16;
            }
        }
        for q in q..pairs {
            let row = &mut dst[q * panel..(q + 1) * panel];
            let (ka, kb) = (2 * q, 2 * q + 1);
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if op.xs == 1 && kb < kc {
                let first = (x0 + p * panel) as isize;
                // SAFETY: rows ka and kb hold `width` contiguous values from `first`.
                unsafe {
                    let a = op.ptr.offset((k0 + ka) as isize * op.ks + first);
                    let b = op.ptr.offset((k0 + kb) as isize * op.ks + first);
                    while done + 16 <= width {
                        interleave16(a.add(done), b.add(done), row.as_mut_ptr().add(done));
                        done += 16;
                    }
                }
            }
            for (x, slot) in row.iter_mut().enumerate().skip(done) {
                *slot = if x >= width {
                    0
                } else {
                    let hi = if kb < kc {
                        to_bf16(at(kb, p * panel + x))
                    } else {
                        0
                    };
                    to_bf16(at(ka, p * panel + x)) as u32 | (hi as u32) << 16
                };
            }
        }
    }
}

/// Packs the same block as [`pack_across`] with each x's pairs contiguous instead
/// (`[x][pair]` within a panel): a straight conversion when `X` is contiguous along k (rows
/// of `A` in a convolution's forward pass and weight gradient).
///
/// # Safety
/// As [`pack_across`].
unsafe fn pack_along(
    op: Operand,
    k0: usize,
    kc: usize,
    x0: usize,
    xn: usize,
    panel: usize,
    out: &mut [u32],
) {
    let pairs = kc.div_ceil(2);
    for (x, dst) in out
        .chunks_mut(pairs)
        .take(xn.div_ceil(panel) * panel)
        .enumerate()
    {
        if x >= xn {
            dst.fill(0);
            continue;
        }
        // SAFETY: column x0 + x holds kc values from k0 (contract).
        let base = unsafe {
            op.ptr
                .offset(k0 as isize * op.ks + (x0 + x) as isize * op.xs)
        };
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if op.ks == 1 {
            while 2 * done + 32 <= kc {
                // SAFETY: 32 contiguous values from pair `done` on.
                unsafe { convert32(base.add(2 * done), dst.as_mut_ptr().add(done)) };
                done += 16;
            }
        }
        for (q, slot) in dst.iter_mut().enumerate().skip(done) {
            // SAFETY: k values below kc of this column (contract).
            let at = |kk: usize| unsafe { *base.offset(kk as isize * op.ks) };
            let hi = if 2 * q + 1 < kc {
                to_bf16(at(2 * q + 1))
            } else {
                0
            };
            *slot = to_bf16(at(2 * q)) as u32 | (hi as u32) << 16;
        }
    }
}

/// 32 contiguous values rounded to bfloat16 as 16 pairs.
///
/// # Safety
/// 32 values readable at `src`, 16 writable at `out`; the CPU has AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn convert32(src: *const f32, out: *mut u32) {
    use std::arch::x86_64::*;
    unsafe {
        let v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src.add(16)), _mm512_loadu_ps(src));
        _mm512_storeu_si512(out as *mut _, std::mem::transmute::<__m512bh, __m512i>(v));
    }
}

/// 16 pairs `(a[i], b[i])` rounded to bfloat16 into `out[i]` (a in the lower half).
///
/// # Safety
/// 16 values readable at `a` and `b`, 16 writable at `out`; the CPU has AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave16(a: *const f32, b: *const f32, out: *mut u32) {
    use std::arch::x86_64::*;
    unsafe {
        let lo: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(a)));
        let hi: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(b)));
        let v = _mm512_or_si512(
            _mm512_cvtepu16_epi32(lo),
            _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)),
        );
        _mm512_storeu_si512(out as *mut _, v);
    }
}

/// `C[m x n] (+)= A[m x k] * B[k x n]` with bfloat16 operands and float32 sums, on this
/// thread; `C[i][j] = dst[i * dst_rs + j * dst_cs]`; `accumulate` adds to `C`.
///
/// # Safety
/// As `kernels::matmul_raw`, with `dst` valid at the strides given; [`cpu_runs_kernel`] must hold.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    // `B` is packed fastest when contiguous along n. When it is not, compute C^T = B^T A^T
    // instead if that makes the new `B` (A^T) contiguous along its n, or smaller (a weight
    // gradient, where both operands run along k).
    if rhs.cs != 1 && (lhs.rs == 1 || m < n) {
        let flip = |v: Mat| Mat {
            ptr: v.ptr,
            rs: v.cs,
            cs: v.rs,
        };
        // Into a contiguous C^T first: written in place, C^T's rows would be C's columns,
        // a weight gradient's rows apart (kilobytes: every store of a tile to one cache set).
        let mut t = vec![0.0f32; n * m];
        // SAFETY: `t` holds n x m values at row stride m; the operands are forwarded.
        unsafe {
            let a = PackedA::new(flip(rhs), n, k);
            product(t.as_mut_ptr(), m as isize, 1, &a, m, flip(lhs), false)
        };
        for i in 0..m {
            for j in 0..n {
                // SAFETY: (i, j) lies inside C (contract).
                unsafe {
                    let p = dst.offset(i as isize * dst_rs + j as isize * dst_cs);
                    *p = if accumulate {
                        *p + t[j * m + i]
                    } else {
                        t[j * m + i]
                    };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded.
    unsafe {
        let a = PackedA::new(lhs, m, k);
        product(dst, dst_rs, dst_cs, &a, n, rhs, accumulate)
    }
}

/// The left operand of a product, `A[m x k]`, packed for the kernel once, so that a layer's
/// weight serves every image and band of a batch without being packed again.
pub(super) struct PackedA {
    data: Vec<u32>,
    m: usize,
    k: usize,
    /// Rows packed `[row][pair]` (a source contiguous along k), else `[pair][row]`.
    along: bool,
}

impl PackedA {
    /// Packs `A[m x k] = lhs`, every block of [`MC`] rows and [`KC`] values of k in a slot
    /// of its own.
    ///
    /// # Safety
    /// `lhs` must view `m x k` live values; [`cpu_runs_kernel`] must hold.
    pub(super) unsafe fn new(lhs: Mat, m: usize, k: usize) -> Self {
        let op = Operand {
            ptr: lhs.ptr,
            ks: lhs.cs,
            xs: lhs.rs,
        };
        let along = lhs.cs == 1;
        let mut data = vec![0u32; k.div_ceil(KC) * m.div_ceil(MC) * MC * KC / 2];
        for (slot, dst) in data.chunks_mut(MC * KC / 2).enumerate() {
            let (k0, m0) = ((slot / m.div_ceil(MC)) * KC, (slot % m.div_ceil(MC)) * MC);
            let (kc, mc) = (KC.min(k - k0), MC.min(m - m0));
            // SAFETY: the block lies inside A (contract); a slot holds MC / MR panels of
            // KC / 2 pairs.
            unsafe {
                match along {
                    true => pack_along(op, k0, kc, m0, mc, MR, dst),
                    false => pack_across(op, k0, kc, m0, mc, MR, dst),
                }
            }
        }
        Self { data, m, k, along }
    }

    /// The packed block of rows from `m0` and k from `k0`.
    fn block(&self, k0: usize, m0: usize) -> &[u32] {
        let slot = (k0 / KC) * self.m.div_ceil(MC) + m0 / MC;
        &self.data[slot * MC * KC / 2..(slot + 1) * MC * KC / 2]
    }
}

/// `C (+)= A * B` with `A` packed already, `B[a.k x n] = rhs`; otherwise as [`matmul`].
///
/// # Safety
/// As [`matmul`].
pub(super) unsafe fn matmul_packed(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    a: &PackedA,
    n: usize,
    rhs: Mat,
    accumulate: bool,
) {
    // SAFETY: forwarded.
    unsafe { product(dst, dst_rs, dst_cs, a, n, rhs, accumulate) }
}

/// [`matmul_packed`] with `B` not yet packed.
///
/// # Safety
/// As [`matmul`].
unsafe fn product(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    a: &PackedA,
    n: usize,
    rhs: Mat,
    accumulate: bool,
) {
    let (m, k) = (a.m, a.k);
    let at = |i: usize, j: usize| i as isize * dst_rs + j as isize * dst_cs;
    let c = dst;
    if k == 0 || m == 0 || n == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: C is m x n at its strides (contract).
                    unsafe { *c.offset(at(i, j)) = 0.0 };
                }
            }
        }
        return;
    }
    let b = Operand {
        ptr: rhs.ptr,
        ks: rhs.rs,
        xs: rhs.cs,
    };
    let n_panels = n.div_ceil(NR);
    let mut bpack = vec![0u32; n_panels * NR * KC / 2];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let pairs = kc.div_ceil(2);
        let first = k0 == 0 && !accumulate;
        // SAFETY: B is k x n (contract); bpack holds n_panels panels of KC / 2 pairs.
        unsafe { pack_across(b, k0, kc, 0, n, NR, &mut bpack) };
        for m0 in (0..m).step_by(MC) {
            let mc = MC.min(m - m0);
            let apack = a.block(k0, m0);
            for jp in 0..n_panels {
                let bp = &bpack[jp * pairs * NR..(jp + 1) * pairs * NR];
                let nw = NR.min(n - jp * NR);
                for ip in 0..mc.div_ceil(MR) {
                    let ap = &apack[ip * pairs * MR..(ip + 1) * pairs * MR];
                    let mw = MR.min(mc - ip * MR);
                    let mut tile = [0.0f32; MR * NR];
                    // SAFETY: cpu_runs_kernel() holds (contract); the panels hold `pairs` pairs.
                    unsafe {
                        match a.along {
                            true => kernel::<true>(ap, bp, pairs, nw > 16, &mut tile),
                            false => kernel::<false>(ap, bp, pairs, nw > 16, &mut tile),
                        }
                    }
                    let (i0, j0) = (m0 + ip * MR, jp * NR);
                    // SAFETY: rows i0.. i0 + mw and columns j0 .. j0 + nw lie inside C.
                    unsafe { flush(&tile, c.offset(at(i0, j0)), dst_rs, dst_cs, mw, nw, first) };
                }
            }
        }
    }
}

/// Writes (`first`) or adds the top-left `rows x cols` of a kernel's tile to `C` at `c`.
///
/// # Safety
/// `c` must be valid for those positions at strides `rs`, `cs`; the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn flush(
    tile: &[f32; MR * NR],
    c: *mut f32,
    rs: isize,
    cs: isize,
    rows: usize,
    cols: usize,
    first: bool,
) {
    use std::arch::x86_64::*;
    unsafe {
        if cs == 1 {
            for (r, row) in tile.chunks(NR).take(rows).enumerate() {
                let dst = c.offset(r as isize * rs);
                for half in 0..2 {
                    let left = cols.saturating_sub(16 * half).min(16);
                    if left == 0 {
                        break;
                    }
                    let mask: __mmask16 = if left == 16 {
                        0xffff
                    } else {
                        (1u16 << left) - 1
                    };
                    let at = dst.add(16 * half);
                    let mut v = _mm512_loadu_ps(row.as_ptr().add(16 * half));
                    if !first {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
                    }
                    _mm512_mask_storeu_ps(at, mask, v);
                }
            }
            return;
        }
        for (r, row) in tile.chunks(NR).take(rows).enumerate() {
            for (j, &v) in row.iter().take(cols).enumerate() {
                let p = c.offset(r as isize * rs + j as isize * cs);
                *p = if first { v } else { *p + v };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn flush(_: &[f32; MR * NR], _: *mut f32, _: isize, _: isize, _: usize, _: usize, _: bool) {
    unreachable!("the bfloat16 kernel runs only where cpu_runs_kernel() holds")
}

/// `tile[r][j] = sum over pairs q of a(q, r) . b[q][j]` for MR rows and 32 columns (16 if
/// not `wide`); `a` is `[row][pair]` if `ALONG`, else `[pair][row]`.
///
/// # Safety
/// The CPU has AVX512_BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn kernel<const ALONG: bool>(
    a: &[u32],
    b: &[u32],
    pairs: usize,
    wide: bool,
    tile: &mut [f32; MR * NR],
) {
    use std::arch::x86_64::*;
    assert!(a.len() >= pairs * MR && b.len() >= pairs * NR);
    let (ars, aqs) = if ALONG { (pairs, 1) } else { (1, MR) };
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let load = |at: usize| -> __m512bh {
            std::mem::transmute(_mm512_loadu_si512(bp.add(at) as *const _))
        };
        let splat = |q: usize, r: usize| -> __m512bh {
            std::mem::transmute(_mm512_set1_epi32(*ap.add(q * aqs + r * ars) as i32))
        };
        if wide {
            for q in 0..pairs {
                let (b0, b1) = (load(q * NR), load(q * NR + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = splat(q, r);
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
                }
            }
        } else {
            for q in 0..pairs {
                let b0 = load(q * NR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm512_dpbf16_ps(acc[0], splat(q, r), b0);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR), acc[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(r * NR + 16), acc[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const ALONG: bool>(
    _: &[u32],
    _: &[u32],
    _: usize,
    _: bool,
    _: &mut [f32; MR * NR],
) {
    unreachable!("the bfloat16 kernel runs only where cpu_runs_kernel() holds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in float64 of the operands rounded to bfloat16.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|kk| r(a[i * k + kk]) * r(b[kk * n + j])).sum();
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    }

    /// Every layout the convolutions use (row-major and transposed operands, a transposed
    /// destination, accumulation), on shapes that end mid-panel and mid-block, against the
    /// float64 product of the rounded operands.
    #[test]
    fn products_match_the_rounded_operands_in_every_layout() {
        if !cpu_runs_kernel() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (8, 32, 2),
            (13, 45, 7),
            (130, 17, 300),
            (64, 100, 513),
        ] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let want = reference(&a, &b, m, n, k);
            let lhs = [Mat::rows(&a, k), Mat::transposed(&at, m)];
            let rhs = [Mat::rows(&b, n), Mat::transposed(&bt, k)];
            for (l, r, transposed_dst, accumulate) in [
                (0, 0, false, false),
                (1, 0, false, true),
                (0, 1, true, false),
                (1, 1, false, true),
            ] {
                let start = values(m * n, 3);
                let mut c = if accumulate {
                    start.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                let (rs, cs) = if transposed_dst {
                    (1, m as isize)
                } else {
                    (n as isize, 1)
                };
                unsafe { matmul(c.as_mut_ptr(), rs, cs, m, n, k, lhs[l], rhs[r], accumulate) };
                for i in 0..m {
                    for j in 0..n {
                        let got = c[(i as isize * rs + j as isize * cs) as usize] as f64;
                        let base = if accumulate {
                            start[i * n + j] as f64
                        } else {
                            0.0
                        };
                        let err = (got - base - want[i * n + j]).abs();
                        assert!(
                            err <= 1e-5 * (k as f64).sqrt() + 1e-6,
                            "{m}x{n}x{k} layout {l}{r}{transposed_dst}: [{i}][{j}] off by {err}"
                        );
                    }
                }
            }
        }
    }
}
