//! conv3d from candle tensor operations, for devices and dtypes without a dedicated kernel.
//!
//! It materializes an im2col matrix per chunk of output depth planes and lets candle differentiate
//! pad, narrow, stack and matmul, so its backward pass allocates a slab-sized gradient per kernel
//! tap.
//!
//! NOTE: the tests run this path on the CPU only (against torch's outputs and gradients); it has
//! not been run on CUDA or Metal, where it is expected to be correct but slow.

use candle_core::{Result, Tensor};

use super::geometry::ConvGeometry;
use crate::ops::pad3d;

/// Elements of the im2col matrix built per chunk (128 MiB in f32).
const COL_BUFFER_ELEMENTS: usize = 1 << 25;

pub(super) fn conv3d(x: &Tensor, w: &Tensor, g: &ConvGeometry) -> Result<Tensor> {
    let [pd, ph, pw] = g.padding;
    let padded = pad3d(x, [(pd, pd), (ph, ph), (pw, pw)])?;
    let weight = w.reshape((g.out_channels, g.col_rows()))?;

    let [out_d, out_h, out_w] = g.output;
    let plane_elements = g.batch * g.col_rows() * out_h * out_w;
    let planes_per_chunk = (COL_BUFFER_ELEMENTS / plane_elements.max(1)).clamp(1, out_d);

    let mut chunks = Vec::new();
    for first in (0..out_d).step_by(planes_per_chunk) {
        let planes = planes_per_chunk.min(out_d - first);
        let slab_depth = (planes - 1) * g.stride[0] + g.kernel[0];
        let slab = padded.narrow(2, first * g.stride[0], slab_depth)?;

        let col = im2col(&slab, g, planes)?;
        let out = weight.broadcast_matmul(&col)?;
        chunks.push(out.reshape((g.batch, g.out_channels, planes, out_h, out_w))?);
    }
    Tensor::cat(&chunks, 2)
}

/// Gathers [N, C·kd·kh·kw, planes·H'·W'] from a padded slab [N, C, depth, H + 2ph, W + 2pw].
fn im2col(slab: &Tensor, g: &ConvGeometry, planes: usize) -> Result<Tensor> {
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let [_, out_h, out_w] = g.output;

    let mut taps = Vec::with_capacity(kd * kh * kw);
    for kz in 0..kd {
        let along_d = take_strided(slab, 2, kz, planes, sd)?;
        for ky in 0..kh {
            let along_h = take_strided(&along_d, 3, ky, out_h, sh)?;
            for kx in 0..kw {
                taps.push(take_strided(&along_h, 4, kx, out_w, sw)?);
            }
        }
    }
    // Stacking on axis 2 orders the rows (channel, tap) like the weight's [C, kd, kh, kw] axes.
    Tensor::stack(&taps, 2)?.reshape((g.batch, g.col_rows(), planes * out_h * out_w))
}

/// Elements start, start + step, ..., start + (count - 1)·step along `dim`.
fn take_strided(t: &Tensor, dim: usize, start: usize, count: usize, step: usize) -> Result<Tensor> {
    if step == 1 {
        return t.narrow(dim, start, count);
    }
    // Candle has no strided slice: pad the span to count·step elements, split the axis into
    // (count, step) and keep index 0 of the step axis.
    let span = t
        .narrow(dim, start, (count - 1) * step + 1)?
        .pad_with_zeros(dim, 0, step - 1)?;
    let mut dims = span.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, step);
    span.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}
