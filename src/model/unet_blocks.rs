//! The convolutional blocks MONAI's UNETR family shares (`monai.networks.blocks.dynunet_block`
//! and `unetr_block`), as MONAI 1.4.0 builds them with `norm_name="instance"`: convolutions
//! without bias, InstanceNorm without affine parameters (eps 1e-5), LeakyReLU with slope 0.01.
//!
//! Tensor names follow the state dict: a block loads `conv1.conv.weight`, `conv2.conv.weight`
//! and, when the channel count changes, `conv3.conv.weight`, below whatever prefix the caller
//! gives (`layers1c.0.layer`, `encoder1.layer`, `decoder5.conv_block`, ...).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::ops;

/// InstanceNorm3d's default epsilon.
const NORM_EPS: f64 = 1e-5;

/// Negative slope of MONAI's default LeakyReLU in `UnetResBlock`.
const LEAKY_SLOPE: f64 = 0.01;

/// MONAI `UnetResBlock` with kernel 3 and stride 1: conv → norm → LeakyReLU → conv → norm, plus
/// the input (through a 1×1×1 conv and norm when the channel count changes), then LeakyReLU.
#[derive(Debug, Clone)]
pub struct UnetResBlock {
    conv1: Tensor,
    conv2: Tensor,
    conv3: Option<Tensor>,
}

impl UnetResBlock {
    pub fn load(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        let conv3 = if in_channels != out_channels {
            Some(vb.get((out_channels, in_channels, 1, 1, 1), "conv3.conv.weight")?)
        } else {
            None
        };
        Ok(UnetResBlock {
            conv1: vb.get((out_channels, in_channels, 3, 3, 3), "conv1.conv.weight")?,
            conv2: vb.get((out_channels, out_channels, 3, 3, 3), "conv2.conv.weight")?,
            conv3,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::conv3d(x, &self.conv1, None, 1, 1)?;
        let y = ops::leaky_relu(&ops::instance_norm3d(&y, NORM_EPS)?, LEAKY_SLOPE)?;
        let y = ops::instance_norm3d(&ops::conv3d(&y, &self.conv2, None, 1, 1)?, NORM_EPS)?;
        let residual = match &self.conv3 {
            Some(w) => ops::instance_norm3d(&ops::conv3d(x, w, None, 1, 0)?, NORM_EPS)?,
            None => x.clone(),
        };
        ops::leaky_relu(&(y + residual)?, LEAKY_SLOPE)
    }
}

/// MONAI `UnetrUpBlock` with a residual block: a transposed convolution (kernel = stride = 2,
/// no bias) doubles the resolution and sets the channel count, the skip connection is
/// concatenated after it, and a [`UnetResBlock`] fuses the two.
#[derive(Debug, Clone)]
pub struct UnetrUpBlock {
    transp_conv: Tensor,
    conv_block: UnetResBlock,
}

impl UnetrUpBlock {
    pub fn load(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(UnetrUpBlock {
            transp_conv: vb.get((in_channels, out_channels, 2, 2, 2), "transp_conv.conv.weight")?,
            conv_block: UnetResBlock::load(2 * out_channels, out_channels, vb.pp("conv_block"))?,
        })
    }

    /// `x` [B, in, D, H, W] and `skip` [B, out, 2D, 2H, 2W] → [B, out, 2D, 2H, 2W].
    pub fn forward(&self, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let up = ops::conv_transpose3d_strided(x, &self.transp_conv, None)?;
        self.conv_block.forward(&Tensor::cat(&[&up, skip], 1)?)
    }
}
