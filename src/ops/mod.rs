//! Differentiable tensor operations for 3-D networks that candle 0.11 lacks: 3-D convolution
//! (plain, transposed and StyleGAN2-modulated), trilinear ×2 up-sampling, zero padding, and
//! normalizations and activations written so that candle's autograd reaches through them.

mod activation;
mod attention;
mod conv3d;
mod conv_transpose;
mod element;
mod fused;
mod modconv;
mod norm;
mod pad;
mod upsample;

pub use activation::{gelu_erf, leaky_relu};
pub use attention::window_attention;
pub use conv3d::{conv3d, conv3d_portable, conv3d_with_config, Conv3dConfig};
pub use conv_transpose::conv_transpose3d_strided;
pub use modconv::modulated_conv3d;
pub use norm::{instance_norm3d, layer_norm, softmax_last_dim};
pub use pad::pad3d;
pub use upsample::{upsample_portable, upsample_trilinear_x2};
