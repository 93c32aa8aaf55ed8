//! Time one SwinUNETR forward pass on a cubic input and the share of each part, with random
//! weights at PRISM's published size (feature size 48) or another size.
//!
//!     cargo run --release --example bench_seg_forward -- [SIZE] [FEATURE_SIZE] [CLASSES] [RUNS]

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use prism::model::{SwinConfig, SwinUnetr, SwinUnetrConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let (size, feature, classes, runs) = (arg(1, 96)?, arg(2, 48)?, arg(3, 4)?, arg(4, 3)?);
    let device = Device::Cpu;

    let mut encoder = SwinConfig::prism_base();
    encoder.embed_dim = feature;
    let cfg = SwinUnetrConfig { encoder, out_channels: classes };
    // Random weights from detached copies: variables would record a backward graph.
    let varmap = VarMap::new();
    SwinUnetr::load(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let mut weights = HashMap::new();
    for (name, var) in varmap.data().lock().map_err(|_| "poisoned lock")?.iter() {
        weights.insert(name.clone(), Tensor::randn(0f32, 0.02, var.shape(), &device)?);
    }
    let net = SwinUnetr::load(&cfg, VarBuilder::from_tensors(weights, DType::F32, &device))?;
    let x = Tensor::randn(0f32, 1.0, (1, 1, size, size, size), &device)?;

    net.forward(&x)?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        net.forward(&x)?.sum_all()?.to_scalar::<f32>()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let start = Instant::now();
    net.encoder().forward(&x)?;
    let encoder_s = start.elapsed().as_secs_f64();
    println!(
        "{{\"tool\": \"prism-rs\", \"size\": {size}, \"feature_size\": {feature}, \"median_s\": {:.3}, \"encoder_s\": {encoder_s:.3}, \"threads\": {}}}",
        times[runs / 2],
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
