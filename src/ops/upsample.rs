//! Trilinear ×2 up-sampling of [B, C, D, H, W] tensors, as torch 2.x
//! `F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)` (PRISM's generator
//! uses it through `nn.Upsample`), differentiable w.r.t. the input.
//!
//! With align_corners=False and scale 2, output sample `2j` sits a quarter of an input spacing
//! before input sample `j`, and `2j + 1` a quarter after it, with the edge sample repeated outside
//! the volume. So along one axis of length `n`:
//! - `y[2j]     = 0.75·x[j] + 0.25·x[max(j − 1, 0)]`
//! - `y[2j + 1] = 0.75·x[j] + 0.25·x[min(j + 1, n − 1)]`
//!
//! and the 3-D operation applies this along each axis in turn. On the CPU, f32 and f64 tensors use
//! one pass per (batch, channel) plane that keeps the three up-sampled input slices it needs in
//! cache. Other devices and dtypes use [`upsample_portable`], built from candle tensor operations.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::element::Element;

/// Up-samples `x` [B, C, D, H, W] by 2 along D, H and W with trilinear interpolation
/// (align_corners=False). Returns [B, C, 2D, 2H, 2W].
pub fn upsample_trilinear_x2(x: &Tensor) -> Result<Tensor> {
    check_rank(x)?;
    let on_cpu = matches!(x.device(), Device::Cpu) && matches!(x.dtype(), DType::F32 | DType::F64);
    if on_cpu {
        x.contiguous()?.apply_op1(UpsampleForward)
    } else {
        upsample_portable(x)
    }
}

/// Same as [`upsample_trilinear_x2`], built from candle tensor operations (narrow, cat, affine,
/// stack) that candle implements and differentiates on every device.
pub fn upsample_portable(x: &Tensor) -> Result<Tensor> {
    check_rank(x)?;
    let mut y = x.clone();
    for axis in 2..5 {
        y = upsample_axis(&y, axis)?;
    }
    Ok(y)
}

fn check_rank(x: &Tensor) -> Result<()> {
    if x.rank() != 5 || x.dims().contains(&0) {
        bail!(
            "upsample_trilinear_x2: expected a non-empty input [B, C, D, H, W], got {:?}",
            x.dims()
        )
    }
    Ok(())
}

/// Doubles `axis` of `x` with the 1-D rule in the module documentation.
fn upsample_axis(x: &Tensor, axis: usize) -> Result<Tensor> {
    let n = x.dim(axis)?;
    let (previous, next) = if n == 1 {
        (x.clone(), x.clone())
    } else {
        let first = x.narrow(axis, 0, 1)?;
        let last = x.narrow(axis, n - 1, 1)?;
        (
            Tensor::cat(&[&first, &x.narrow(axis, 0, n - 1)?], axis)?,
            Tensor::cat(&[&x.narrow(axis, 1, n - 1)?, &last], axis)?,
        )
    };
    let centre = x.affine(0.75, 0.0)?;
    let even = (&centre + previous.affine(0.25, 0.0)?)?;
    let odd = (&centre + next.affine(0.25, 0.0)?)?;

    // Interleave: [.., n, 2, ..] → [.., 2n, ..], so even lands at 2j and odd at 2j + 1.
    let mut dims = x.dims().to_vec();
    dims[axis] *= 2;
    Tensor::stack(&[even, odd], axis + 1)?.reshape(dims)
}

/// The forward pass on the CPU: [B, C, D, H, W] → [B, C, 2D, 2H, 2W].
struct UpsampleForward;

/// The input gradient on the CPU: [B, C, 2D, 2H, 2W] → [B, C, D, H, W].
struct UpsampleGrad;

impl CustomOp1 for UpsampleForward {
    fn name(&self) -> &'static str {
        "upsample-trilinear-x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let [b, c, d, h, w] = dims5(self.name(), layout)?;
        let dims = [d, h, w];
        let sizes = (d * h * w, 8 * d * h * w);
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(per_plane(
                contiguous(x, layout)?,
                sizes,
                dims,
                upsample_plane,
            )),
            CpuStorage::F64(x) => CpuStorage::F64(per_plane(
                contiguous(x, layout)?,
                sizes,
                dims,
                upsample_plane,
            )),
            _ => bail!(
                "upsample-trilinear-x2: expected f32 or f64, got {:?}",
                storage.dtype()
            ),
        };
        Ok((out, Shape::from_dims(&[b, c, 2 * d, 2 * h, 2 * w])))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad_y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_y.contiguous()?.apply_op1_no_bwd(&UpsampleGrad)?))
    }
}

