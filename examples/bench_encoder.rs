//! Time one forward pass of the published-size PRISM encoder (embed_dim 48) on a
//! cubic input with random weights, and report the peak resident memory.
//!
//!     cargo run --release --example bench_encoder -- [SIZE] [RUNS]
//!
//! Prints one JSON line, in the same shape as the MONAI peer script, so both can be
//! recorded side by side in docs/BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use prism::model::{SwinConfig, SwinEncoder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(96);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let device = Device::Cpu;

    // Random weights: a VarMap creates every tensor the encoder requests, each is
    // redrawn from N(0, 0.02²), and the encoder is rebuilt from detached copies, since
    // variables would make every operation record a backward graph.
    let cfg = SwinConfig::prism_base();
    let varmap = VarMap::new();
    SwinEncoder::load(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let mut weights = HashMap::new();
    for (name, var) in varmap.data().lock().map_err(|_| "poisoned lock")?.iter() {
        weights.insert(name.clone(), Tensor::randn(0f32, 0.02, var.shape(), &device)?);
    }
    let encoder = SwinEncoder::load(&cfg, VarBuilder::from_tensors(weights, DType::F32, &device))?;
    let x = Tensor::randn(0f32, 1.0, (1, 1, size, size, size), &device)?;

    encoder.forward(&x)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = encoder.forward(&x)?;
        out[4].sum_all()?.to_scalar::<f32>()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));

    println!(
        "{{\"tool\": \"prism-rs\", \"size\": {size}, \"embed_dim\": {}, \"median_s\": {:.3}, \"runs\": {runs}, \"threads\": {}, \"peak_rss_mib\": {:.0}}}",
        cfg.embed_dim,
        times[runs / 2],
        candle_core::utils::get_num_threads(),
        support::peak_rss_mib()
    );
    Ok(())
}
