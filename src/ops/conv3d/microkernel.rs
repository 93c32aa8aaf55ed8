//! Register-blocked f32 tile kernels for AVX-512 CPUs.
//!
//! Timed single-threaded on an AMD EPYC (Zen 4) with a timing loop, the `gemm` crate 0.19
//! (without its `x86-v4` feature, as candle builds it) ran [48×1296]·[1296×192] products at
//! about 55 GFLOP/s. The 12×32 tile of [`Microkernel`] and the 8×48 tile of [`GatherKernel`]
//! both ran at about 110 GFLOP/s, and torch 2.15's oneDNN conv3d at up to 130 GFLOP/s.
//!
//! Layouts, for a product dst[m×n] = lhs[m×k] · rhs[k×n]:
//! - lhs: [⌈m/MR⌉][k][MR], MR consecutive rows interleaved per k, zero-padded to a multiple of MR;
//! - rhs: [⌈n/NR⌉][k][NR], NR consecutive columns per k; lanes past n may hold any value,
//!   because they only reach output lanes that are never stored.
//!
//! [`GatherKernel`] computes a convolution without an im2col matrix: it reads each input value
//! straight from the zero-padded input and vectorizes over output channels instead.

use std::ops::Range;

use rayon::prelude::*;

use super::super::element::Element;

/// Depth (k) of the product per pass over the tiles: 256 steps of a 32-wide rhs panel take
/// 32 KiB (L1) and of a 48-wide weight panel 48 KiB (L2). On a 2-core AMD EPYC (Zen 4), blocks of
/// 128 to 512 and no blocking timed alike within noise. The blocking bounds the working set for
/// CPUs with smaller caches.
const DEPTH_BLOCK: usize = 256;

/// Splits 0..k into ranges of at most [`DEPTH_BLOCK`].
pub(crate) fn depth_blocks(k: usize) -> impl Iterator<Item = Range<usize>> {
    (0..k)
        .step_by(DEPTH_BLOCK)
        .map(move |start| start..(start + DEPTH_BLOCK).min(k))
}

/// A tile kernel and its tile size; [`Microkernel::gemm`] drives it over a whole product.
#[derive(Clone, Copy)]
pub(crate) struct Microkernel<T> {
    pub mr: usize,
    pub nr: usize,
    tile: unsafe fn(&Tile<T>),
}

/// One tile of the product: `rows` × `cols` outputs (at most MR × NR) over the full depth k.
struct Tile<T> {
    depth: usize,
    lhs: *const T,
    rhs: *const T,
    dst: *mut T,
    dst_row_stride: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
}

impl<T: Element> Microkernel<T> {
    /// Computes dst[m×n] = lhs · rhs, or adds the product to dst when `accumulate` is set.
    /// dst is row-major with `dst_row_stride` elements between rows.
    ///
    /// # Safety
    /// `lhs` and `rhs` must contain the packed layouts above for these m, n, k. dst must be valid
    /// for m rows of n elements, and no other thread may access those elements.
    pub unsafe fn gemm(
        &self,
        (m, n, k): (usize, usize, usize),
        lhs: &[T],
        rhs: &[T],
        dst: *mut T,
        dst_row_stride: usize,
        accumulate: bool,
    ) {
        debug_assert!(lhs.len() >= m.div_ceil(self.mr) * k * self.mr);
        debug_assert!(rhs.len() >= n.div_ceil(self.nr) * k * self.nr);
        // Splitting the depth keeps one block of the rhs panel (DEPTH_BLOCK × NR) in L1 while
        // every block of lhs rows passes over it. The lhs rows of that depth block stay in L2
        // across panels.
        for depth in depth_blocks(k) {
            let accumulate = accumulate || depth.start > 0;
            for panel in 0..n.div_ceil(self.nr) {
                let first_col = panel * self.nr;
                for block in 0..m.div_ceil(self.mr) {
                    let first_row = block * self.mr;
                    let tile = Tile {
                        depth: depth.len(),
                        lhs: lhs.as_ptr().add((block * k + depth.start) * self.mr),
                        rhs: rhs.as_ptr().add((panel * k + depth.start) * self.nr),
                        dst: dst.add(first_row * dst_row_stride + first_col),
                        dst_row_stride,
                        rows: self.mr.min(m - first_row),
                        cols: self.nr.min(n - first_col),
                        accumulate,
                    };
                    (self.tile)(&tile);
                }
            }
        }
    }

