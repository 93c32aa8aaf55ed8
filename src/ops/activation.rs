//! Activations with gradients that match torch.

use candle_core::{Result, Tensor};

use super::fused;

/// Leaky ReLU, `x` where x > 0 and `negative_slope · x` elsewhere. The gradient at exactly 0 is
/// `negative_slope`, as in torch.nn.functional.leaky_relu. Without gradient tracking, f32 and f64
/// CPU tensors take a single-pass kernel.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    if !x.track_op() && fused::available(x) {
        return fused::leaky_relu(x, negative_slope);
    }
    x.gt(0.0)?.where_cond(x, &(x * negative_slope)?)
}

/// GELU with the exact erf form, x·Φ(x), as torch.nn.functional.gelu's default. Candle 0.11.1
/// differentiates `Tensor::gelu_erf` itself (with 1/√(2π) rounded to 0.398942, a relative
/// gradient error below 1e-6). Without gradient tracking, f32 and f64 CPU tensors take a
/// single-pass kernel; its AVX-512 f32 form uses an erfc fit with fractional error below 1.2e-7.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && fused::available(x) {
        return fused::gelu_erf(x);
    }
    x.gelu_erf()
}
