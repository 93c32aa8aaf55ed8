//! Stand-in for the synthetic contrast generator, with the entry point the data pipeline
//! calls. It gives each label or tissue one random intensity and nothing else.
//!
//! TODO: replace this file with the full generator (bias field, blur, thick slices,
//! noise, gamma), which is written separately with the same signatures.

use ndarray::Array3;
use rand::Rng;

/// The anatomy a synthetic image is rendered from.
#[derive(Debug, Clone, PartialEq)]
pub enum Anatomy {
    /// Integer label map; label 0 is background.
    Labels(Array3<u16>),
    /// One probability map per tissue, all on one grid.
    Tissue(Vec<Array3<f32>>),
}

/// Settings of [`render`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SynthConfig {}

/// Minimum summed tissue probability of a voxel that is not background.
const TISSUE_FLOOR: f32 = 0.1;

/// Renders `anatomy` with a random contrast: one mean intensity in [0.05, 1) per label
/// or tissue. Background stays 0.
pub fn render(anatomy: &Anatomy, _config: &SynthConfig, rng: &mut impl Rng) -> Array3<f32> {
    match anatomy {
        Anatomy::Labels(labels) => {
            let max_label = labels.iter().copied().max().unwrap_or(0) as usize;
            let means: Vec<f32> = (0..=max_label)
                .map(|_| rng.random_range(0.05..1.0))
                .collect();
            labels.mapv(|label| {
                if label == 0 {
                    0.0
                } else {
                    means[label as usize]
                }
            })
        }
        Anatomy::Tissue(maps) => {
            let Some(first) = maps.first() else {
                return Array3::zeros((0, 0, 0));
            };
            let means: Vec<f32> = maps.iter().map(|_| rng.random_range(0.05..1.0)).collect();
            let mut image = Array3::<f32>::zeros(first.raw_dim());
            let mut total = Array3::<f32>::zeros(first.raw_dim());
            for (map, mean) in maps.iter().zip(&means) {
                image.zip_mut_with(map, |value, p| *value += p * mean);
                total.zip_mut_with(map, |sum, p| *sum += p);
            }
            image.zip_mut_with(&total, |value, sum| {
                if *sum < TISSUE_FLOOR {
                    *value = 0.0;
                }
            });
            image
        }
    }
}