    /// Packs the m×k matrix at `src` (element (i, j) at `i·row_stride + j`) into the lhs layout.
    pub fn pack_lhs(
        &self,
        src: &[T],
        (m, k): (usize, usize),
        row_stride: usize,
        packed: &mut Vec<T>,
    ) {
        pack_row_blocks(src, (m, k), row_stride, self.mr, false, packed);
    }

    /// Position of element (row, col) of a k-deep rhs in the rhs layout.
    #[inline]
    pub fn rhs_index(&self, depth: usize, row: usize, col: usize) -> usize {
        (col / self.nr) * depth * self.nr + row * self.nr + col % self.nr
    }
}

/// Packs the m×k matrix at `src` (element (i, j) at `i·row_stride + j`) as [⌈m/rows⌉][k][rows]:
/// `rows` consecutive matrix rows interleaved per k, zero-padded to a multiple of `rows`.
/// Packs the blocks in parallel when `parallel` is set.
fn pack_row_blocks<T: Element>(
    src: &[T],
    (m, k): (usize, usize),
    row_stride: usize,
    rows: usize,
    parallel: bool,
    packed: &mut Vec<T>,
) {
    packed.clear();
    packed.resize(m.div_ceil(rows) * k * rows, T::ZERO);
    let pack_block = |(b, block): (usize, &mut [T])| {
        let first = b * rows;
        let sources: Vec<&[T]> = (first..m.min(first + rows))
            .map(|i| &src[i * row_stride..][..k])
            .collect();
        // Writing each packed k step whole reads the block's rows side by side, in order.
        for (j, dst) in block.chunks_exact_mut(rows).enumerate() {
            for (d, row) in dst.iter_mut().zip(&sources) {
                *d = row[j];
            }
        }
    };
    if k == 0 {
        return;
    }
    if parallel {
        packed
            .par_chunks_mut(k * rows)
            .enumerate()
            .for_each(pack_block);
    } else {
        packed.chunks_mut(k * rows).enumerate().for_each(pack_block);
    }
}

/// Tile kernel of a convolution that reads its input directly: VOXELS output voxels × CHANNELS
/// output channels, summed over all k taps (input channel and kernel offset).
///
/// Voxel j of a tile reads tap l at `base + deltas[j] + offsets[l]` in the zero-padded input, so
/// the voxels of a tile may lie anywhere (across rows and planes) and no output is wasted. The
/// weight is packed as [⌈O/CHANNELS⌉][k][CHANNELS] ([`GatherKernel::pack_weight`]).
#[derive(Clone, Copy)]
pub(crate) struct GatherKernel<T> {
    pub voxels: usize,
    pub channels: usize,
    tile: unsafe fn(&GatherTile<T>),
}

/// Operands of one [`GatherKernel`] tile.
pub(crate) struct GatherTile<'a, T> {
    /// One panel of the packed weight, [k][CHANNELS].
    pub weight: &'a [T],
    pub base: *const T,
    /// Per tap, k entries.
    pub offsets: &'a [isize],
    /// Per voxel of the tile, VOXELS entries.
    pub deltas: &'a [isize],
    /// The result, [VOXELS][CHANNELS] row-major.
    pub dst: *mut T,
    /// Add the result to dst instead of overwriting it.
    pub accumulate: bool,
}

impl<T: Element> GatherKernel<T> {
    pub fn pack_weight(&self, w: &[T], (o, k): (usize, usize), packed: &mut Vec<T>) {
        pack_row_blocks(w, (o, k), k, self.channels, true, packed);
    }

    /// Computes one tile.
    ///
    /// # Safety
    /// `weight` must contain offsets.len() × CHANNELS values and `deltas` VOXELS values. Every
    /// address `base + deltas[j] + offsets[l]` must lie inside one allocation, and dst must be
    /// valid for VOXELS × CHANNELS values.
    pub unsafe fn run(&self, tile: &GatherTile<T>) {
        debug_assert!(tile.weight.len() >= tile.offsets.len() * self.channels);
        debug_assert!(tile.deltas.len() >= self.voxels);
        (self.tile)(tile)
    }
}

