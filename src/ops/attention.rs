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
//! - a differentiable path, used whenever a gradient is needed. One custom op
//!   ([`AttentionWeights`]) computes scores, bias, mask and softmax, and its backward pass works
//!   from the weights alone, so the graph keeps one `n×n` block per window and head instead of
//!   one per intermediate step. Off the CPU, plain candle ops replace the custom op.

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

/// Computes the same with differentiable operations.
fn unfused(qkv: &Tensor, bias: &Tensor, class: &Tensor, scale: f64) -> Result<Tensor> {
    let (nw, n, _, heads, hd) = qkv.dims5()?;
    let qkv = qkv.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * scale)?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;

    let on_cpu = matches!(q.device(), Device::Cpu) && matches!(q.dtype(), DType::F32 | DType::F64);
    let weights = if on_cpu {
        let op = AttentionWeights { class: class.to_vec1::<u32>()? };
        q.apply_op3(&k, &bias.contiguous()?, op)?
    } else {
        softmax_last_dim(&(q.matmul(&k.t()?)? + bias.index_select(class, 0)?)?)?
    };
    weights.matmul(&v)?.transpose(1, 2)?.reshape((nw, n, heads * hd))
}

/// `softmax(Q Kᵀ + bias[class(w)])` over the last axis, for Q and K `[nw, heads, n, hd]` (Q already
/// scaled) and bias `[m, heads, n, n]`: the attention weights `[nw, heads, n, n]`, differentiable
/// w.r.t. all three. The scores never outlive the forward pass.
///
/// Backward from the weights P and the incoming gradient G: the score gradient is
/// `S' = P ⊙ (G − Σ_row G ⊙ P)`, then `dQ = S' K`, `dK = S'ᵀ Q`, and the gradient of bias class
/// `c` is the sum of `S'` over the windows in class `c`.
struct AttentionWeights {
    class: Vec<u32>,
}

impl AttentionWeights {
    fn run<T: Copy + Send + Sync + 'static>(
        &self,
        (q, k, bias): (&[T], &[T], &[T]),
        (heads, n, hd, classes): (usize, usize, usize, usize),
        (zero, one): (T, T),
        softmax: impl Fn(&[T], &[T], &mut [T]) + Sync,
    ) -> Result<Vec<T>> {
        if self.class.iter().any(|&c| c as usize >= classes) {
            bail!("attention-weights: a window class is not below {classes}");
        }
        let mut out = vec![zero; self.class.len() * heads * n * n];
        out.par_chunks_mut(n * n).enumerate().for_each_init(
            || vec![zero; n * n],
            |scores, (task, dst)| {
                let (w, h) = (task / heads, task % heads);
                let (qt, kt) = (&q[task * n * hd..(task + 1) * n * hd], &k[task * n * hd..(task + 1) * n * hd]);
                // SAFETY: Q and K are this task's [n, hd] blocks, scores is [n, n], all row-major.
                unsafe {
                    gemm::gemm(
                        n, n, hd,
                        scores.as_mut_ptr(), 1, n as isize, false,
                        qt.as_ptr(), 1, hd as isize,
                        kt.as_ptr(), hd as isize, 1,
                        zero, one,
                        false, false, false, gemm::Parallelism::None,
                    );
                }
                let table = (self.class[w] as usize * heads + h) * n * n;
                for ((src, b), d) in scores.chunks(n).zip(bias[table..table + n * n].chunks(n)).zip(dst.chunks_mut(n)) {
                    softmax(src, b, d);
                }
            },
        );
        Ok(out)
    }
}