impl CustomOp1 for UpsampleGrad {
    fn name(&self) -> &'static str {
        "upsample-trilinear-x2-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let [b, c, d2, h2, w2] = dims5(self.name(), layout)?;
        if d2 % 2 != 0 || h2 % 2 != 0 || w2 % 2 != 0 {
            bail!(
                "upsample-trilinear-x2-grad: gradient has odd spatial size {:?}",
                layout.dims()
            )
        }
        let dims = [d2 / 2, h2 / 2, w2 / 2];
        let sizes = (d2 * h2 * w2, d2 * h2 * w2 / 8);
        let out = match storage {
            CpuStorage::F32(g) => CpuStorage::F32(per_plane(
                contiguous(g, layout)?,
                sizes,
                dims,
                downsample_plane,
            )),
            CpuStorage::F64(g) => CpuStorage::F64(per_plane(
                contiguous(g, layout)?,
                sizes,
                dims,
                downsample_plane,
            )),
            _ => bail!(
                "upsample-trilinear-x2-grad: expected f32 or f64, got {:?}",
                storage.dtype()
            ),
        };
        Ok((out, Shape::from_dims(&[b, c, dims[0], dims[1], dims[2]])))
    }
}

fn dims5(name: &str, layout: &Layout) -> Result<[usize; 5]> {
    match *layout.dims() {
        [b, c, d, h, w] => Ok([b, c, d, h, w]),
        _ => bail!("{name}: expected a 5-D tensor, got {:?}", layout.dims()),
    }
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("upsample-trilinear-x2: operand is not contiguous, call .contiguous() first"),
    }
}

/// Runs `kernel` on every (batch, channel) plane in parallel: planes of `src_plane` elements in
/// `src` map to planes of `dst_plane` elements in the result. `dims` is the low-resolution
/// [D, H, W] that the kernel takes. The kernel must write every element of its output plane.
fn per_plane<T: Element>(
    src: &[T],
    (src_plane, dst_plane): (usize, usize),
    dims: [usize; 3],
    kernel: fn(&[T], &mut [MaybeUninit<T>], [usize; 3]),
) -> Vec<T> {
    let len = src.len() / src_plane * dst_plane;

    // The output is left uninitialized rather than zeroed: zeroing the 8× larger forward output
    // would add a whole write pass over it.
    let mut dst = Vec::with_capacity(len);
    dst.spare_capacity_mut()[..len]
        .par_chunks_mut(dst_plane)
        .zip(src.par_chunks(src_plane))
        .for_each(|(dst, src)| kernel(src, dst, dims));

    // SAFETY: the first `len` elements are initialized, because `dst_plane` divides `len` and
    // both kernels, `upsample_plane` and `downsample_plane`, write every element of their plane.
    unsafe { dst.set_len(len) };
    dst
}

/// Up-samples one [D, H, W] plane into [2D, 2H, 2W]. Each input slice is up-sampled in H and W
/// once, into a rolling window of three slices, and each output slice blends two of them.
fn upsample_plane<T: Element>(src: &[T], dst: &mut [MaybeUninit<T>], [d, h, w]: [usize; 3]) {
    let slice_in = h * w;
    let slice_out = 4 * h * w;
    let mut rows = vec![T::ZERO; h * 2 * w];
    let mut upsampled = |i: usize, out: &mut Vec<T>| {
        out.resize(slice_out, T::ZERO);
        upsample_slice(&src[i * slice_in..(i + 1) * slice_in], out, &mut rows, h, w);
    };

    let (mut previous, mut current, mut next) = (Vec::new(), Vec::new(), Vec::new());
    upsampled(0, &mut current);
    previous.clone_from(&current);
    for i in 0..d {
        if i + 1 < d {
            upsampled(i + 1, &mut next);
        } else {
            next.clone_from(&current);
        }
        let (even, odd) = dst[2 * i * slice_out..(2 * i + 2) * slice_out].split_at_mut(slice_out);
        blend_into(&current, &previous, even);
        blend_into(&current, &next, odd);

        // Rotate: the current slice becomes the previous one, the next one the current one.
        std::mem::swap(&mut previous, &mut current);
        std::mem::swap(&mut current, &mut next);
    }
}

/// Up-samples one [H, W] slice into `dst` [2H, 2W], using `rows` [H, 2W] as scratch.
fn upsample_slice<T: Element>(src: &[T], dst: &mut [T], rows: &mut [T], h: usize, w: usize) {
    for (src_row, row) in src.chunks_exact(w).zip(rows.chunks_exact_mut(2 * w)) {
        upsample_line(src_row, row);
    }
    let row_len = 2 * w;
    for j in 0..h {
        let current = &rows[j * row_len..(j + 1) * row_len];
        let previous = &rows[j.saturating_sub(1) * row_len..][..row_len];
        let next = &rows[(j + 1).min(h - 1) * row_len..][..row_len];
        let (even, odd) = dst[2 * j * row_len..(2 * j + 2) * row_len].split_at_mut(row_len);
        blend(current, previous, even);
        blend(current, next, odd);
    }
}

