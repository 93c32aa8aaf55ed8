//! Window attention, `softmax(scale·QKᵀ + bias[class(w)])·V`, for every window `w` and head.
//!
//! Shifted-window attention adds a mask that differs between windows, but only a few
//! distinct masks exist (8 at most in 3-D), so the caller passes one combined
//! bias-plus-mask table per window class and each window's class.
//!
//! Two paths compute the same thing:
//! - a fused CPU kernel for inference. Per (window, head) it multiplies Q and Kᵀ into
//!   an `n×n` score block that stays in cache, adds bias and mask, takes the softmax
//!   and multiplies by V. So the `windows × heads × n × n` logits never exist in
//!   memory at once: at PRISM's first stage on a 96³ input they would be 484 MB per
//!   pass, read and written five times by separate ops.
//! - candle tensor ops, used whenever a gradient is needed or the tensors are not on
//!   the CPU.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused::softmax_row_f32;
use super::norm::softmax_last_dim;

/// Attention over windows.
///
/// - `qkv`: `[nw, n, 3, heads, hd]`, the qkv projection of each window's tokens;
/// - `bias`: `[m, heads, n, n]`, logits added per window class (position bias plus
///   the class's shift mask);
/// - `class`: `[nw]` u32, the class of each window, each below `m`.
///
/// Returns `[nw, n, heads·hd]`, heads concatenated as in the input channels.
pub fn window_attention(qkv: &Tensor, bias: &Tensor, class: &Tensor, scale: f64) -> Result<Tensor> {
    let (nw, n, three, heads, hd) = qkv.dims5()?;
    if three != 3 {
        bail!("window_attention: qkv must be [nw, n, 3, heads, hd], got {:?}", qkv.dims());
    }
    let (m, bh, bn, bn2) = bias.dims4()?;
    if (bh, bn, bn2) != (heads, n, n) || m == 0 {
        bail!("window_attention: bias must be [m, {heads}, {n}, {n}], got {:?}", bias.dims());
    }
    if class.dims() != [nw] || class.dtype() != DType::U32 {
        bail!("window_attention: class must be u32 [{nw}], got {:?} {:?}", class.dtype(), class.dims());
    }

    let fused = matches!(qkv.device(), Device::Cpu)
        && qkv.dtype() == DType::F32
        && !qkv.track_op()
        && !bias.track_op();
    if fused {
        let out = qkv
            .contiguous()?
            .apply_op3_no_bwd(&bias.contiguous()?, &class.contiguous()?, &FusedWindowAttention { scale })?;
        // The kernel writes [nw, heads, n, hd]; bring the heads next to hd.
        return out.transpose(1, 2)?.reshape((nw, n, heads * hd));
    }
    unfused(qkv, bias, class, scale)
}

/// Computes the same with differentiable candle ops.
fn unfused(qkv: &Tensor, bias: &Tensor, class: &Tensor, scale: f64) -> Result<Tensor> {
    let (nw, n, _, heads, hd) = qkv.dims5()?;
    let qkv = qkv.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * scale)?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;

    let logits = (q.matmul(&k.t()?)? + bias.index_select(class, 0)?)?;
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
        let (CpuStorage::F32(qkv), CpuStorage::F32(bias), CpuStorage::U32(class)) = (s1, s2, s3) else {
            bail!("fused-window-attention: expected f32 qkv and bias and u32 classes");
        };
        let &[nw, n, _, heads, hd] = l1.dims() else {
            bail!("fused-window-attention: qkv must be 5-D");
        };
        let class = contiguous(class, l3)?;
        let classes = l2.dims()[0];
        if class.iter().any(|&c| c as usize >= classes) {
            bail!("fused-window-attention: a window class is not below {classes}");
        }
        let dims = Dims { n, heads, hd };
        let out = attend(contiguous(qkv, l1)?, contiguous(bias, l2)?, class, dims, self.scale as f32);
        Ok((CpuStorage::F32(out), Shape::from((nw, heads, n, hd))))
    }
}

fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
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
}

/// Output `[nw, heads, n, hd]`; one (window, head) pair per parallel task.
fn attend(qkv: &[f32], bias: &[f32], class: &[u32], d: Dims, scale: f32) -> Vec<f32> {
    let Dims { n, heads, hd } = d;
    let nw = qkv.len() / (n * 3 * heads * hd);
    let mut out = vec![0f32; nw * heads * n * hd];
    let token_stride = 3 * heads * hd;

    out.par_chunks_mut(n * hd).enumerate().for_each_init(
        || (vec![0f32; n * n], vec![0f32; n * n]),
        |(scores, probs), (task, dst)| {
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

            let table = (class[w] as usize * heads + h) * n * n;
            for (s, b) in scores.iter_mut().zip(&bias[table..table + n * n]) {
                *s += b;
            }
            for (src, dst) in scores.chunks(n).zip(probs.chunks_mut(n)) {
                softmax_row_f32(src, dst);
            }

            // dst = P V, with V rows `token_stride` apart.
            // SAFETY: as above; dst is this task's own [n, hd] block.
            unsafe {
                gemm::gemm(
                    n, hd, n,
                    dst.as_mut_ptr(), 1, hd as isize, false,
                    probs.as_ptr(), 1, n as isize,
                    v, 1, token_stride as isize,
                    0.0, 1.0,
                    false, false, false, gemm::Parallelism::None,
                );
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    #[test]
    fn fused_matches_tensor_ops_for_every_class() {
        let dev = Device::Cpu;
        let (nw, n, heads, hd, m) = (6, 20, 3, 4, 3);
        let qkv = Tensor::randn(0f32, 1.0, (nw, n, 3, heads, hd), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, (m, heads, n, n), &dev).unwrap();
        let class = Tensor::new(&[0u32, 2, 1, 1, 0, 2], &dev).unwrap();
        let fused = window_attention(&qkv, &bias, &class, 0.5).unwrap();
        let reference = unfused(&qkv, &bias, &class, 0.5).unwrap();
        assert_eq!(fused.dims(), &[nw, n, heads * hd]);
        assert!(max_abs_diff(&fused, &reference) < 1e-5);
    }

    #[test]
    fn class_out_of_range_is_an_error() {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 5, 3, 1, 2), &dev).unwrap();
        let bias = Tensor::zeros((1, 1, 5, 5), DType::F32, &dev).unwrap();
        let class = Tensor::new(&[0u32, 1], &dev).unwrap();
        assert!(window_attention(&qkv, &bias, &class, 1.0).is_err());
    }
}
