//! CPU kernels of conv3d for f32 and f64, and the choice between them.
//!
//! - Gather path ([`super::gather`]): f32 on AVX-512 CPUs when the output channels fill the
//!   kernel's 48-wide panels and there are enough taps per output. It reads the input directly.
//! - Explicit path (here): builds the im2col matrix of one chunk of output voxels at a time and
//!   multiplies it with the packed 12×32 kernel (f32 on AVX-512 CPUs) or the `gemm` crate
//!   (f64, other CPUs). A whole 48-channel 48³ volume would need a 573 MB matrix for a 3×3×3
//!   kernel, so each rayon job keeps one buffer of about `COL_BUFFER_ELEMENTS` elements.
//! - Input gradient: the forward pass of the flipped kernel where the stride is 1 (and the
//!   padding smaller than the kernel), else wᵀ·grad_out per chunk followed by col2im.
//!
//! The im2col matrix of a chunk has K = C·kd·kh·kw rows, ordered like the weight's
//! [C, kd, kh, kw] axes, and one column per output voxel of the chunk (flat index over
//! D'·H'·W' of one sample).

use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;

use super::gather;
use super::geometry::ConvGeometry;
use super::microkernel::{self, GatherKernel, Microkernel};
use crate::ops::element::Element;

/// Size of one im2col buffer, in elements: 1 MiB in f32, so that a chunk's matrix fits a 1 MiB
/// or larger L2 cache.
const COL_BUFFER_ELEMENTS: usize = 1 << 18;

/// Element types of the conv3d kernels, with the AVX-512 kernels where the CPU has them.
pub(crate) trait ConvElement: Element {
    fn microkernel() -> Option<Microkernel<Self>>;
    fn gather_kernel() -> Option<GatherKernel<Self>>;
}

impl ConvElement for f32 {
    fn microkernel() -> Option<Microkernel<Self>> {
        microkernel::f32_kernel()
    }

    fn gather_kernel() -> Option<GatherKernel<Self>> {
        microkernel::f32_gather_kernel()
    }
}

impl ConvElement for f64 {
    fn microkernel() -> Option<Microkernel<Self>> {
        None
    }

    fn gather_kernel() -> Option<GatherKernel<Self>> {
        None
    }
}

/// One unit of parallel work: a range of output voxels (flat over D'·H'·W') of one sample.
#[derive(Clone, Debug)]
struct Chunk {
    sample: usize,
    voxels: Range<usize>,
}

/// Computes the convolution of `x` [N, C, D, H, W] with `w` [O, C, kd, kh, kw]; returns [N, O, D', H', W'].
pub(crate) fn forward<T: ConvElement>(x: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    match T::gather_kernel() {
        Some(kernel) if gather::applies(g, &kernel) => gather::forward(x, w, g, &kernel),
        _ => forward_explicit(x, w, g),
    }
}

