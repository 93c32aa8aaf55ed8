//! StyleGAN2's modulated 3-D convolution, the `ModConv3d` layer of PRISM's generator.
//!
//! Each sample `b` gets its own weight: the shared weight with input channel `c` scaled by
//! `style[b, c]`, then, with demodulation, each output channel rescaled to unit L2 norm
//! (`rsqrt(Σ w² + 1e-8)` over input channels and kernel taps). Sample `b` is then convolved with
//! its own weight, a grouped convolution written as one [`conv3d`] call per sample so that
//! candle differentiates it w.r.t. the input, the weight and the style.

use candle_core::{bail, Result, Tensor};

use super::conv3d;

/// Added to the sum of squared weights before the inverse square root, so that an output channel
/// whose modulated weights are all zero stays zero instead of becoming NaN.
const DEMODULATION_EPS: f64 = 1e-8;

/// Convolves `x` [B, Cin, D, H, W] with `weight` [Cout, Cin, k, k, k] (stride 1, zero `padding`,
/// no bias), modulated per sample by `style` [B, Cin] and demodulated if `demodulate`.
/// Without a style it is a plain [`conv3d`] and `demodulate` is ignored.
pub fn modulated_conv3d(
    x: &Tensor,
    weight: &Tensor,
    style: Option<&Tensor>,
    padding: usize,
    demodulate: bool,
) -> Result<Tensor> {
    let Some(style) = style else {
        return conv3d(x, weight, None, 1, padding);
    };
    let (batch, in_channels, ..) = x.dims5()?;
    let (_, weight_in, ..) = weight.dims5()?;
    if weight_in != in_channels {
        bail!(
            "modulated_conv3d: input has {in_channels} channels but weight is {:?}, expected [Cout, {in_channels}, k, k, k]",
            weight.dims()
        )
    }
    if style.dims() != [batch, in_channels] {
        bail!(
            "modulated_conv3d: style has shape {:?}, expected [{batch}, {in_channels}]",
            style.dims()
        )
    }

    let mut outputs = Vec::with_capacity(batch);
    for b in 0..batch {
        let sample_weight = modulate(weight, &style.get(b)?, demodulate)?;
        outputs.push(conv3d(
            &x.narrow(0, b, 1)?,
            &sample_weight,
            None,
            1,
            padding,
        )?);
    }
    Tensor::cat(&outputs, 0)
}

/// Scales input channel `c` of `weight` [Cout, Cin, k, k, k] by `style[c]` and, if `demodulate`,
/// each output channel to unit L2 norm.
fn modulate(weight: &Tensor, style: &Tensor, demodulate: bool) -> Result<Tensor> {
    let in_channels = style.dim(0)?;
    let modulated = weight.broadcast_mul(&style.reshape((1, in_channels, 1, 1, 1))?)?;
    if !demodulate {
        return Ok(modulated);
    }
    let sum_of_squares = modulated.sqr()?.sum_keepdim((1, 2, 3, 4))?;
    let inv_norm = (sum_of_squares + DEMODULATION_EPS)?.sqrt()?.recip()?;
    modulated.broadcast_mul(&inv_norm)
}
