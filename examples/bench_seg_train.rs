//! Time the parts of one SwinUNETR training step (forward, DiceCE loss, backward, AdamW) on
//! random inputs and labels, with trainable weights of the given feature size.
//!
//!     cargo run --release --example bench_seg_train -- [SIZE] [FEATURE_SIZE] [BATCH] [RUNS]

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use prism::model::{SwinConfig, SwinUnetrConfig};
use prism::seg::loss::dice_ce_loss;
use prism::seg::train::{build, Init};
use prism::train::{named_vars, AdamW, AdamWConfig, Param};
use rand::SeedableRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    prism::alloc::retain_freed_memory();
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(std::env::args().nth(i).map(|s| s.parse()).transpose()?.unwrap_or(default))
    };
    let (size, feature, batch, runs) = (arg(1, 64)?, arg(2, 12)?, arg(3, 2)?, arg(4, 3)?);
    let device = Device::Cpu;
    let mut encoder = SwinConfig::prism_base();
    encoder.embed_dim = feature;
    let config = SwinUnetrConfig { encoder, out_channels: 4 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let trainable = build(&config, Init::Scratch, &device, &mut rng)?;
    let params = named_vars(&trainable.varmap).into_iter().map(|(n, v)| Param::new(n, v)).collect();
    let mut optimizer = AdamW::new(params, AdamWConfig::default())?;

    let x = Tensor::randn(0f32, 1.0, (batch, 1, size, size, size), &device)?;
    let y = (Tensor::rand(0f32, 4.0, (batch, size, size, size), &device)?.floor()?).to_dtype(DType::U32)?;
    for run in 0..runs {
        let t0 = Instant::now();
        let logits = trainable.net.forward(&x)?;
        let t1 = Instant::now();
        let loss = dice_ce_loss(&logits, &y)?;
        let t2 = Instant::now();
        let grads = loss.backward()?;
        let t3 = Instant::now();
        optimizer.step(&grads)?;
        let t4 = Instant::now();
        println!(
            "{{\"run\": {run}, \"size\": {size}, \"feature_size\": {feature}, \"batch\": {batch}, \"forward_s\": {:.3}, \"loss_s\": {:.3}, \"backward_s\": {:.3}, \"adamw_s\": {:.3}}}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64()
        );
    }
    println!("{{\"peak_rss_mib\": {:.0}}}", support::peak_rss_mib());
    Ok(())
}