/// Forward through an explicit im2col matrix per chunk of output voxels.
fn forward_explicit<T: ConvElement>(x: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    let k = g.col_rows();
    let voxels = g.output_voxels();
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * voxels;
    let kernel = T::microkernel();
    let chunk_len = chunk_len(g, kernel.map_or(1, |kernel| kernel.nr));

    let mut packed_w = Vec::new();
    if let Some(kernel) = &kernel {
        kernel.pack_lhs(w, (g.out_channels, k), k, &mut packed_w);
    }

    let mut out = vec![T::ZERO; g.batch * sample_out];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let new_buffer =
        || vec![T::ZERO; k * chunk_len.next_multiple_of(kernel.map_or(1, |kernel| kernel.nr))];

    chunks(g, chunk_len)
        .into_par_iter()
        .for_each_init(new_buffer, |col, chunk| {
            let x = &x[chunk.sample * sample_in..][..sample_in];
            let cols = chunk.voxels.len();
            // SAFETY (both arms): the chunks partition the output voxels of each sample, so this
            // job is the only writer of columns chunk.voxels of sample chunk.sample.
            let dst = unsafe {
                out_ptr
                    .get()
                    .add(chunk.sample * sample_out + chunk.voxels.start)
            };
            match &kernel {
                Some(kernel) => {
                    im2col(x, g, chunk.voxels.clone(), |row, col_index, values| {
                        store_panel_line(col, kernel, k, row, col_index, values)
                    });
                    // SAFETY: packed_w and col hold the packed layouts of the [O, K] and [K, cols] operands.
                    unsafe {
                        kernel.gemm(
                            (g.out_channels, cols, k),
                            &packed_w,
                            col,
                            dst,
                            voxels,
                            false,
                        )
                    };
                }
                None => {
                    im2col(x, g, chunk.voxels.clone(), |row, col_index, values| {
                        col[row * cols + col_index..][..values.len()].copy_from_slice(values)
                    });
                    let lhs = MatRef::row_major(w.as_ptr(), k);
                    let rhs = MatRef::row_major(col.as_ptr(), cols);
                    let dst = MatMut {
                        ptr: dst,
                        row_stride: voxels,
                        accumulate: false,
                    };
                    // SAFETY: w is [O, K] and col is [K, cols], both row-major.
                    unsafe {
                        gemm_into((g.out_channels, cols, k), dst, lhs, rhs, Parallelism::None)
                    };
                }
            }
        });
    out
}

/// Computes the gradient of the loss w.r.t. the weight, Σ grad_out · im2col(x)ᵀ; returns [O, C, kd, kh, kw].
pub(crate) fn grad_weight<T: ConvElement>(x: &[T], grad_out: &[T], g: &ConvGeometry) -> Vec<T> {
    if let Some(kernel) = T::gather_kernel() {
        if gather::applies(g, &kernel) {
            return gather::grad_weight(x, grad_out, g, &kernel);
        }
    }
    grad_weight_explicit(x, grad_out, g)
}

/// Weight gradient through an explicit im2col matrix per chunk of output voxels.
fn grad_weight_explicit<T: ConvElement>(x: &[T], grad_out: &[T], g: &ConvGeometry) -> Vec<T> {
    let k = g.col_rows();
    let kernel = T::microkernel();
    let chunk_len = chunk_len(g, 1);
    let weight_len = g.out_channels * k;
    let col_len = k.next_multiple_of(kernel.map_or(1, |kernel| kernel.nr)) * chunk_len;

    // Partial sums over fixed groups of consecutive chunks are added in group order, so the
    // result does not depend on rayon's scheduling and training runs repeat bit for bit.
    // rayon's fold/reduce would split the work, and round the sums, differently every run.
    let new_state = || GradWeightState {
        grad: vec![T::ZERO; weight_len],
        col: vec![T::ZERO; col_len],
        packed_grad_out: Vec::new(),
    };
    let chunks = chunks(g, chunk_len);
    let group_len = chunks.len().div_ceil(2 * rayon::current_num_threads()).max(1);
    let partials: Vec<Vec<T>> = chunks
        .par_chunks(group_len)
        .map(|group| {
            let mut state = new_state();
            for chunk in group {
                accumulate_chunk(&mut state, chunk, x, grad_out, g, &kernel);
            }
            state.grad
        })
        .collect();
    partials.into_iter().reduce(add_into).unwrap_or_else(|| vec![T::ZERO; weight_len])
}

