//! Window attention, `softmax(scale·QKᵀ + bias + mask)·V`, for every window and head.
//!
//! Two paths compute the same thing:
//! - a fused CPU kernel for inference: per (window, head) it multiplies Q and Kᵀ into
//!   an `n×n` score block that stays in cache, adds bias and mask, takes the softmax
//!   and multiplies by V, so the `windows × heads × n × n` logits never exist in
//!   memory at once (at PRISM's first stage on a 96³ input they would be 484 MB per
//!   pass, read and written five times by separate ops);
//! - candle tensor ops, used whenever a gradient is needed or the tensors are not on
//!   the CPU.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::norm::softmax_last_dim;

/// Attention over windows.
///
/// - `qkv`: `[nw, n, 3, heads, hd]`, the qkv projection of each window's tokens;
/// - `bias`: `[heads, n, n]`, added to every window's logits;
/// - `mask`: `[m, n, n]` with `nw` a multiple of `m`; window `w` uses `mask[w % m]`.
///
/// Returns `[nw, n, heads·hd]`, heads concatenated as in the input channels.
pub fn window_attention(qkv: &Tensor, bias: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (nw, n, three, heads, hd) = qkv.dims5()?;
    if three != 3 {
        bail!("window_attention: qkv must be [nw, n, 3, heads, hd], got {:?}", qkv.dims());
    }
    if bias.dims() != [heads, n, n] {
        bail!("window_attention: bias must be [{heads}, {n}, {n}], got {:?}", bias.dims());
    }
    if let Some(mask) = mask {
        let m = mask.dim(0)?;
        if mask.dims()[1..] != [n, n] || m == 0 || nw % m != 0 {
            bail!("window_attention: mask {:?} does not fit {nw} windows of {n} tokens", mask.dims());
        }
    }

    let fused = matches!(qkv.device(), Device::Cpu)
        && qkv.dtype() == DType::F32
        && ![Some(qkv), Some(bias), mask].into_iter().flatten().any(Tensor::track_op);
    if fused {
        let mask = match mask {
            Some(m) => m.contiguous()?,
            None => Tensor::zeros((1, n, n), DType::F32, qkv.device())?,
        };
        let out = qkv
            .contiguous()?
            .apply_op3_no_bwd(&bias.contiguous()?, &mask, &FusedWindowAttention { scale })?;
        // The kernel writes [nw, heads, n, hd]; bring the heads next to hd.
        return out.transpose(1, 2)?.reshape((nw, n, heads * hd));
    }
    unfused(qkv, bias, mask, scale)
}

/// The same computation with differentiable candle ops.
fn unfused(qkv: &Tensor, bias: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (nw, n, _, heads, hd) = qkv.dims5()?;
    let qkv = qkv.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * scale)?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;

    let mut logits = q.matmul(&k.t()?)?.broadcast_add(&bias.unsqueeze(0)?)?;
    if let Some(mask) = mask {
        let m = mask.dim(0)?;
        logits = logits
            .reshape((nw / m, m, heads, n, n))?
            .broadcast_add(&mask.unsqueeze(1)?.unsqueeze(0)?)?
            .reshape((nw, heads, n, n))?;
    }
    let weights = softmax_last_dim(&logits)?;
    weights.matmul(&v)?.transpose(1, 2)?.reshape((nw, n, heads * hd))
}

struct FusedWindowAttention {
    scale: f64,
}

impl CustomOp3 for FusedWindowAttention {
    fn name(&self) -> &'static str {
        "fused-window-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(qkv), CpuStorage::F32(bias), CpuStorage::F32(mask)) = (s1, s2, s3) else {
            bail!("fused-window-attention: expected f32 operands");
        };
        let &[nw, n, _, heads, hd] = l1.dims() else {
            bail!("fused-window-attention: qkv must be 5-D");
        };
        let dims = Dims { n, heads, hd, masks: l3.dims()[0] };
        let out = attend(contiguous(qkv, l1)?, contiguous(bias, l2)?, contiguous(mask, l3)?, dims, self.scale as f32);
        Ok((CpuStorage::F32(out), Shape::from((nw, heads, n, hd))))
    }
}

