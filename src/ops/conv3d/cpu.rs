//! CPU kernels of conv3d for f32 and f64: im2col + gemm over chunks of output rows.
//!
//! Memory: a whole 48-channel 48³ volume would need a 573 MB im2col matrix for a 3×3×3 kernel, so
//! every kernel here builds the matrix for a few output rows at a time (an output row is one line
//! of W' voxels at fixed depth and height) in a buffer of about `COL_BUFFER_ELEMENTS` elements per
//! thread, and multiplies it with the `gemm` crate.
//!
//! Layouts: all slices are contiguous, row-major. The im2col matrix of a chunk is [K, P] with
//! K = C·kd·kh·kw rows ordered like the weight's [C, kd, kh, kw] axes, and P = rows · W' columns.

use std::ops::Range;

use gemm::Parallelism;
use rayon::prelude::*;

use super::geometry::ConvGeometry;
use crate::ops::element::Element;

/// Size of one im2col buffer, in elements. 256 Ki f32 elements (1 MiB) keeps the buffer and the
/// gemm's packed blocks inside a 1 MiB L2 cache plus L3; the value was picked by timing
/// `examples/bench_conv3d.rs` with buffers of 2^16 to 2^22 elements on a 2-core AMD EPYC (Zen 4).
const COL_BUFFER_ELEMENTS: usize = 1 << 18;

/// Computes the convolution of `x` [N, C, D, H, W] with `w` [O, C, kd, kh, kw]; returns [N, O, D', H', W'].
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    let k = g.col_rows();
    let positions = g.output_voxels();
    let out_w = g.output[2];
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * positions;
    let rows_per_chunk = rows_per_chunk(g);

    let mut out = vec![T::ZERO; g.batch * sample_out];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let new_buffer = || vec![T::ZERO; k * rows_per_chunk * out_w];

    work_items(g, rows_per_chunk)
        .into_par_iter()
        .for_each_init(new_buffer, |col, (n, rows)| {
            let cols = rows.len() * out_w;
            let col = &mut col[..k * cols];
            im2col(&x[n * sample_in..][..sample_in], g, rows.clone(), col);

            let lhs = MatRef::row_major(w.as_ptr(), k);
            let rhs = MatRef::row_major(col.as_ptr(), cols);
            // SAFETY: the work items partition the output columns of each sample, so this item
            // is the only writer of columns rows·W'.. of sample n; lhs and rhs are in bounds.
            unsafe {
                let dst = out_ptr.get().add(n * sample_out + rows.start * out_w);
                let dst = MatMut {
                    ptr: dst,
                    row_stride: positions,
                    accumulate: false,
                };
                gemm_into(g.out_channels, cols, k, dst, lhs, rhs, Parallelism::None);
            }
        });
    out
}

/// Computes the gradient of the loss w.r.t. the weight, Σ grad_out · im2col(x)ᵀ; returns [O, C, kd, kh, kw].
pub(crate) fn grad_weight<T: Element>(x: &[T], grad_out: &[T], g: &ConvGeometry) -> Vec<T> {
    let k = g.col_rows();
    let positions = g.output_voxels();
    let out_w = g.output[2];
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * positions;
    let rows_per_chunk = rows_per_chunk(g);
    let weight_len = g.out_channels * k;

    // Each rayon job accumulates into its own weight gradient; the partial sums are added at the end.
    let new_state = || {
        (
            vec![T::ZERO; weight_len],
            vec![T::ZERO; k * rows_per_chunk * out_w],
        )
    };
    work_items(g, rows_per_chunk)
        .into_par_iter()
        .fold(new_state, |(mut acc, mut col), (n, rows)| {
            let cols = rows.len() * out_w;
            im2col(
                &x[n * sample_in..][..sample_in],
                g,
                rows.clone(),
                &mut col[..k * cols],
            );

            let grad_chunk = &grad_out[n * sample_out + rows.start * out_w..];
            let lhs = MatRef {
                ptr: grad_chunk.as_ptr(),
                row_stride: positions,
                col_stride: 1,
            };
            let rhs = MatRef {
                ptr: col.as_ptr(),
                row_stride: 1,
                col_stride: cols,
            };
            let dst = MatMut {
                ptr: acc.as_mut_ptr(),
                row_stride: k,
                accumulate: true,
            };
            // SAFETY: acc is [O, K]; lhs spans O rows of `cols` columns inside grad_out, rhs is
            // the [K, cols] im2col buffer read transposed.
            unsafe { gemm_into(g.out_channels, k, cols, dst, lhs, rhs, Parallelism::None) };
            (acc, col)
        })
        .map(|(acc, _)| acc)
        .reduce(|| vec![T::ZERO; weight_len], add_into)
}

