//! Time Dice and HD95 for every label of a full-size atlas against a shifted copy,
//! the work `prism-seg eval` does for one case once the files are loaded.
//!
//!     cargo run --release --example bench_seg_metrics -- [LABEL_MAP] [RUNS]
//!
//! LABEL_MAP defaults to the AAL atlas on Colin27 (181x217x181, 1 mm, 116 labels) at
//! `../shared/data/labels/aal_colin27.nii.gz` beside the repository. The prediction
//! is the same map shifted by (1, −2, 1) voxels with zero fill, as in
//! `bench/monai_seg_metrics.py`. Prints one JSON line in the same shape as that
//! script, so both can be recorded side by side in docs/BENCHMARKS.md. Equal mean
//! Dice and HD95 in both lines show that both computed the same numbers.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array3;
use prism::cli::seg_eval::load_label_map;
use prism::seg::metrics::{evaluate_labels, labels_present};

const SHIFT: [isize; 3] = [1, -2, 1];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let default_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/labels/aal_colin27.nii.gz");
    let path = args.get(1).map(PathBuf::from).unwrap_or(default_path);
    let runs: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let (reference, affine) = load_label_map(&path)?;
    let pred = shifted(&reference, SHIFT);
    let spacing = affine.spacing();
    let labels: Vec<u32> = labels_present(pred.view(), reference.view())
        .into_iter()
        .filter(|&l| l != 0)
        .collect();

    let mut times = Vec::with_capacity(runs);
    let mut metrics = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        metrics = evaluate_labels(pred.view(), reference.view(), spacing, &labels)?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));

    let mean_dice = metrics.iter().map(|m| m.dice).sum::<f64>() / metrics.len() as f64;
    let hd95: Vec<f64> = metrics.iter().filter_map(|m| m.hd95_mm).collect();
    let mean_hd95 = hd95.iter().sum::<f64>() / hd95.len() as f64;
    println!(
        "{{\"tool\": \"prism-rs\", \"shape\": {:?}, \"labels\": {}, \"median_s\": {:.3}, \"runs\": {runs}, \
         \"threads\": {}, \"mean_dice\": {mean_dice:.6}, \"mean_hd95_mm\": {mean_hd95:.6}, \"peak_rss_mib\": {:.0}}}",
        reference.shape(),
        labels.len(),
        times[runs / 2],
        rayon::current_num_threads(),
        peak_rss_mib()
    );
    Ok(())
}

/// Moves the content by `offset` voxels, filling with 0 (no wrap-around).
fn shifted(labels: &Array3<u32>, offset: [isize; 3]) -> Array3<u32> {
    let shape = labels.dim();
    let mut out = Array3::zeros(shape);
    for ((i, j, k), &value) in labels.indexed_iter() {
        let target = [
            i as isize + offset[0],
            j as isize + offset[1],
            k as isize + offset[2],
        ];
        let inside = target[0] >= 0
            && target[1] >= 0
            && target[2] >= 0
            && (target[0] as usize) < shape.0
            && (target[1] as usize) < shape.1
            && (target[2] as usize) < shape.2;
        if inside {
            out[[target[0] as usize, target[1] as usize, target[2] as usize]] = value;
        }
    }
    out
}

/// Peak resident set size of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
