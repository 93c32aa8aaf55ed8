//! The preprocessing chain the tools run before the network, and the record that
//! maps network outputs back to the input scan's grid.
//!
//! Order: reorient → resample → crop foreground → normalize → pad. Normalization
//! comes after the crop so its statistics see the same voxels as MONAI's chain, and
//! padding comes last so the padded voxels are exactly 0 in the network input.

use ndarray::Array3;

use super::crop::{crop_foreground, pad_to_multiple, CropPad};
use super::intensity::{clip_percentiles, zscore_nonzero, ClipRange, NonZeroStats};
use super::orient::{to_ras, Reorientation};
use super::resample::{resample_to_grid_border, resample_to_spacing, Interp};
use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// Intensity normalization of the (cropped) volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    /// Z-score over the voxels `!= 0`; zero voxels stay 0.
    ZScoreNonZero,
    /// Clip the non-zero voxels to their `lo`-th and `hi`-th percentiles (0–100),
    /// then z-score over the voxels `!= 0`.
    PercentileClip { lo: f64, hi: f64 },
    /// Leave the values as they are.
    None,
}

/// Settings of the preprocessing chain run by [`PreprocessOptions::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessOptions {
    /// Reorder the voxel axes to RAS+ (no interpolation).
    pub reorient: bool,
    /// Resample to this voxel size in mm (trilinear, MONAI `Spacing` grid).
    pub spacing: Option<[f64; 3]>,
    /// Crop to the bounding box of the voxels `> crop_threshold`.
    pub crop_foreground: bool,
    /// Foreground threshold for the crop (MONAI's default selects `x > 0`).
    pub crop_threshold: f32,
    /// Voxels kept around the foreground box on each side.
    pub crop_margin: usize,
    pub normalize: Normalize,
    /// Zero-pad symmetrically to a multiple of this many voxels per axis; 1 means no
    /// padding.
    pub pad_multiple: usize,
}

impl PreprocessOptions {
    /// PRISM's preprocessing: RAS+, 1 mm isotropic, foreground crop (`x > 0`, no
    /// margin), z-score over non-zero voxels, zero padding to a multiple of 32 (the
    /// Swin encoder's total downsampling).
    pub fn prism_default() -> Self {
        PreprocessOptions {
            reorient: true,
            spacing: Some([1.0; 3]),
            crop_foreground: true,
            crop_threshold: 0.0,
            crop_margin: 0,
            normalize: Normalize::ZScoreNonZero,
            pad_multiple: 32,
        }
    }

    /// No preprocessing: the voxel array goes to the network as it is.
    pub fn none() -> Self {
        PreprocessOptions {
            reorient: false,
            spacing: None,
            crop_foreground: false,
            crop_threshold: 0.0,
            crop_margin: 0,
            normalize: Normalize::None,
            pad_multiple: 1,
        }
    }

    /// Runs the chain on `volume`, consuming it so that at most two copies of the
    /// volume are alive at a time. Fails on invalid options or a singular affine.
    pub fn apply(&self, volume: Volume) -> Result<(Volume, Applied)> {
        self.validate()?;
        let input_shape = volume.shape();
        let input_affine = volume.affine;

        let (volume, reorientation) = if self.reorient {
            let (ras, reorientation) = to_ras(&volume);
            (ras, Some(reorientation))
        } else {
            (volume, None)
        };

        let (volume, resampling) = match self.spacing {
            Some(spacing) => self.resample(volume, spacing)?,
            None => (volume, None),
        };

        let (mut volume, crop) = if self.crop_foreground {
            crop_foreground(&volume, self.crop_threshold, self.crop_margin)
        } else {
            let identity = CropPad::identity(volume.shape(), volume.affine);
            (volume, identity)
        };

        let intensity = self.normalize(&mut volume)?;

        let (volume, crop_pad) = if self.pad_multiple > 1 {
            let (padded, pad) = pad_to_multiple(&volume, self.pad_multiple)?;
            (padded, crop.then(&pad)?)
        } else {
            (volume, crop)
        };

        let applied = Applied {
            input_shape,
            input_affine,
            reorientation,
            resampling,
            crop_pad,
            intensity,
        };
        Ok((volume, applied))
    }

