//! Preparation of one volume for pretraining (RAS+, 1 mm, z-score) and the crops and
//! axis augmentations that turn a prepared volume into a training sample.
//!
//! Crops follow MONAI 1.4.0: `SpatialPad` (zeros, symmetric: `d / 2` voxels before
//! and the rest after) up to the crop size, then `RandSpatialCrop` (start uniform over
//! the valid positions) for training or `CenterSpatialCrop` (start `n / 2 - roi / 2`)
//! for validation. Padding is never materialized: a crop reads the volume through an
//! offset and writes zeros outside it.

use ndarray::{s, Array3, ArrayView3, Axis};
use rand::Rng;

use crate::error::Result;
use crate::preprocess::{resample_to_spacing, to_ras, zscore_nonzero, Interp};
use crate::volume::Volume;

/// Largest difference from 1 mm (in mm) of a voxel size that is used without resampling.
pub const SPACING_TOLERANCE_MM: f64 = 1e-3;

/// The six orders of three axes.
const PERMUTATIONS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// Reorients `volume` to RAS+ and resamples it to 1 mm isotropic with `interp`, unless
/// every voxel size is within [`SPACING_TOLERANCE_MM`] of 1 mm already.
pub fn to_ras_1mm(volume: Volume, interp: Interp) -> Result<Volume> {
    let (ras, _) = to_ras(&volume);
    drop(volume);

    let spacing = ras.spacing();
    if spacing
        .iter()
        .all(|s| (s - 1.0).abs() <= SPACING_TOLERANCE_MM)
    {
        return Ok(ras);
    }
    resample_to_spacing(&ras, [1.0; 3], interp)
}

/// Prepares an image as a training volume: RAS+, 1 mm (trilinear), then z-scored over
/// its non-zero voxels.
pub fn prepare_scan(volume: Volume) -> Result<Array3<f32>> {
    let mut volume = to_ras_1mm(volume, Interp::Linear)?;
    zscore_nonzero(&mut volume);
    Ok(volume.data)
}

/// Z-scores an array over its non-zero voxels, as [`prepare_scan`] does.
pub fn zscore_array(data: Array3<f32>) -> Array3<f32> {
    let mut volume = Volume::new(data, crate::geometry::Affine::identity());
    zscore_nonzero(&mut volume);
    volume.data
}

/// Position of a crop: crop voxel `x` is volume voxel `x + offset`, and zero where that
/// lies outside the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    pub offset: [isize; 3],
    pub size: [usize; 3],
}

impl CropWindow {
    /// Draws a training crop: symmetric zero padding where the volume is smaller than
    /// `roi`, then a start uniform over the valid positions. An axis with nothing to
    /// choose from draws no random number, as in MONAI.
    pub fn random(shape: [usize; 3], roi: [usize; 3], rng: &mut impl Rng) -> CropWindow {
        let offset = std::array::from_fn(|a| {
            let (n, r) = (shape[a], roi[a]);
            if n > r {
                rng.random_range(0..=n - r) as isize
            } else {
                -(((r - n) / 2) as isize)
            }
        });
        CropWindow { offset, size: roi }
    }

    /// Places the validation crop: symmetric zero padding to at least `roi`, then
    /// MONAI's centre crop.
    pub fn center(shape: [usize; 3], roi: [usize; 3]) -> CropWindow {
        let offset = std::array::from_fn(|a| {
            let (n, r) = (shape[a], roi[a]);
            let padded = n.max(r);
            let pad_before = (padded - n) / 2;
            let start = padded / 2 - r / 2;
            start as isize - pad_before as isize
        });
        CropWindow { offset, size: roi }
    }

    /// Copies the window out of `volume`, with zeros outside it.
    pub fn extract(&self, volume: ArrayView3<f32>) -> Array3<f32> {
        let mut crop = Array3::<f32>::zeros(self.size);
        let shape = volume.shape();

        // Per axis, the crop range [lo, hi) whose source voxels lie inside the volume.
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for a in 0..3 {
            let first = (-self.offset[a]).max(0) as usize;
            let last =
                (shape[a] as isize - self.offset[a]).clamp(0, self.size[a] as isize) as usize;
            lo[a] = first.min(last);
            hi[a] = last;
        }
        if (0..3).any(|a| lo[a] >= hi[a]) {
            return crop;
        }

        let source = |a: usize, x: usize| (x as isize + self.offset[a]) as usize;
        let from = volume.slice(s![
            source(0, lo[0])..source(0, hi[0]),
            source(1, lo[1])..source(1, hi[1]),
            source(2, lo[2])..source(2, hi[2])
        ]);
        crop.slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
            .assign(&from);
        crop
    }
}

/// An axis permutation followed by flips, applied to a crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisAugment {
    /// Output axis `a` is input axis `permutation[a]`.
    pub permutation: [usize; 3],
    /// Whether output axis `a` is reversed (after the permutation).
    pub flips: [bool; 3],
}

impl AxisAugment {
    /// Draws one of the six axis permutations uniformly, among those that keep the
    /// shape `roi` (all six for a cube), then flips each axis with probability 0.5.
    pub fn random(roi: [usize; 3], rng: &mut impl Rng) -> AxisAugment {
        let allowed: Vec<[usize; 3]> = PERMUTATIONS
            .into_iter()
            .filter(|p| (0..3).all(|a| roi[p[a]] == roi[a]))
            .collect();
        let permutation = allowed[rng.random_range(0..allowed.len())];
        let flips = std::array::from_fn(|_| rng.random_bool(0.5));
        AxisAugment { permutation, flips }
    }

    pub fn identity() -> AxisAugment {
        AxisAugment {
            permutation: [0, 1, 2],
            flips: [false; 3],
        }
    }

    /// Applies the permutation then the flips, returning a standard-layout array.
    pub fn apply(&self, crop: Array3<f32>) -> Array3<f32> {
        let mut view = crop.view().permuted_axes(self.permutation);
        for (a, flip) in self.flips.iter().enumerate() {
            if *flip {
                view.invert_axis(Axis(a));
            }
        }
        view.as_standard_layout().into_owned()
    }
}

/// Makes a training sample of `roi` voxels from a prepared volume: a random crop
/// ([`CropWindow::random`]), then a random [`AxisAugment`].
pub fn train_sample(volume: ArrayView3<f32>, roi: [usize; 3], rng: &mut impl Rng) -> Array3<f32> {
    let shape = [volume.shape()[0], volume.shape()[1], volume.shape()[2]];
    let window = CropWindow::random(shape, roi, rng);
    let crop = window.extract(volume);
    AxisAugment::random(roi, rng).apply(crop)
}

/// Makes the validation sample of a prepared volume: the centre crop, unaugmented.
pub fn validation_sample(volume: ArrayView3<f32>, roi: [usize; 3]) -> Array3<f32> {
    let shape = [volume.shape()[0], volume.shape()[1], volume.shape()[2]];
    CropWindow::center(shape, roi).extract(volume)
}
