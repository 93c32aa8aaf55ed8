//! Render one anatomy under several random contrasts and write each as NIfTI, to look at
//! the synthetic generator's output.
//!
//!     cargo run --release --example synth_preview -- OUT_DIR SEEDS MAP [MAP ...]
//!
//! One MAP is read as a label map (values rounded to integers, 0 = background). Several
//! MAPs are read as tissue probability maps on one grid. A map whose maximum exceeds 1 is
//! divided by its maximum, because uint8 maps store probabilities as 0 to 255. Writes `OUT_DIR/synth_seed<N>.nii.gz`
//! for N in 0..SEEDS with the first map's affine, and prints the render time of each seed
//! (wall time with rayon's default thread count; set RAYON_NUM_THREADS=1 for one core).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;
use prism::io::{load_volume, write_volume, WriteOptions};
use prism::pretrain::synth::{try_render, Anatomy, SynthConfig};
use prism::Volume;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out_dir, seeds, maps @ ..] = args.as_slice() else {
        return Err("usage: synth_preview OUT_DIR SEEDS MAP [MAP ...]".into());
    };
    if maps.is_empty() {
        return Err("usage: synth_preview OUT_DIR SEEDS MAP [MAP ...]".into());
    }
    let seeds: u64 = seeds
        .parse()
        .map_err(|_| format!("SEEDS {seeds:?} is not a count; give a whole number"))?;
    let out_dir = PathBuf::from(out_dir);
    std::fs::create_dir_all(&out_dir)?;

    let (anatomy, affine) = load_anatomy(maps)?;
    let config = SynthConfig::default();
    for seed in 0..seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Instant::now();
        let image = try_render(&anatomy, &config, &mut rng)?;
        let elapsed = start.elapsed();

        let path = out_dir.join(format!("synth_seed{seed}.nii.gz"));
        write_volume(&path, &Volume::new(image, affine), &WriteOptions::default())?;
        println!("seed {seed}: rendered in {:.1} ms, wrote {}", elapsed.as_secs_f64() * 1e3, path.display());
    }
    Ok(())
}

/// Reads one label map, or several tissue probability maps, with the first file's affine.
fn load_anatomy(paths: &[String]) -> Result<(Anatomy, prism::Affine), Box<dyn std::error::Error>> {
    let mut volumes = Vec::new();
    for path in paths {
        let (volume, _) = load_volume(Path::new(path), None)?;
        volumes.push(volume);
    }
    let affine = volumes[0].affine;

    let anatomy = if let [labels] = volumes.as_slice() {
        Anatomy::Labels(labels.data.mapv(|v| v.round().clamp(0.0, u16::MAX as f32) as u16))
    } else {
        Anatomy::Tissue(volumes.into_iter().map(|v| to_probabilities(v.data)).collect())
    };
    Ok((anatomy, affine))
}

fn to_probabilities(map: Array3<f32>) -> Array3<f32> {
    let max = map.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max);
    if max > 1.0 {
        map / max
    } else {
        map
    }
}
