//! Corruption of a batch for the inpainting pretext task, as `patch_rand_drop` and
//! `aug_rand` in SwinUNETR's self-supervised pretraining (MONAI research-contributions,
//! `SwinUNETR/Pretrain/utils/ops.py`), which PRISM uses.
//!
//! For each sample `i` of the batch in order:
//! 1. draw a target count `U[0, max_fraction) · voxels` and fill cuboids with Gaussian
//!    noise until the summed cuboid volumes reach it;
//! 2. draw a sample `j` of the batch. If `j != i`, do the same again with a new target,
//!    but copy each cuboid from sample `j` as it is at that moment. Sample `j` is
//!    already corrupted when `j < i` and still clean when `j > i`.
//!
//! Cuboid sides along an axis of `n` voxels are drawn from `[floor(min_side · n),
//! floor(max_side · n))` and the start from `[0, n - floor(min_side · n))`, and the
//! cuboid is clipped at the far edge, as numpy's `randint` bounds in the original.
//! Deviation: the original rescales the noise to [0, 1], but here it is rescaled to the
//! clean sample's [min, max], so that it spans the z-scored intensity range.

use ndarray::{s, Array3, Array4, ArrayViewMut3, Axis};
use rand::Rng;

use crate::error::{Error, Result};

/// Settings of [`corrupt_batch`]; the defaults are the original's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorruptConfig {
    /// Upper end (exclusive) of the covered fraction drawn per pass.
    pub max_fraction: f64,
    /// Smallest cuboid side as a fraction of the axis, and the border at the far edge
    /// where no cuboid starts (the original's `tolr`).
    pub min_side: f64,
    /// Upper end (exclusive) of the cuboid side as a fraction of the axis.
    pub max_side: f64,
}

impl Default for CorruptConfig {
    fn default() -> Self {
        CorruptConfig {
            max_fraction: 0.3,
            min_side: 0.05,
            max_side: 0.25,
        }
    }
}

impl CorruptConfig {
    /// Fails on fractions outside [0, 1] or `min_side > max_side`.
    pub fn validate(&self) -> Result<()> {
        let fractions = [self.max_fraction, self.min_side, self.max_side];
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || self.min_side > self.max_side {
            return Err(Error::invalid(format!(
                "corruption fractions {self:?} are invalid; give values in [0, 1] with min_side <= max_side"
            )));
        }
        Ok(())
    }
}

/// Content a cuboid was filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Noise,
    /// Copied from this sample of the batch.
    Sample(usize),
}

/// A filled box of voxels `start..end` per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cuboid {
    pub start: [usize; 3],
    pub end: [usize; 3],
    pub fill: Fill,
}

impl Cuboid {
    pub fn voxels(&self) -> usize {
        (0..3).map(|a| self.end[a] - self.start[a]).product()
    }
}

/// The corruption applied to one sample, in the order it was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleCorruption {
    /// Voxel count the noise pass had to reach.
    pub noise_target: f64,
    /// Sample the second pass copied from, when it ran.
    pub paste_from: Option<usize>,
    /// Voxel count the copy pass had to reach (0 when it did not run).
    pub paste_target: f64,
    pub cuboids: Vec<Cuboid>,
}

/// Corrupts a clean batch shaped `[batch, i, j, k]`, returning the corrupted batch and
/// what was done to each sample. Every random number comes from `rng`, in sample order.
pub fn corrupt_batch(
    clean: &Array4<f32>,
    config: &CorruptConfig,
    rng: &mut impl Rng,
) -> (Array4<f32>, Vec<SampleCorruption>) {
    let mut corrupted = clean.clone();
    let batch = clean.shape()[0];
    let mut records = Vec::with_capacity(batch);

    for i in 0..batch {
        let (low, high) = value_range(corrupted.index_axis(Axis(0), i).iter().copied());
        let mut sample = corrupted.index_axis_mut(Axis(0), i);
        let noise_target = draw_target(sample.len(), config, rng);
        let mut cuboids = fill_cuboids(&mut sample, noise_target, config, rng, |block, rng| {
            fill_noise(block, low, high, rng);
            Fill::Noise
        });

        let j = rng.random_range(0..batch);
        let (paste_from, paste_target) = if j != i {
            let source = corrupted.index_axis(Axis(0), j).to_owned();
            let mut sample = corrupted.index_axis_mut(Axis(0), i);
            let target = draw_target(sample.len(), config, rng);
            let pasted = fill_cuboids(&mut sample, target, config, rng, |mut block, _| {
                let from = source.slice(block.slice());
                block.target.assign(&from);
                Fill::Sample(j)
            });
            cuboids.extend(pasted);
            (Some(j), target)
        } else {
            (None, 0.0)
        };

        records.push(SampleCorruption {
            noise_target,
            paste_from,
            paste_target,
            cuboids,
        });
    }
    (corrupted, records)
}

