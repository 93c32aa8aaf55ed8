//! Time building one training batch of 2 × 96³ patches from a real case, for three
//! settings: plain crops, the default augmentation, and every augmentation on every
//! patch (foreground forcing, rotation and scaling, flips, intensity jitter).
//!
//!     cargo run --release --example bench_seg_augment -- [RUNS]
//!
//! The case is the ICBM152 2009a T1 template (197×233×189, 1 mm) with the Harvard-Oxford
//! cortical atlas resampled onto its grid (49 classes), both from tests/data. Prints one
//! JSON line per setting with the best and median wall time in milliseconds and, on
//! Linux, the process CPU time per batch (all threads), which other load on the machine
//! inflates less than the wall time.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use prism::io::load_volume;
use prism::preprocess::{resample_to_grid, zscore_nonzero, Interp};
use prism::seg::augment::{sample_batch, AugmentOptions};
use prism::seg::dataset::Case;
use rand::rngs::StdRng;
use rand::SeedableRng;

const PATCH: [usize; 3] = [96, 96, 96];
const BATCH: usize = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");

    let (mut t1, _) = load_volume(&data.join("mni152_2009a_t1.nii.gz"), None)?;
    let (atlas, _) = load_volume(&data.join("harvardoxford_cort_maxprob_1mm.nii.gz"), None)?;
    let label = resample_to_grid(&atlas, &t1.affine, t1.shape(), Interp::Nearest, 0.0)?;
    zscore_nonzero(&mut t1);
    let case = Case::new("mni152".into(), vec![t1], label, 49)?;
    let cases = [case];

    let every_patch = AugmentOptions {
        foreground_fraction: 1.0,
        flip_probability: 1.0,
        affine_probability: 1.0,
        ..AugmentOptions::new(PATCH)
    };
    let settings = [
        ("crop_only", AugmentOptions::crop_only(PATCH)),
        ("default", AugmentOptions::new(PATCH)),
        ("all_on_every_patch", every_patch),
    ];

    let mut rng = StdRng::seed_from_u64(0);
    for (name, options) in settings {
        // One untimed batch first, so page faults of the first allocation are not counted.
        sample_batch(&cases, BATCH, &options, &mut rng, &Device::Cpu)?;
        let mut times = Vec::with_capacity(runs);
        let cpu_before = process_cpu_ms();
        for _ in 0..runs {
            let start = Instant::now();
            let batch = sample_batch(&cases, BATCH, &options, &mut rng, &Device::Cpu)?;
            std::hint::black_box(&batch);
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let cpu_per_batch = match (cpu_before, process_cpu_ms()) {
            (Some(before), Some(after)) => format!("{:.0}", (after - before) / runs as f64),
            _ => "null".into(),
        };
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"setting\": \"{name}\", \"batch\": {BATCH}, \"patch\": {PATCH:?}, \"runs\": {runs}, \
             \"threads\": {}, \"best_ms\": {:.1}, \"median_ms\": {:.1}, \"cpu_ms_per_batch\": {cpu_per_batch}}}",
            rayon::current_num_threads(),
            times[0],
            times[times.len() / 2]
        );
    }
    Ok(())
}

/// Reads the user plus system CPU time of this process in ms from /proc/self/stat (fields
/// 14 and 15, in the 100 Hz ticks that Linux reports there). Returns `None` elsewhere.
fn process_cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) * 10.0)
}