impl CustomOp3 for AttentionWeights {
    fn name(&self) -> &'static str {
        "attention-weights"
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
        let &[nw, heads, n, hd] = l1.dims() else { bail!("attention-weights: Q must be 4-D") };
        let &[classes, bh, bn, bn2] = l3.dims() else { bail!("attention-weights: bias must be 4-D") };
        if l2.dims() != l1.dims() || (bh, bn, bn2) != (heads, n, n) || self.class.len() != nw {
            bail!("attention-weights: Q {:?}, K {:?} and bias {:?} do not match", l1.dims(), l2.dims(), l3.dims());
        }
        let dims = (heads, n, hd, classes);
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(b)) => {
                let operands = (contiguous(q, l1)?, contiguous(k, l2)?, contiguous(b, l3)?);
                CpuStorage::F32(self.run(operands, dims, (0.0, 1.0), |s, b, dst| {
                    let logits: Vec<f32> = s.iter().zip(b).map(|(x, y)| x + y).collect();
                    softmax_row_f32(&logits, dst);
                })?)
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(b)) => {
                let operands = (contiguous(q, l1)?, contiguous(k, l2)?, contiguous(b, l3)?);
                CpuStorage::F64(self.run(operands, dims, (0.0, 1.0), softmax_row_f64)?)
            }
            _ => bail!("attention-weights: expected f32 or f64 operands of one dtype"),
        };
        Ok((out, Shape::from((nw, heads, n, n))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        bias: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let row_dot = (grad * probs)?.sum_keepdim(3)?;
        let grad_scores = (probs * grad.broadcast_sub(&row_dot)?)?;
        let grad_q = grad_scores.matmul(k)?;
        let grad_k = grad_scores.t()?.matmul(q)?;
        let class = Tensor::new(self.class.as_slice(), probs.device())?;
        let grad_bias = bias.zeros_like()?.index_add(&class, &grad_scores, 0)?;
        Ok((Some(grad_q), Some(grad_k), Some(grad_bias)))
    }
}

/// Softmax of `scores + bias` into `dst`, in f64 (the gradient-check dtype).
fn softmax_row_f64(scores: &[f64], bias: &[f64], dst: &mut [f64]) {
    let max = scores.iter().zip(bias).map(|(s, b)| s + b).fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for ((d, s), b) in dst.iter_mut().zip(scores).zip(bias) {
        *d = (s + b - max).exp();
        total += *d;
    }
    dst.iter_mut().for_each(|d| *d /= total);
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

    /// Computes the attention with the plain candle ops the custom op replaces on the CPU.
    fn reference(qkv: &Tensor, bias: &Tensor, class: &Tensor, scale: f64) -> Tensor {
        let (nw, n, _, heads, hd) = qkv.dims5().unwrap();
        let qkv = qkv.permute((2, 0, 3, 1, 4)).unwrap();
        let q = (qkv.get(0).unwrap().contiguous().unwrap() * scale).unwrap();
        let k = qkv.get(1).unwrap().contiguous().unwrap();
        let v = qkv.get(2).unwrap().contiguous().unwrap();
        let logits = (q.matmul(&k.t().unwrap()).unwrap() + bias.index_select(class, 0).unwrap()).unwrap();
        let weights = softmax_last_dim(&logits).unwrap();
        weights.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((nw, n, heads * hd)).unwrap()
    }

    #[test]
    fn attention_weights_gradients_match_candle_ops() {
        let dev = Device::Cpu;
        let (nw, n, heads, hd, m) = (5, 7, 2, 3, 3);
        let qkv = candle_core::Var::randn(0f64, 1.0, (nw, n, 3, heads, hd), &dev).unwrap();
        let bias = candle_core::Var::randn(0f64, 1.0, (m, heads, n, n), &dev).unwrap();
        let class = Tensor::new(&[2u32, 0, 2, 1, 0], &dev).unwrap();
        let target = Tensor::randn(0f64, 1.0, (nw, n, heads * hd), &dev).unwrap();

        let loss = |out: Tensor| (out * &target).unwrap().sum_all().unwrap();
        let ours = loss(unfused(&qkv, &bias, &class, 0.4).unwrap());
        let plain = loss(reference(&qkv, &bias, &class, 0.4));
        let (a, b): (f64, f64) = (ours.to_scalar().unwrap(), plain.to_scalar().unwrap());
        assert!((a - b).abs() < 1e-12, "forward {a} vs {b}");

        let (g1, g2) = (ours.backward().unwrap(), plain.backward().unwrap());
        for var in [&qkv, &bias] {
            let diff = g1.get(var).unwrap().sub(g2.get(var).unwrap()).unwrap();
            let worst: f64 = diff.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            assert!(worst < 1e-12, "gradient differs by {worst}");
        }
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