    fn validate(&self) -> Result<()> {
        if self.pad_multiple == 0 {
            return Err(Error::invalid(
                "pad multiple is 0; give 1 for no padding or a positive multiple",
            ));
        }
        if let Normalize::PercentileClip { lo, hi } = self.normalize {
            let valid = |q: f64| (0.0..=100.0).contains(&q);
            if !(valid(lo) && valid(hi) && lo <= hi) {
                return Err(Error::invalid(format!(
                    "percentile clip {lo}..{hi} is invalid; give 0 <= lo <= hi <= 100"
                )));
            }
        }
        Ok(())
    }

    fn resample(&self, volume: Volume, spacing: [f64; 3]) -> Result<(Volume, Option<Resampling>)> {
        let (from_affine, from_shape) = (volume.affine, volume.shape());
        let resampled = resample_to_spacing(&volume, spacing, Interp::Linear)?;
        drop(volume);

        // resample_to_spacing returns the input grid when no resampling is needed.
        if resampled.affine == from_affine && resampled.shape() == from_shape {
            return Ok((resampled, None));
        }
        let resampling = Resampling {
            from_affine,
            from_shape,
            to_affine: resampled.affine,
            to_shape: resampled.shape(),
        };
        Ok((resampled, Some(resampling)))
    }

    fn normalize(&self, volume: &mut Volume) -> Result<AppliedIntensity> {
        Ok(match self.normalize {
            Normalize::None => AppliedIntensity::None,
            Normalize::ZScoreNonZero => AppliedIntensity::ZScore(zscore_nonzero(volume)),
            Normalize::PercentileClip { lo, hi } => {
                let clip = clip_percentiles(volume, lo, hi)?;
                AppliedIntensity::ClipZScore(clip, zscore_nonzero(volume))
            }
        })
    }
}

/// The grid change made by resampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Resampling {
    pub from_affine: Affine,
    pub from_shape: [usize; 3],
    pub to_affine: Affine,
    pub to_shape: [usize; 3],
}

/// The normalization that was applied, with its statistics. A count of 0 in them
/// means the volume had no non-zero voxel and was left unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AppliedIntensity {
    None,
    ZScore(NonZeroStats),
    ClipZScore(ClipRange, NonZeroStats),
}

/// Record of the steps [`PreprocessOptions::apply`] took, used to map results back.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub input_shape: [usize; 3],
    pub input_affine: Affine,
    /// Set when the volume was reoriented.
    pub reorientation: Option<Reorientation>,
    /// Set when resampling changed the grid.
    pub resampling: Option<Resampling>,
    /// Foreground crop followed by padding, as one box on the resampled grid.
    pub crop_pad: CropPad,
    pub intensity: AppliedIntensity,
}

impl Applied {
    /// Returns whether the volume had no non-zero voxel when it was normalized.
    pub fn foreground_is_empty(&self) -> bool {
        match self.intensity {
            AppliedIntensity::None => false,
            AppliedIntensity::ZScore(stats) | AppliedIntensity::ClipZScore(_, stats) => {
                stats.is_empty()
            }
        }
    }

    /// Maps an array on the preprocessed grid (network input shape) back onto the
    /// input scan's grid, with the input affine.
    ///
    /// Voxels outside the crop box take `fill`. Crop, padding and reorientation are
    /// undone exactly; resampling is undone with `interp`, with positions that fall
    /// just past the resampled grid's edge clamped to it.
    pub fn to_input_grid(&self, data: &Array3<f32>, interp: Interp, fill: f32) -> Result<Volume> {
        let uncropped = self.crop_pad.undo_array(data, fill)?;

        let on_reoriented_grid = match &self.resampling {
            Some(resampling) => {
                let resampled = Volume::new(uncropped, resampling.to_affine);
                resample_to_grid_border(
                    &resampled,
                    &resampling.from_affine,
                    resampling.from_shape,
                    interp,
                )?
                .data
            }
            None => uncropped,
        };

        let data = match &self.reorientation {
            Some(reorientation) => reorientation.undo_array(&on_reoriented_grid)?,
            None => on_reoriented_grid,
        };
        Ok(Volume::new(data, self.input_affine))
    }

    /// Maps a label map on the preprocessed grid back onto the input grid with
    /// nearest-neighbour sampling; voxels outside the crop box get label 0.
    pub fn to_input_grid_labels(&self, labels: &Array3<f32>) -> Result<Volume> {
        self.to_input_grid(labels, Interp::Nearest, 0.0)
    }
}
