//! Times `prism::ops::upsample_trilinear_x2` on the generator's shapes of PRISM pretraining.
//!
//! Usage: `cargo run --release --example bench_upsample`. Prints the fastest of 10 calls in
//! milliseconds for the forward pass, the backward pass and, as the yardstick, one memory pass
//! over the output (`affine(1, 0)`, which reads and writes it). The backward pass is
//! `backward()` of the output: it fills a gradient of ones the size of the output, then runs the
//! gradient kernel.
//! Rayon's thread count follows RAYON_NUM_THREADS.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use prism::ops::upsample_trilinear_x2;

/// Input shapes [B, C, D, H, W]: the training size and the published size.
const SHAPES: [[usize; 5]; 2] = [[2, 12, 32, 32, 32], [2, 48, 48, 48, 48]];

const CALLS: usize = 10;

fn main() -> Result<()> {
    prism::alloc::retain_freed_memory();
    for dims in SHAPES {
        let x = Tensor::randn(0f32, 1.0, &dims[..], &Device::Cpu)?;
        let y = upsample_trilinear_x2(&x)?;
        let forward = fastest_ms(|| upsample_trilinear_x2(&x).map(drop))?;

        let x_var = Var::from_tensor(&x)?;
        let y_var = upsample_trilinear_x2(&x_var)?;
        let backward = fastest_ms(|| y_var.backward().map(drop))?;

        let memory_pass = fastest_ms(|| y.affine(1.0, 0.0).map(drop))?;
        println!(
            "{dims:?} -> {:?}: forward {forward:.1} ms, backward {backward:.1} ms, \
             memory pass over the output {memory_pass:.1} ms",
            y.dims()
        );
    }
    Ok(())
}

fn fastest_ms(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..CALLS {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}