/// A cuboid being filled: its position and the voxels it covers.
struct Block<'a> {
    start: [usize; 3],
    end: [usize; 3],
    target: ArrayViewMut3<'a, f32>,
}

impl Block<'_> {
    fn slice(&self) -> ndarray::SliceInfo<[ndarray::SliceInfoElem; 3], ndarray::Ix3, ndarray::Ix3> {
        s![
            self.start[0]..self.end[0],
            self.start[1]..self.end[1],
            self.start[2]..self.end[2]
        ]
    }
}

fn draw_target(voxels: usize, config: &CorruptConfig, rng: &mut impl Rng) -> f64 {
    if config.max_fraction <= 0.0 {
        return 0.0;
    }
    rng.random_range(0.0..config.max_fraction) * voxels as f64
}

/// Draws cuboids and fills each with `fill` until their summed volume reaches `target`.
fn fill_cuboids<R: Rng>(
    sample: &mut ArrayViewMut3<f32>,
    target: f64,
    config: &CorruptConfig,
    rng: &mut R,
    mut fill: impl FnMut(Block<'_>, &mut R) -> Fill,
) -> Vec<Cuboid> {
    let shape = [sample.shape()[0], sample.shape()[1], sample.shape()[2]];
    let mut cuboids = Vec::new();
    let mut covered = 0usize;
    if shape.contains(&0) {
        return cuboids;
    }

    while (covered as f64) < target {
        let (start, end) = draw_cuboid(shape, config, rng);
        let slice = s![start[0]..end[0], start[1]..end[1], start[2]..end[2]];
        let block = Block {
            start,
            end,
            target: sample.slice_mut(slice),
        };
        let kind = fill(block, rng);
        let cuboid = Cuboid {
            start,
            end,
            fill: kind,
        };
        covered += cuboid.voxels();
        cuboids.push(cuboid);
    }
    cuboids
}

/// Draws one cuboid's start and end per axis (the original's randint bounds).
fn draw_cuboid(
    shape: [usize; 3],
    config: &CorruptConfig,
    rng: &mut impl Rng,
) -> ([usize; 3], [usize; 3]) {
    let mut start = [0; 3];
    let mut end = [0; 3];
    for a in 0..3 {
        let n = shape[a];
        let border = (config.min_side * n as f64) as usize;
        // NOTE: on axes under 20 voxels the original can draw a side of 0, and under 4
        // voxels its randint fails. Here a side is at least 1, so the loop ends.
        let low = border.max(1);
        let high = ((config.max_side * n as f64) as usize).max(low + 1);
        start[a] = rng.random_range(0..n.saturating_sub(border).max(1));
        end[a] = (start[a] + rng.random_range(low..high)).min(n);
    }
    (start, end)
}

/// Fills a block with standard normal noise rescaled to `[low, high]`.
fn fill_noise(mut block: Block<'_>, low: f32, high: f32, rng: &mut impl Rng) {
    let noise: Vec<f32> = (0..block.target.len())
        .map(|_| standard_normal(rng))
        .collect();
    let (noise_low, noise_high) = value_range(noise.iter().copied());
    let span = noise_high - noise_low;

    for (voxel, z) in block.target.iter_mut().zip(&noise) {
        // A one-voxel block has no spread, so it takes the sample's minimum.
        let unit = if span > 0.0 {
            (z - noise_low) / span
        } else {
            0.0
        };
        *voxel = low + unit * (high - low);
    }
}

/// Draws a standard normal value (Box–Muller, from two uniforms).
pub fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1], so the logarithm is finite
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Minimum and maximum of the values (0 and 0 when there are none).
fn value_range(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let (low, high) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if low > high {
        (0.0, 0.0)
    } else {
        (low, high)
    }
}

/// Returns the corrupted batch of a clean one, as [`corrupt_batch`] without the record.
pub fn corrupt(clean: &Array4<f32>, config: &CorruptConfig, rng: &mut impl Rng) -> Array4<f32> {
    corrupt_batch(clean, config, rng).0
}

/// Copies equally shaped samples into a `[batch, i, j, k]` array. Fails on an empty
/// list or differing shapes.
pub fn stack_samples(samples: &[Array3<f32>]) -> Result<Array4<f32>> {
    let Some(first) = samples.first() else {
        return Err(Error::invalid("cannot stack an empty list of samples"));
    };
    let views: Vec<_> = samples.iter().map(|s| s.view()).collect();
    ndarray::stack(Axis(0), &views).map_err(|_| {
        Error::invalid(format!(
            "samples differ in shape (the first is {:?}); give samples of one crop size",
            first.dim()
        ))
    })
}
