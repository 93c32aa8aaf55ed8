//! PyTorch's default initialization of fresh parameters, by tensor name, so a network started
//! from scratch here starts like the same network built in PyTorch.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::error::Result;

/// PyTorch's default initialization for a tensor named as in MONAI's modules: weights of
/// convolutions and linear layers uniform in ±1/√fan_in (kaiming_uniform with a = √5), their
/// biases likewise, layer-norm weights 1 and biases 0, and the Swin relative-position tables
/// N(0, 0.02²) as MONAI's `trunc_normal_(std=0.02)` (truncation at ±2 is beyond 100σ).
pub fn fresh_tensor(
    name: &str,
    dims: &[usize],
    weight_dims: &HashMap<String, Vec<usize>>,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if name.ends_with("relative_position_bias_table") {
        (0..n).map(|_| normal(rng) * 0.02).collect()
    } else if dims.len() >= 2 {
        let bound = 1.0 / (fan_in(dims) as f32).sqrt();
        (0..n).map(|_| rng.random_range(-bound..bound)).collect()
    } else if name.contains("norm") {
        vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; n]
    } else {
        // Biases of convolutions and linear layers: ±1/√fan_in of their weight.
        let weight = name.strip_suffix("bias").map(|stem| format!("{stem}weight"));
        let bound = match weight.and_then(|w| weight_dims.get(&w)) {
            Some(w) => 1.0 / (fan_in(w) as f32).sqrt(),
            None => 0.0,
        };
        (0..n).map(|_| if bound > 0.0 { rng.random_range(-bound..bound) } else { 0.0 }).collect()
    };
    Ok(Tensor::from_vec(values, dims, device)?)
}

/// PyTorch's fan-in of a weight: dim 1 times the kernel size. For a transposed convolution,
/// stored [in, out, k…], that is the output channels, as PyTorch computes it.
fn fan_in(dims: &[usize]) -> usize {
    dims.get(1).copied().unwrap_or(1) * dims[2.min(dims.len())..].iter().product::<usize>()
}

/// Draws one standard-normal value (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