/// Computes the gradient of the loss w.r.t. the input, the transposed convolution of `grad_out`
/// [N, O, D', H', W'] with `w`; returns [N, C, D, H, W].
pub(crate) fn grad_input<T: Element>(grad_out: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
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
    let positions = g.output_voxels();
    let out_w = g.output[2];
    let sample_in = g.in_channels * g.input_voxels();
    let sample_out = g.out_channels * positions;
    let rows_per_chunk = (4 * rows_per_chunk(g)).min(g.output_rows());
    let parallelism = Parallelism::Rayon(rayon::current_num_threads());

    let mut grad_x = vec![T::ZERO; g.batch * sample_in];
    let mut col = vec![T::ZERO; k * rows_per_chunk * out_w];
    for (n, rows) in work_items(g, rows_per_chunk) {
        let cols = rows.len() * out_w;
        let grad_chunk = &grad_out[n * sample_out + rows.start * out_w..];
        let lhs = MatRef {
            ptr: w.as_ptr(),
            row_stride: 1,
            col_stride: k,
        };
        let rhs = MatRef {
            ptr: grad_chunk.as_ptr(),
            row_stride: positions,
            col_stride: 1,
        };
        let dst = MatMut {
            ptr: col.as_mut_ptr(),
            row_stride: cols,
            accumulate: false,
        };
        // SAFETY: col holds at least [K, cols]; lhs reads w [O, K] transposed; rhs spans O rows of
        // `cols` columns inside grad_out.
        unsafe { gemm_into(k, cols, g.out_channels, dst, lhs, rhs, parallelism) };

        col2im(
            &col[..k * cols],
            g,
            rows,
            &mut grad_x[n * sample_in..][..sample_in],
        );
    }
    grad_x
}

/// Splits the output of every sample into chunks of at most `rows_per_chunk` output rows.
fn work_items(g: &ConvGeometry, rows_per_chunk: usize) -> Vec<(usize, Range<usize>)> {
    let rows = g.output_rows();
    (0..g.batch)
        .flat_map(|n| {
            (0..rows)
                .step_by(rows_per_chunk)
                .map(move |start| (n, start..(start + rows_per_chunk).min(rows)))
        })
        .collect()
}

/// Output rows per chunk: as many as fit the buffer budget, but few enough that every thread gets
/// at least four chunks to balance the load.
fn rows_per_chunk(g: &ConvGeometry) -> usize {
    let budget = std::env::var("PRISM_CONV_BUFFER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(COL_BUFFER_ELEMENTS);
    let by_budget = budget / (g.col_rows() * g.output[2]).max(1);
    let total_rows = g.batch * g.output_rows();
    let by_balance = total_rows.div_ceil(4 * rayon::current_num_threads());
    by_budget.min(by_balance).clamp(1, g.output_rows())
}

/// Fills `col` [K, rows·W'] with the input voxels under each kernel tap for output rows `rows`
/// of one sample `x` [C, D, H, W]; taps that fall into the zero padding get 0.
fn im2col<T: Element>(x: &[T], g: &ConvGeometry, rows: Range<usize>, col: &mut [T]) {
    let out_w = g.output[2];
    let columns = rows.len() * out_w;
    for (tap_row, dst_row) in col.chunks_exact_mut(columns).enumerate() {
        let tap = Tap::new(tap_row, g);
        let channel = &x[tap.channel * g.input_voxels()..][..g.input_voxels()];
        for (row, dst) in rows.clone().zip(dst_row.chunks_exact_mut(out_w)) {
            match tap.input_line(row, g) {
                Some(line) => gather_line(&channel[line..][..g.input[2]], dst, &tap),
                None => dst.fill(T::ZERO),
            }
        }
    }
}

/// Adds `col` [K, rows·W'] onto the voxels of `x` [C, D, H, W] that im2col would read them from;
/// the adjoint of [`im2col`]. Runs the input channels in parallel because they never share voxels.
fn col2im<T: Element>(col: &[T], g: &ConvGeometry, rows: Range<usize>, x: &mut [T]) {
    let taps: usize = g.kernel.iter().product();
    let columns = rows.len() * g.output[2];
    x.par_chunks_mut(g.input_voxels())
        .zip(col.par_chunks(taps * columns))
        .enumerate()
        .for_each(|(c, (channel, channel_col))| {
            for (tap_index, src_row) in channel_col.chunks_exact(columns).enumerate() {
                let tap = Tap::new(c * taps + tap_index, g);
                for (row, src) in rows.clone().zip(src_row.chunks_exact(g.output[2])) {
                    if let Some(line) = tap.input_line(row, g) {
                        scatter_add_line(src, &mut channel[line..][..g.input[2]], &tap);
                    }
                }
            }
        });
}

/// One row of the im2col matrix: an input channel and a kernel offset (z, y, x).
struct Tap {
    channel: usize,
    offset: [usize; 3],
    /// Output positions along W whose input voxel lies inside the unpadded row.
    valid: Range<usize>,
    stride: usize,
    /// Input column of output position `valid.start`.
    first_input: usize,
}

impl Tap {
    fn new(tap_row: usize, g: &ConvGeometry) -> Self {
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

/// dst[m×n] = (dst +) lhs[m×k] · rhs[k×n].
///
/// # Safety
/// Every operand must be valid for its shape and strides, and no other thread may access dst.
unsafe fn gemm_into<T: Element>(
    m: usize,
    n: usize,
    k: usize,
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
struct SyncPtr<T>(*mut T);

// SAFETY: users write disjoint regions only; see the SAFETY comments at each use.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    fn get(self) -> *mut T {
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
            let rows = 1..g.output_rows();
            let columns = rows.len() * g.output[2];
            let x = pseudo_random(g.in_channels * g.input_voxels(), 1);
            let c = pseudo_random(g.col_rows() * columns, 2);

            let mut col = vec![0.0; c.len()];
            im2col(&x, &g, rows.clone(), &mut col);
            let mut back = vec![0.0; x.len()];
            col2im(&c, &g, rows, &mut back);

            let (lhs, rhs) = (dot(&col, &c), dot(&x, &back));
            assert!(
                (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0),
                "{g:?}: {lhs} vs {rhs}"
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