/// Adds one chunk's share, grad_out[O, cols] · col[K, cols]ᵀ, to `state.grad`.
fn accumulate_chunk<T: ConvElement>(
    state: &mut GradWeightState<T>,
    chunk: &Chunk,
    x: &[T],
    grad_out: &[T],
    g: &ConvGeometry,
    kernel: &Option<Microkernel<T>>,
) {
    let k = g.col_rows();
    let voxels = g.output_voxels();
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * voxels;
    let x = &x[chunk.sample * sample_in..][..sample_in];
    let grad_out = &grad_out[chunk.sample * sample_out + chunk.voxels.start..];
    let cols = chunk.voxels.len();
    let dst = state.grad.as_mut_ptr();
    match kernel {
        // dW[O, K] += grad_out[O, cols] · col[K, cols]ᵀ, with colᵀ written straight
        // into the rhs panel layout.
        Some(kernel) => {
            let col = &mut state.col;
            im2col(x, g, chunk.voxels.clone(), |row, col_index, values| {
                // Row `row` of the im2col matrix is column `row` of colᵀ: one lane of
                // one panel, NR elements apart.
                let start = kernel.rhs_index(cols, col_index, row);
                for (d, &value) in col[start..].iter_mut().step_by(kernel.nr).zip(values) {
                    *d = value;
                }
            });
            kernel.pack_lhs(
                grad_out,
                (g.out_channels, cols),
                voxels,
                &mut state.packed_grad_out,
            );
            // SAFETY: the operands are packed for (O, K, cols); dst is this job's [O, K] buffer.
            unsafe {
                kernel.gemm(
                    (g.out_channels, k, cols),
                    &state.packed_grad_out,
                    col,
                    dst,
                    k,
                    true,
                )
            };
        }
        None => {
            let col = &mut state.col;
            im2col(x, g, chunk.voxels.clone(), |row, col_index, values| {
                col[row * cols + col_index..][..values.len()].copy_from_slice(values)
            });
            let lhs = MatRef {
                ptr: grad_out.as_ptr(),
                row_stride: voxels,
                col_stride: 1,
            };
            let rhs = MatRef {
                ptr: col.as_ptr(),
                row_stride: 1,
                col_stride: cols,
            };
            let dst = MatMut {
                ptr: dst,
                row_stride: k,
                accumulate: true,
            };
            // SAFETY: lhs spans O rows of `cols` columns inside grad_out; rhs reads the
            // [K, cols] buffer transposed; dst is this job's [O, K] buffer.
            unsafe {
                gemm_into((g.out_channels, k, cols), dst, lhs, rhs, Parallelism::None)
            };
        }
    }
}

struct GradWeightState<T> {
    grad: Vec<T>,
    col: Vec<T>,
    packed_grad_out: Vec<T>,
}

/// Computes the gradient of the loss w.r.t. the input, the transposed convolution of `grad_out`
/// [N, O, D', H', W'] with `w`; returns [N, C, D, H, W].
pub(crate) fn grad_input<T: ConvElement>(grad_out: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    match transposed_as_forward(g) {
        Some(flipped) => forward(grad_out, &flip_transpose_kernel(w, g), &flipped),
        None => grad_input_col2im(grad_out, w, g),
    }
}

/// Geometry of the stride-1 convolution that equals the adjoint of `g`: a convolution of grad_out
/// with the kernel flipped on all three axes and its channel axes swapped, padded by k - 1 - p.
/// `None` where that does not apply (stride above 1, or padding of k or more).
fn transposed_as_forward(g: &ConvGeometry) -> Option<ConvGeometry> {
    let unit_stride = g.stride == [1; 3];
    let padding_fits = (0..3).all(|axis| g.padding[axis] < g.kernel[axis]);
    if !(unit_stride && padding_fits) {
        return None;
    }
    let padding: [usize; 3] = std::array::from_fn(|axis| g.kernel[axis] - 1 - g.padding[axis]);
    Some(ConvGeometry {
        batch: g.batch,
        in_channels: g.out_channels,
        out_channels: g.in_channels,
        input: g.output,
        kernel: g.kernel,
        stride: [1; 3],
        padding,
        output: g.input,
    })
}