fn contiguous<'a>(data: &'a [f32], layout: &Layout) -> Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("fused-window-attention: operand is not contiguous"),
    }
}

#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    heads: usize,
    hd: usize,
    masks: usize,
}

/// Output `[nw, heads, n, hd]`; one (window, head) pair per parallel task.
fn attend(qkv: &[f32], bias: &[f32], mask: &[f32], d: Dims, scale: f32) -> Vec<f32> {
    let Dims { n, heads, hd, masks } = d;
    let nw = qkv.len() / (n * 3 * heads * hd);
    let mut out = vec![0f32; nw * heads * n * hd];
    let token_stride = 3 * heads * hd;

    out.par_chunks_mut(n * hd).enumerate().for_each_init(
        || vec![0f32; n * n],
        |scores, (task, dst)| {
            let (w, h) = (task / heads, task % heads);
            let window = &qkv[w * n * token_stride..(w + 1) * n * token_stride];
            let q = window[h * hd..].as_ptr();
            let k = window[(heads + h) * hd..].as_ptr();
            let v = window[(2 * heads + h) * hd..].as_ptr();

            // scores = scale · Q Kᵀ: Q rows and K rows are `token_stride` apart.
            // SAFETY: every pointer/stride pair stays inside its slice: rows
            // 0..n at `token_stride` from an offset below `token_stride`, columns 0..hd.
            unsafe {
                gemm::gemm(
                    n, n, hd,
                    scores.as_mut_ptr(), 1, n as isize, false,
                    q, 1, token_stride as isize,
                    k, token_stride as isize, 1,
                    0.0, scale,
                    false, false, false, gemm::Parallelism::None,
                );
            }

            let bias = &bias[h * n * n..(h + 1) * n * n];
            let mask = &mask[(w % masks) * n * n..(w % masks + 1) * n * n];
            for ((row, b), m) in scores.chunks_mut(n).zip(bias.chunks(n)).zip(mask.chunks(n)) {
                softmax_row(row, b, m);
            }

            // dst = P V, with V rows `token_stride` apart.
            // SAFETY: as above; dst is this task's own [n, hd] block.
            unsafe {
                gemm::gemm(
                    n, hd, n,
                    dst.as_mut_ptr(), 1, hd as isize, false,
                    scores.as_ptr(), 1, n as isize,
                    v, 1, token_stride as isize,
                    0.0, 1.0,
                    false, false, false, gemm::Parallelism::None,
                );
            }
        },
    );
    out
}

/// `row ← softmax(row + bias + mask)` in place.
fn softmax_row(row: &mut [f32], bias: &[f32], mask: &[f32]) {
    let mut max = f32::NEG_INFINITY;
    for ((s, &b), &m) in row.iter_mut().zip(bias).zip(mask) {
        *s += b + m;
        max = max.max(*s);
    }
    let mut sum = 0f32;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    for s in row.iter_mut() {
        *s *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn fused_matches_tensor_ops_with_and_without_mask() {
        let dev = Device::Cpu;
        let (nw, n, heads, hd) = (6, 20, 3, 4);
        let qkv = Tensor::randn(0f32, 1.0, (nw, n, 3, heads, hd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (heads, n, n), &dev).unwrap();
        let mask = Tensor::randn(0f32, 1.0, (3, n, n), &dev).unwrap().ge(0.0).unwrap().to_dtype(DType::F32).unwrap();
        let mask = (mask * -100.0).unwrap();
        for m in [None, Some(&mask)] {
            let fused = window_attention(&qkv, &bias, m, 0.5).unwrap();
            let reference = unfused(&qkv, &bias, m, 0.5).unwrap();
            assert_eq!(fused.dims(), &[nw, n, heads * hd]);
            assert!(max_abs_diff(&fused, &reference) < 1e-5);
        }
    }
}
