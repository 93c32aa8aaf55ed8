//! Activations with gradients that match torch.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath::gelu_erf_inplace;

/// Leaky ReLU, `x` where x > 0 and `negative_slope · x` elsewhere. The gradient at exactly 0 is
/// `negative_slope`, as in torch.nn.functional.leaky_relu.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    x.gt(0.0)?.where_cond(x, &(x * negative_slope)?)
}

/// GELU with the exact erf form, x·Φ(x), as torch.nn.functional.gelu's default. Candle 0.11.1
/// differentiates `Tensor::gelu_erf` itself (with 1/√(2π) rounded to 0.398942, a relative
/// gradient error below 1e-6). Without a gradient to track, f32 CPU tensors take a
/// vectorized kernel (relative error below 4e-6 against the f64 definition).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    let fast = matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && !x.track_op();
    if fast {
        return x.contiguous()?.apply_op1_no_bwd(&FusedGelu);
    }
    x.gelu_erf()
}

struct FusedGelu;

impl CustomOp1 for FusedGelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            bail!("fused-gelu-erf: expected f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("fused-gelu-erf: input is not contiguous");
        };
        let mut out = data[start..end].to_vec();
        out.par_chunks_mut(1 << 14).for_each(gelu_erf_inplace);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}