/// Rearranges w [O, C, kd, kh, kw] into w' [C, O, kd, kh, kw] with w'[c, o, z, y, x] = w[o, c, kd-1-z, kh-1-y, kw-1-x].
fn flip_transpose_kernel<T: Element>(w: &[T], g: &ConvGeometry) -> Vec<T> {
    let taps: usize = g.kernel.iter().product();
    let mut flipped = vec![T::ZERO; w.len()];
    for o in 0..g.out_channels {
        for c in 0..g.in_channels {
            let src = &w[(o * g.in_channels + c) * taps..][..taps];
            let dst = &mut flipped[(c * g.out_channels + o) * taps..][..taps];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    flipped
}

/// General adjoint: colᵍ = wᵀ · grad_out per chunk, then col2im adds colᵍ back onto the input
/// voxels it was gathered from. Chunks run in order because neighbouring chunks overlap in the
/// input; the parallelism is inside the gemm and across input channels in col2im.
fn grad_input_col2im<T: Element>(grad_out: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    let k = g.col_rows();
    let voxels = g.output_voxels();
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * voxels;
    let chunk_len = (4 * chunk_len(g, 1)).min(voxels);
    let parallelism = Parallelism::Rayon(rayon::current_num_threads());

    let mut grad_x = vec![T::ZERO; g.batch * sample_in];
    let mut col = vec![T::ZERO; k * chunk_len];
    for chunk in chunks(g, chunk_len) {
        let cols = chunk.voxels.len();
        let grad_chunk = &grad_out[chunk.sample * sample_out + chunk.voxels.start..];
        let lhs = MatRef {
            ptr: w.as_ptr(),
            row_stride: 1,
            col_stride: k,
        };
        let rhs = MatRef {
            ptr: grad_chunk.as_ptr(),
            row_stride: voxels,
            col_stride: 1,
        };
        let dst = MatMut {
            ptr: col.as_mut_ptr(),
            row_stride: cols,
            accumulate: false,
        };
        // SAFETY: col has room for [K, cols], lhs reads w [O, K] transposed, and rhs spans O
        // rows of `cols` columns inside grad_out.
        unsafe { gemm_into((k, cols, g.out_channels), dst, lhs, rhs, parallelism) };

        let grad_x = &mut grad_x[chunk.sample * sample_in..][..sample_in];
        col2im(&col[..k * cols], g, chunk.voxels, grad_x);
    }
    grad_x
}

/// Splits the output voxels of every sample into chunks of at most `chunk_len` voxels.
fn chunks(g: &ConvGeometry, chunk_len: usize) -> Vec<Chunk> {
    let ranges = voxel_ranges(g.output_voxels(), chunk_len);
    (0..g.batch)
        .flat_map(|sample| {
            ranges.iter().map(move |voxels| Chunk {
                sample,
                voxels: voxels.clone(),
            })
        })
        .collect()
}

/// Splits 0..voxels into ranges of at most `len`.
pub(super) fn voxel_ranges(voxels: usize, len: usize) -> Vec<Range<usize>> {
    (0..voxels)
        .step_by(len)
        .map(|start| start..(start + len).min(voxels))
        .collect()
}

/// Output voxels per chunk, a multiple of `granule` (the packed kernel's panel width): as many
/// as fit the buffer budget, but few enough that every thread gets at least four chunks.
fn chunk_len(g: &ConvGeometry, granule: usize) -> usize {
    let by_budget = COL_BUFFER_ELEMENTS / g.col_rows();
    let by_balance = (g.batch * g.output_voxels()).div_ceil(4 * rayon::current_num_threads());
    let len = by_budget.min(by_balance).min(g.output_voxels());
    (len / granule * granule).max(granule)
}

/// Passes, for every row of the im2col matrix and every output row within `voxels`, the input
/// values under that kernel tap to `store(row, first column, values)`. Taps that fall into the
/// zero padding give 0. `x` is one sample [C, D, H, W].
fn im2col<T: Element>(
    x: &[T],
    g: &ConvGeometry,
    voxels: Range<usize>,
    mut store: impl FnMut(usize, usize, &[T]),
) {
    let out_w = g.output[2];
    let mut line = vec![T::ZERO; out_w];
    for tap_row in 0..g.col_rows() {
        let tap = Tap::new(tap_row, g);
        let channel = &x[tap.channel * g.input_voxels()..][..g.input_voxels()];
        for segment in row_segments(voxels.clone(), out_w) {
            match tap.input_line(segment.row, g) {
                Some(start) => gather_line(&channel[start..][..g.input[2]], &mut line, &tap),
                None => line.fill(T::ZERO),
            }
            store(tap_row, segment.column, &line[segment.within_row]);
        }
    }
}

/// Adds `col` [K, voxels.len()] onto the voxels of `x` [C, D, H, W] that im2col reads them
/// from; the adjoint of [`im2col`]. Runs the input channels in parallel because they never
/// share voxels.
fn col2im<T: Element>(col: &[T], g: &ConvGeometry, voxels: Range<usize>, x: &mut [T]) {
    let taps: usize = g.kernel.iter().product();
    let columns = voxels.len();
    let out_w = g.output[2];
    x.par_chunks_mut(g.input_voxels())
        .zip(col.par_chunks(taps * columns))
        .enumerate()
        .for_each(|(c, (channel, channel_col))| {
            let mut line = vec![T::ZERO; out_w];
            for (tap_index, src_row) in channel_col.chunks_exact(columns).enumerate() {
                let tap = Tap::new(c * taps + tap_index, g);
                for segment in row_segments(voxels.clone(), out_w) {
                    let Some(start) = tap.input_line(segment.row, g) else {
                        continue;
                    };
                    line.fill(T::ZERO);
                    line[segment.within_row.clone()]
                        .copy_from_slice(&src_row[segment.column..][..segment.within_row.len()]);
                    scatter_add_line(&line, &mut channel[start..][..g.input[2]], &tap);
                }
            }
        });
}

/// Stores a run of one im2col row, starting at column `first`, into the rhs panel layout of
/// `kernel` for a K-deep product.
fn store_panel_line<T: Element>(
    col: &mut [T],
    kernel: &Microkernel<T>,
    k: usize,
    row: usize,
    first: usize,
    values: &[T],
) {
    let mut column = first;
    let mut rest = values;
    while !rest.is_empty() {
        // Columns up to the end of the current panel are contiguous in memory.
        let run = (kernel.nr - column % kernel.nr).min(rest.len());
        col[kernel.rhs_index(k, row, column)..][..run].copy_from_slice(&rest[..run]);
        column += run;
        rest = &rest[run..];
    }
}

/// The part of one output row (a line along W') that a chunk covers.
struct RowSegment {
    /// Output row index, od·H' + oh.
    row: usize,
    /// Output positions along W' within the row.
    within_row: Range<usize>,
    /// Column of the segment's first voxel in the chunk's im2col matrix.
    column: usize,
}

fn row_segments(voxels: Range<usize>, out_w: usize) -> impl Iterator<Item = RowSegment> {
    let rows = voxels.start / out_w..voxels.end.div_ceil(out_w);
    rows.map(move |row| {
        let start = (row * out_w).max(voxels.start);
        let end = ((row + 1) * out_w).min(voxels.end);
        RowSegment {
            row,
            within_row: start - row * out_w..end - row * out_w,
            column: start - voxels.start,
        }
    })
}

/// One row of the im2col matrix: an input channel and a kernel offset (z, y, x).
pub(super) struct Tap {
    pub channel: usize,
    pub offset: [usize; 3],
    /// Output positions along W' whose input voxel lies inside the unpadded line.
    valid: Range<usize>,
    stride: usize,
    /// Input column of output position `valid.start`.
    first_input: usize,
}

impl Tap {
    pub fn new(tap_row: usize, g: &ConvGeometry) -> Self {
        let [_, kh, kw] = g.kernel;
        let taps_per_channel: usize = g.kernel.iter().product();
        let within = tap_row % taps_per_channel;
        let offset = [within / (kh * kw), (within / kw) % kh, within % kw];
        let valid = valid_outputs(offset[2], 2, g);
        let first_input = (valid.start * g.stride[2] + offset[2]).saturating_sub(g.padding[2]);
        Self {
            channel: tap_row / taps_per_channel,
            offset,
            valid,
            stride: g.stride[2],
            first_input,
        }
    }

    /// Start of the input line (within one channel) that output row `row` reads, or `None` when
    /// the line lies in the zero padding along D or H.
    fn input_line(&self, row: usize, g: &ConvGeometry) -> Option<usize> {
        let (od, oh) = (row / g.output[1], row % g.output[1]);
        let z = input_index(od, self.offset[0], 0, g)?;
        let y = input_index(oh, self.offset[1], 1, g)?;
        Some((z * g.input[1] + y) * g.input[2])
    }
}

/// Input index o·stride + k - padding along `axis`, or `None` inside the padding.
fn input_index(o: usize, k: usize, axis: usize, g: &ConvGeometry) -> Option<usize> {
    (o * g.stride[axis] + k)
        .checked_sub(g.padding[axis])
        .filter(|&i| i < g.input[axis])
}

/// Output positions o along `axis` with 0 ≤ o·stride + k - padding < input size.
fn valid_outputs(k: usize, axis: usize, g: &ConvGeometry) -> Range<usize> {
    let (s, p, size, out) = (
        g.stride[axis],
        g.padding[axis],
        g.input[axis],
        g.output[axis],
    );
    let start = p.saturating_sub(k).div_ceil(s);
    let end = if size + p > k {
        ((size - 1 + p - k) / s + 1).min(out)
    } else {
        0
    };
    start.min(end)..end
}

/// Fills a whole output line `dst` (W' values) with the input values `src` (one input line) under `tap`.
fn gather_line<T: Element>(src: &[T], dst: &mut [T], tap: &Tap) {
    let valid = tap.valid.clone();
    if valid.is_empty() {
        dst.fill(T::ZERO);
        return;
    }
    dst[..valid.start].fill(T::ZERO);
    dst[valid.end..].fill(T::ZERO);
    let dst = &mut dst[valid.clone()];
    if tap.stride == 1 {
        dst.copy_from_slice(&src[tap.first_input..][..valid.len()]);
    } else {
        let src = src[tap.first_input..].iter().step_by(tap.stride);
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Adds a whole output line `src` (W' values) onto the input line `dst` it was gathered from.
fn scatter_add_line<T: Element>(src: &[T], dst: &mut [T], tap: &Tap) {
    if tap.valid.is_empty() {
        return;
    }
    let src = &src[tap.valid.clone()];
    let dst = dst[tap.first_input..].iter_mut().step_by(tap.stride);
    for (d, s) in dst.zip(src) {
        *d += *s;
    }
}

fn add_into<T: Element>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}

/// A read-only matrix operand of the gemm, given by its first element and strides in elements.
#[derive(Clone, Copy)]
struct MatRef<T> {
    ptr: *const T,
    row_stride: usize,
    col_stride: usize,
}

impl<T> MatRef<T> {
    fn row_major(ptr: *const T, columns: usize) -> Self {
        Self {
            ptr,
            row_stride: columns,
            col_stride: 1,
        }
    }
}

/// The gemm's destination: row-major with the given row stride; `accumulate` adds to its contents.
struct MatMut<T> {
    ptr: *mut T,
    row_stride: usize,
    accumulate: bool,
}

/// dst[m×n] = (dst +) lhs[m×k] · rhs[k×n], through the `gemm` crate.
///
/// # Safety
/// Every operand must be valid for its shape and strides, and no other thread may access dst.
unsafe fn gemm_into<T: Element>(
    (m, n, k): (usize, usize, usize),
    dst: MatMut<T>,
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    parallelism: Parallelism,
) {
    // gemm 0.19 computes dst = alpha·dst + beta·lhs·rhs, and ignores alpha when read_dst is false.
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        1,
        dst.row_stride as isize,
        dst.accumulate,
        lhs.ptr,
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.ptr,
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        T::ONE,
        T::ONE,
        false,
        false,
        false,
        parallelism,
    )
}

/// A raw pointer that rayon jobs may share because each writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr<T>(pub *mut T);

// SAFETY: users write disjoint regions only; see the SAFETY comments at each use.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv3d::Conv3dConfig;

    fn geometry(
        x: [usize; 5],
        w: [usize; 5],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> ConvGeometry {
        ConvGeometry::new(&x, &w, &Conv3dConfig { stride, padding }).unwrap()
    }

    /// Deterministic values in [-1, 1).
    fn pseudo_random(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn valid_outputs_match_enumeration() {
        for (k, s, p, size) in [
            (0, 1, 1, 5),
            (2, 1, 1, 5),
            (0, 2, 1, 7),
            (1, 3, 2, 5),
            (0, 1, 3, 3),
            (1, 1, 3, 3),
        ] {
            let g = geometry(
                [1, 1, 1, 1, size],
                [1, 1, 1, 1, k + 1],
                [1, 1, s],
                [0, 0, p],
            );
            let expected: Vec<usize> = (0..g.output[2])
                .filter(|&o| (o * s + k).checked_sub(p).is_some_and(|i| i < size))
                .collect();
            let actual: Vec<usize> = valid_outputs(k, 2, &g).collect();
            assert_eq!(actual, expected, "k={k} s={s} p={p} size={size}");
        }
    }

    #[test]
    fn col2im_is_adjoint_of_im2col() {
        let cases = [
            geometry([1, 2, 5, 4, 6], [1, 2, 3, 3, 3], [1, 1, 1], [1, 1, 1]),
            geometry([1, 3, 7, 6, 5], [1, 3, 3, 2, 3], [2, 1, 3], [1, 0, 2]),
            geometry([1, 1, 3, 3, 3], [1, 1, 2, 2, 2], [1, 1, 1], [3, 3, 3]),
        ];
        for g in cases {
            // A range that starts and ends inside output rows.
            let voxels = 1..g.output_voxels() - 2;
            let columns = voxels.len();
            let x = pseudo_random(g.in_channels * g.input_voxels(), 1);
            let c = pseudo_random(g.col_rows() * columns, 2);

            let mut col = vec![0.0; c.len()];
            im2col(&x, &g, voxels.clone(), |row, first, values| {
                col[row * columns + first..][..values.len()].copy_from_slice(values)
            });
            let mut back = vec![0.0; x.len()];
            col2im(&c, &g, voxels, &mut back);

            let (lhs, rhs) = (dot(&col, &c), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                "{g:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn microkernel_matches_naive_product_on_edge_tiles() {
        let Some(kernel) = f32::microkernel() else {
            eprintln!("skipped: this CPU has no packed f32 kernel");
            return;
        };
        let (m, n, k) = (2 * kernel.mr + 1, kernel.nr + 5, 7);
        let lhs: Vec<f32> = pseudo_random(m * k, 5)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let rhs: Vec<f32> = pseudo_random(k * n, 6)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let initial: Vec<f32> = pseudo_random(m * n, 7)
            .into_iter()
            .map(|v| v as f32)
            .collect();

        let mut packed_lhs = Vec::new();
        kernel.pack_lhs(&lhs, (m, k), k, &mut packed_lhs);
        let mut packed_rhs = vec![0f32; n.next_multiple_of(kernel.nr) * k];
        for row in 0..k {
            store_panel_line(&mut packed_rhs, &kernel, k, row, 0, &rhs[row * n..][..n]);
        }

        for accumulate in [false, true] {
            let mut dst = initial.clone();
            // SAFETY: operands are packed for (m, n, k) and dst is m×n.
            unsafe {
                kernel.gemm(
                    (m, n, k),
                    &packed_lhs,
                    &packed_rhs,
                    dst.as_mut_ptr(),
                    n,
                    accumulate,
                )
            };
            for i in 0..m {
                for j in 0..n {
                    let product: f32 = (0..k).map(|l| lhs[i * k + l] * rhs[l * n + j]).sum();
                    let expected = if accumulate {
                        initial[i * n + j] + product
                    } else {
                        product
                    };
                    let actual = dst[i * n + j];
                    assert!(
                        (actual - expected).abs() < 1e-5,
                        "accumulate={accumulate} ({i}, {j}): {actual} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn gather_forward_matches_f64() {
        if f32::gather_kernel().is_none() {
            eprintln!("skipped: this CPU has no f32 gather kernel");
            return;
        }
        // Channel counts that fill one, two and a partial panel; strides, padding, batch 2.
        let cases = [
            geometry([2, 3, 3, 4, 5], [48, 3, 3, 3, 3], [1, 1, 1], [1, 1, 1]),
            geometry([1, 11, 5, 3, 7], [96, 11, 2, 3, 1], [2, 1, 3], [0, 2, 1]),
            geometry([1, 64, 3, 2, 5], [40, 64, 1, 1, 1], [1, 1, 1], [0, 0, 0]),
            geometry([2, 8, 6, 4, 8], [48, 8, 2, 2, 2], [2, 2, 2], [0, 0, 0]),
        ];
        for g in cases {
            assert!(
                gather::applies(&g, &f32::gather_kernel().unwrap()),
                "{g:?} does not use the gather path"
            );
            let x = pseudo_random(g.batch * g.in_channels * g.input_voxels(), 11);
            let w = pseudo_random(g.out_channels * g.col_rows(), 12);
            let to_f32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let single = forward(&to_f32(&x), &to_f32(&w), &g);
            let double = forward(&x, &w, &g);
            let scale = double.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = single
                .iter()
                .zip(&double)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{g:?}: max difference {diff} of {scale}"
            );
        }
    }

    #[test]
    fn packed_f32_kernels_match_f64() {
        let g = geometry([2, 5, 6, 7, 9], [13, 5, 3, 3, 2], [1, 2, 1], [1, 1, 0]);
        let x = pseudo_random(g.batch * g.in_channels * g.input_voxels(), 8);
        let w = pseudo_random(g.out_channels * g.col_rows(), 9);
        let grad_out = pseudo_random(g.batch * g.out_channels * g.output_voxels(), 10);
        let to_f32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();

        let pairs = [
            (
                "forward",
                forward(&to_f32(&x), &to_f32(&w), &g),
                forward(&x, &w, &g),
            ),
            (
                "grad_weight",
                grad_weight(&to_f32(&x), &to_f32(&grad_out), &g),
                grad_weight(&x, &grad_out, &g),
            ),
        ];
        for (name, single, double) in pairs {
            let scale = double.iter().fold(0f64, |m, v| m.max(v.abs()));
            let diff = single
                .iter()
                .zip(&double)
                .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{name}: max difference {diff} of {scale}"
            );
        }
    }

    #[test]
    fn grad_input_paths_agree() {
        let g = geometry([2, 3, 5, 6, 4], [4, 3, 3, 2, 3], [1, 1, 1], [1, 0, 2]);
        assert!(
            transposed_as_forward(&g).is_some(),
            "stride-1 case should use the forward kernel"
        );
        let w = pseudo_random(g.out_channels * g.col_rows(), 3);
        let grad_out = pseudo_random(g.batch * g.out_channels * g.output_voxels(), 4);

        let by_forward = grad_input(&grad_out, &w, &g);
        let by_col2im = grad_input_col2im(&grad_out, &w, &g);
        let max_diff = by_forward
            .iter()
            .zip(&by_col2im)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_diff < 1e-12, "max difference {max_diff}");
    }
}