/// Applies the 1-D rule along a contiguous line: `dst` has twice the length of `src`.
fn upsample_line<T: Element>(src: &[T], dst: &mut [T]) {
    let (near, far) = (T::from_f64(0.75), T::from_f64(0.25));
    let n = src.len();
    for (j, pair) in dst.chunks_exact_mut(2).enumerate() {
        let centre = near * src[j];
        pair[0] = centre + far * src[j.saturating_sub(1)];
        pair[1] = centre + far * src[(j + 1).min(n - 1)];
    }
}

/// `dst = 0.75·near + 0.25·far`, element-wise.
fn blend<T: Element>(near: &[T], far: &[T], dst: &mut [T]) {
    let (a, b) = (T::from_f64(0.75), T::from_f64(0.25));
    for ((d, &x), &y) in dst.iter_mut().zip(near).zip(far) {
        *d = a * x + b * y;
    }
}

/// Same as [`blend`], into uninitialized memory.
fn blend_into<T: Element>(near: &[T], far: &[T], dst: &mut [MaybeUninit<T>]) {
    let (a, b) = (T::from_f64(0.75), T::from_f64(0.25));
    for ((d, &x), &y) in dst.iter_mut().zip(near).zip(far) {
        d.write(a * x + b * y);
    }
}

/// Sums a [2D, 2H, 2W] gradient plane into [D, H, W], the adjoint of [`upsample_plane`].
///
/// Along one axis, input sample `j` feeds outputs `2j` and `2j + 1` with weight 0.75 and outputs
/// `2j − 1` and `2j + 2` with weight 0.25. An index outside [0, 2n − 1] is clamped to the edge,
/// because the forward pass uses the edge sample in place of its missing neighbour.
fn downsample_plane<T: Element>(src: &[T], dst: &mut [MaybeUninit<T>], [d, h, w]: [usize; 3]) {
    let slice_big = 4 * h * w;
    let slice_small = h * w;
    let mut folded = vec![T::ZERO; slice_big];
    let mut rows = vec![T::ZERO; h * 2 * w];
    let big = |i: usize| &src[i * slice_big..(i + 1) * slice_big];

    for (i, out) in dst.chunks_exact_mut(slice_small).enumerate().take(d) {
        let [before, first, second, after] = neighbours(i, d);
        fold4(
            big(before),
            big(first),
            big(second),
            big(after),
            &mut folded,
        );
        downsample_slice(&folded, out, &mut rows, h, w);
    }
}

/// Folds a [2H, 2W] gradient slice into [H, W], using `rows` [H, 2W] as scratch.
fn downsample_slice<T: Element>(
    src: &[T],
    dst: &mut [MaybeUninit<T>],
    rows: &mut [T],
    h: usize,
    w: usize,
) {
    let row_len = 2 * w;
    let row = |j: usize| &src[j * row_len..(j + 1) * row_len];
    for (j, out) in rows.chunks_exact_mut(row_len).enumerate() {
        let [before, first, second, after] = neighbours(j, h);
        fold4(row(before), row(first), row(second), row(after), out);
    }
    for (row, out) in rows.chunks_exact(row_len).zip(dst.chunks_exact_mut(w)) {
        downsample_line(row, out);
    }
}

/// Applies the adjoint of [`upsample_line`]: `dst` has half the length of `src`.
fn downsample_line<T: Element>(src: &[T], dst: &mut [MaybeUninit<T>]) {
    let (near, far) = (T::from_f64(0.75), T::from_f64(0.25));
    let n = dst.len();
    for (j, out) in dst.iter_mut().enumerate() {
        let [before, first, second, after] = neighbours(j, n);
        out.write(far * (src[before] + src[after]) + near * (src[first] + src[second]));
    }
}

/// Returns the high-resolution indices `[2j − 1, 2j, 2j + 1, 2j + 2]` that low-resolution
/// index `j` of `n` feeds, clamped to [0, 2n − 1].
fn neighbours(j: usize, n: usize) -> [usize; 4] {
    let last = 2 * n - 1;
    [
        (2 * j).saturating_sub(1),
        2 * j,
        2 * j + 1,
        (2 * j + 2).min(last),
    ]
}

/// `dst = 0.25·(before + after) + 0.75·(first + second)`, element-wise.
fn fold4<T: Element>(before: &[T], first: &[T], second: &[T], after: &[T], dst: &mut [T]) {
    let (near, far) = (T::from_f64(0.75), T::from_f64(0.25));
    for ((((d, &a), &b), &c), &e) in dst.iter_mut().zip(before).zip(first).zip(second).zip(after) {
        *d = far * (a + e) + near * (b + c);
    }
}
