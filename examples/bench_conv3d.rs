//! Times `prism::ops::conv3d` on the convolutions of the PRISM-B encoder (embed_dim 48, 96³ input).
//!
//! Usage: `cargo run --release --example bench_conv3d [-- [--backward] [NAME...]]`, where NAME
//! selects the shapes whose name contains it (`"stage 3"`). Prints the fastest of 10
//! calls in milliseconds and as GFLOP/s (2·O·C·kd·kh·kw·D'·H'·W' per forward call) for each
//! shape; `--backward` also times the gradients w.r.t. input and weight. Rayon's thread count
//! follows RAYON_NUM_THREADS. `bench_conv3d_torch.py` beside this file times torch on the same
//! shapes.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use prism::ops::conv3d;

/// One benchmark shape: input [1, C, S, S, S], weight [O, C, k, k, k].
struct Case {
    name: &'static str,
    channels: usize,
    out_channels: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

const CASES: [Case; 5] = [
    Case {
        name: "patch embed",
        channels: 1,
        out_channels: 48,
        size: 96,
        kernel: 2,
        stride: 2,
        padding: 0,
    },
    Case {
        name: "stage 1",
        channels: 48,
        out_channels: 48,
        size: 48,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
    Case {
        name: "stage 2",
        channels: 96,
        out_channels: 96,
        size: 24,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
    Case {
        name: "stage 3",
        channels: 192,
        out_channels: 192,
        size: 12,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
    Case {
        name: "stage 4",
        channels: 384,
        out_channels: 384,
        size: 6,
        kernel: 3,
        stride: 1,
        padding: 1,
    },
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let backward = args.iter().any(|arg| arg == "--backward");
    let only: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    println!("threads: {}", rayon::current_num_threads());

    for case in CASES
        .iter()
        .filter(|case| only.is_empty() || only.iter().any(|name| case.name.contains(name.as_str())))
    {
        let device = Device::Cpu;
        let s = case.size;
        let k = case.kernel;
        let x = Tensor::randn(0f32, 1., (1, case.channels, s, s, s), &device)?;
        let w = Tensor::randn(
            0f32,
            0.1,
            (case.out_channels, case.channels, k, k, k),
            &device,
        )?;
        let out = conv3d(&x, &w, None, case.stride, case.padding)?;
        let flops = 2.0 * (out.elem_count() * case.channels * k * k * k) as f64;

        let forward = time_per_call(|| conv3d(&x, &w, None, case.stride, case.padding).map(drop))?;
        println!(
            "{:12} forward  {:8.2} ms  {:7.1} GFLOP/s",
            case.name,
            forward * 1e3,
            flops / forward / 1e9
        );

        if backward {
            let (x, w) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
            let seconds = time_per_call(|| {
                let out = conv3d(
                    x.as_tensor(),
                    w.as_tensor(),
                    None,
                    case.stride,
                    case.padding,
                )?;
                out.sum_all()?.backward().map(drop)
            })?;
            // Forward plus two backward products of the same size.
            println!(
                "{:12} fwd+bwd  {:8.2} ms  {:7.1} GFLOP/s",
                case.name,
                seconds * 1e3,
                3.0 * flops / seconds / 1e9
            );
        }
    }
    Ok(())
}

/// Runs `f` once to warm up, then 10 times; returns the fastest call in seconds. The fastest
/// call is the most repeatable figure on a machine that other jobs share.
fn time_per_call(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}
