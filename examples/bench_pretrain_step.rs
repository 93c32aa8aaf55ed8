//! Times one pretraining iteration (steps A and B, and A, B and C) of `prism-pretrain` on two
//! smooth crops; the peer is bench/torch_pretrain_step.py on the same network size.
//!
//! ```text
//! bench_pretrain_step [FEATURE_SIZE] [ROI] [BATCH] [ITERATIONS]
//! ```
//! Prints one JSON line: median seconds per iteration with and without step C, and the peak
//! resident memory.

mod support;

use std::time::Instant;

use candle_core::{Device, Tensor};
use prism::model::prism_pretrain::PretrainConfig;
use prism::model::SwinConfig;
use prism::pretrain::objective::{ObjectiveConfig, StepInputs};
use prism::pretrain::train::{build, train_step, training_state, OptimizerSettings};
use rand::SeedableRng;

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn inputs(batch: usize, roi: usize) -> StepInputs {
    let n = roi * roi * roi;
    let clean: Vec<f32> = (0..batch * n)
        .map(|i| {
            let (b, v) = (i / n, i % n);
            let (x, y, z) = (v / (roi * roi), (v / roi) % roi, v % roi);
            ((x as f32 * 0.2).sin() + (y as f32 * 0.15).cos() + z as f32 / roi as f32) * (b as f32 + 1.0) * 0.5
        })
        .collect();
    let clean = Tensor::from_vec(clean, (batch, 1, roi, roi, roi), &Device::Cpu).unwrap();
    StepInputs {
        corrupted: clean.affine(0.9, 0.05).unwrap(),
        clean,
        sequence: Tensor::zeros((batch, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        sequence_mask: Tensor::zeros((batch, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
        body_part: Tensor::zeros(batch, candle_core::DType::U32, &Device::Cpu).unwrap(),
    }
}

fn main() {
    prism::alloc::retain_freed_memory();
    let (feature, roi, batch, iterations) = (arg(1, 12), arg(2, 64), arg(3, 2), arg(4, 3));
    let config = PretrainConfig::around(SwinConfig { embed_dim: feature, ..SwinConfig::prism_base() });
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let trainable = build(&config, None, &Device::Cpu, &mut rng).unwrap();
    let settings = OptimizerSettings { lr: 5e-4, weight_decay: 0.1, warmup_steps: 0, max_steps: 1_000_000 };
    let mut state = training_state(&trainable, settings, 0).unwrap();
    let x = inputs(batch, roi);

    let mut timed = |generator_every: u64| -> f64 {
        let objective = ObjectiveConfig { generator_every, ..ObjectiveConfig::default() };
        let mut times = Vec::new();
        for _ in 0..iterations {
            // Step 1 onwards: step C runs when generator_every is 1 and never when it is huge.
            state.step += 1;
            state.apply_schedules();
            let start = Instant::now();
            train_step(&trainable.net, &mut state, &x, &objective).unwrap();
            times.push(start.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    timed(1); // warm-up
    let ab = timed(u64::MAX);
    let abc = timed(1);
    println!(
        "{}",
        serde_json::json!({
            "tool": "prism-pretrain",
            "feature_size": feature,
            "roi": roi,
            "batch": batch,
            "seconds_ab": ab,
            "seconds_abc": abc,
            "peak_rss_mib": support::peak_rss_mib(),
        })
    );
}