/// Returns the gather kernel for this CPU, or `None` where it lacks AVX-512F.
pub(crate) fn f32_gather_kernel() -> Option<GatherKernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(GatherKernel {
            voxels: gather_avx512::VOXELS,
            channels: gather_avx512::CHANNELS,
            tile: gather_avx512::tile,
        });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod gather_avx512 {
    use std::arch::x86_64::*;

    use super::GatherTile;

    /// 8 voxels × 3 vectors of 16 channels: 24 accumulators, 3 weight vectors and a broadcast
    /// use 28 zmm registers, and the 8 voxel deltas fit general-purpose registers. Each tap
    /// issues 24 FMAs for 3 vector loads and 8 scalar broadcasts. 48 channels also divides
    /// every width of the PRISM networks (48·2^s).
    pub const VOXELS: usize = 8;
    pub const CHANNELS: usize = 48;

    /// # Safety
    /// The CPU must support AVX-512F, and the tile's operands must be valid as documented on
    /// [`super::GatherKernel::run`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(t: &GatherTile<f32>) {
        let mut acc = [[_mm512_setzero_ps(); 3]; VOXELS];
        let deltas: [isize; VOXELS] = std::array::from_fn(|j| t.deltas[j]);
        let mut weight = t.weight.as_ptr();
        for &offset in t.offsets {
            let input = t.base.offset(offset);
            let w = [
                _mm512_loadu_ps(weight),
                _mm512_loadu_ps(weight.add(16)),
                _mm512_loadu_ps(weight.add(32)),
            ];
            for (row, &delta) in acc.iter_mut().zip(&deltas) {
                let a = _mm512_set1_ps(*input.offset(delta));
                for (sum, &w) in row.iter_mut().zip(&w) {
                    *sum = _mm512_fmadd_ps(a, w, *sum);
                }
            }
            weight = weight.add(CHANNELS);
        }
        for (j, row) in acc.iter().enumerate() {
            for (v, &sum) in row.iter().enumerate() {
                let dst = t.dst.add(j * CHANNELS + 16 * v);
                let sum = if t.accumulate {
                    _mm512_add_ps(sum, _mm512_loadu_ps(dst))
                } else {
                    sum
                };
                _mm512_storeu_ps(dst, sum);
            }
        }
    }
}

/// Returns the packed f32 kernel for this CPU, or `None` where it lacks AVX-512F.
pub(crate) fn f32_kernel() -> Option<Microkernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(Microkernel {
            mr: avx512::MR,
            nr: avx512::NR,
            tile: avx512::tile,
        });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// 12 rows × 2 vectors of 16 lanes: 24 accumulators, 2 rhs vectors and a broadcast fill 27
    /// of the 32 zmm registers, and each k step issues 24 FMAs for 2 vector loads.
    pub const MR: usize = 12;
    pub const NR: usize = 32;

    /// # Safety
    /// The CPU must support AVX-512F, and the tile's pointers must be valid as documented on
    /// [`super::Microkernel::gemm`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(t: &Tile<f32>) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut lhs, mut rhs) = (t.lhs, t.rhs);
        for _ in 0..t.depth {
            step(&mut acc, lhs, rhs);
            lhs = lhs.add(MR);
            rhs = rhs.add(NR);
        }

        let masks = [lane_mask(t.cols), lane_mask(t.cols.saturating_sub(16))];
        // A constant trip count keeps `acc` in registers; rows past t.rows are skipped.
        for (i, row) in acc.iter().enumerate() {
            if i >= t.rows {
                break;
            }
            let dst = t.dst.add(i * t.dst_row_stride);
            for (half, (&value, &mask)) in row.iter().zip(&masks).enumerate() {
                let dst = dst.add(16 * half);
                let value = if t.accumulate {
                    _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, dst))
                } else {
                    value
                };
                _mm512_mask_storeu_ps(dst, mask, value);
            }
        }
    }

    /// Adds one k step, acc[i] += lhs[i] · rhs[0..32], for the MR rows.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn step(acc: &mut [[__m512; 2]; MR], lhs: *const f32, rhs: *const f32) {
        let b0 = _mm512_loadu_ps(rhs);
        let b1 = _mm512_loadu_ps(rhs.add(16));
        for (i, row) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*lhs.add(i));
            row[0] = _mm512_fmadd_ps(a, b0, row[0]);
            row[1] = _mm512_fmadd_ps(a, b1, row[1]);
        }
    }

    /// Mask of the first min(n, 16) lanes.
    fn lane_mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }
}
