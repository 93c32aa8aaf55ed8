//! Foreground cropping and padding to a multiple, with the bookkeeping to map back.
//!
//! Both operations copy a box of the input grid: output voxel `o` is input voxel
//! `o + offset`, with `offset` positive for a crop and negative for padding. A
//! [`CropPad`] records that box, so arrays on the output grid can be put back on the
//! input grid. The output affine is the input affine with its translation moved by
//! `L · offset` (`L` the linear part), so every voxel keeps its world position.

use ndarray::{s, Array3, Slice};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// A crop and/or zero padding of a voxel grid.
#[derive(Debug, Clone, PartialEq)]
pub struct CropPad {
    /// Input array shape.
    pub original_shape: [usize; 3],
    /// Input affine, restored exactly by [`CropPad::undo`].
    pub original_affine: Affine,
    /// Input index of output voxel 0 per axis: positive after a crop, negative
    /// after padding.
    pub offset: [i64; 3],
    /// Output array shape.
    pub shape: [usize; 3],
}

impl CropPad {
    /// Creates the box that copies the grid unchanged.
    pub fn identity(shape: [usize; 3], affine: Affine) -> Self {
        CropPad {
            original_shape: shape,
            original_affine: affine,
            offset: [0; 3],
            shape,
        }
    }

    /// Returns whether the output grid is the input grid.
    pub fn is_identity(&self) -> bool {
        self.offset == [0; 3] && self.shape == self.original_shape
    }

    /// Combines this box and `next` (whose input is this box's output) into one box.
    pub fn then(&self, next: &CropPad) -> Result<CropPad> {
        if next.original_shape != self.shape {
            return Err(Error::invalid(format!(
                "cannot chain crop/pad: shape {:?} does not follow {:?}",
                next.original_shape, self.shape
            )));
        }
        let offset = [0, 1, 2].map(|d| self.offset[d] + next.offset[d]);
        Ok(CropPad {
            offset,
            shape: next.shape,
            ..self.clone()
        })
    }

    /// Computes the output grid's affine: `affine` with its origin moved to input voxel `offset`.
    pub fn apply_affine(&self, affine: &Affine) -> Affine {
        let origin = affine.apply(self.offset.map(|o| o as f64));
        let mut out = *affine;
        for (r, value) in origin.iter().enumerate() {
            out.0[r][3] = *value;
        }
        out
    }

    /// Copies an array on the input grid into the output box; voxels of the box
    /// outside the input take `fill`. Fails when the array is not on the input grid.
    pub fn apply_array<T: Clone>(&self, array: &Array3<T>, fill: T) -> Result<Array3<T>> {
        check_shape(array, self.original_shape, "input")?;
        Ok(copy_window(array, self.offset, self.shape, fill))
    }

    /// Puts an array on the output grid back on the input grid; input voxels outside
    /// the box take `fill`. Fails when the array is not on the output grid.
    pub fn undo_array<T: Clone>(&self, array: &Array3<T>, fill: T) -> Result<Array3<T>> {
        check_shape(array, self.shape, "cropped/padded")?;
        Ok(copy_window(
            array,
            self.offset.map(|o| -o),
            self.original_shape,
            fill,
        ))
    }

    /// Puts a volume on the output grid back on the input grid with the input affine.
    pub fn undo(&self, volume: &Volume, fill: f32) -> Result<Volume> {
        let data = self.undo_array(&volume.data, fill)?;
        Ok(Volume::new(data, self.original_affine))
    }
}

/// Crops to the bounding box of the voxels `> threshold`, grown by `margin` voxels on
/// each side and clamped to the array (MONAI's `CropForeground` with
/// `select_fn = x > threshold`, `allow_smaller=True`).
///
/// When no voxel exceeds `threshold`, the volume is returned whole with an identity
/// [`CropPad`], where MONAI would return an empty array.
pub fn crop_foreground(volume: &Volume, threshold: f32, margin: usize) -> (Volume, CropPad) {
    let shape = volume.shape();
    let Some((first, last)) = foreground_box(volume, threshold) else {
        return (volume.clone(), CropPad::identity(shape, volume.affine));
    };

    let mut offset = [0i64; 3];
    let mut out_shape = [0usize; 3];
    for d in 0..3 {
        let start = first[d].saturating_sub(margin);
        let end = (last[d] + 1).saturating_add(margin).min(shape[d]);
        offset[d] = start as i64;
        out_shape[d] = end - start;
    }

    let crop = CropPad {
        original_shape: shape,
        original_affine: volume.affine,
        offset,
        shape: out_shape,
    };
    let data = copy_window(&volume.data, offset, out_shape, 0.0);
    (Volume::new(data, crop.apply_affine(&volume.affine)), crop)
}

/// Pads with zeros so each dimension is a multiple of `multiple`, splitting the
/// padding as MONAI's `DivisiblePad(method="symmetric")`: `floor(p / 2)` voxels
/// before and the rest after. Fails when `multiple` is 0.
pub fn pad_to_multiple(volume: &Volume, multiple: usize) -> Result<(Volume, CropPad)> {
    if multiple == 0 {
        return Err(Error::invalid(
            "pad multiple is 0; give 1 for no padding or a positive multiple",
        ));
    }

    let shape = volume.shape();
    let mut offset = [0i64; 3];
    let mut out_shape = [0usize; 3];
    for d in 0..3 {
        out_shape[d] = shape[d].div_ceil(multiple) * multiple;
        offset[d] = -(((out_shape[d] - shape[d]) / 2) as i64);
    }

    let pad = CropPad {
        original_shape: shape,
        original_affine: volume.affine,
        offset,
        shape: out_shape,
    };
    let data = copy_window(&volume.data, offset, out_shape, 0.0);
    Ok((Volume::new(data, pad.apply_affine(&volume.affine)), pad))
}

/// Indices of the first and last voxel `> threshold` along each axis, or `None`
/// when there is none. NaN voxels are never foreground.
pub fn foreground_box(volume: &Volume, threshold: f32) -> Option<([usize; 3], [usize; 3])> {
    let [_, nj, nk] = volume.shape();
    let data = volume.data.as_standard_layout();
    let values = data.as_slice()?;
    if nj * nk == 0 {
        return None;
    }

    // Per i-slab: the j and k extent of its foreground, then merged over slabs.
    let slabs: Vec<Option<[usize; 4]>> = values
        .par_chunks(nj * nk)
        .map(|slab| {
            let mut extent: Option<[usize; 4]> = None;
            for (index, value) in slab.iter().enumerate() {
                if *value > threshold {
                    let (j, k) = (index / nk, index % nk);
                    extent = Some(match extent {
                        None => [j, j, k, k],
                        Some([j0, j1, k0, k1]) => [j0.min(j), j1.max(j), k0.min(k), k1.max(k)],
                    });
                }
            }
            extent
        })
        .collect();

    let mut merged: Option<([usize; 3], [usize; 3])> = None;
    for (i, extent) in slabs.iter().enumerate() {
        let Some([j0, j1, k0, k1]) = *extent else {
            continue;
        };
        merged = Some(match merged {
            None => ([i, j0, k0], [i, j1, k1]),
            Some((first, last)) => (
                [first[0], first[1].min(j0), first[2].min(k0)],
                [i, last[1].max(j1), last[2].max(k1)],
            ),
        });
    }
    merged
}

fn check_shape<T>(array: &Array3<T>, expected: [usize; 3], grid: &str) -> Result<()> {
    let shape = [array.shape()[0], array.shape()[1], array.shape()[2]];
    if shape != expected {
        return Err(Error::invalid(format!(
            "array shape {shape:?} is not the {grid} grid's shape {expected:?}"
        )));
    }
    Ok(())
}

/// `out[o] = source[o + offset]` where that index is inside `source`, else `fill`.
fn copy_window<T: Clone>(
    source: &Array3<T>,
    offset: [i64; 3],
    shape: [usize; 3],
    fill: T,
) -> Array3<T> {
    let mut out = Array3::from_elem(shape, fill);

    // Overlap along each axis, as output index ranges [lo, hi); none means nothing to copy.
    let mut out_ranges = [Slice::from(0..0); 3];
    let mut source_ranges = [Slice::from(0..0); 3];
    for d in 0..3 {
        let n_source = source.shape()[d] as i64;
        let lo = (-offset[d]).clamp(0, shape[d] as i64);
        let hi = (n_source - offset[d]).clamp(lo, shape[d] as i64);
        if hi == lo {
            return out;
        }
        out_ranges[d] = Slice::from(lo as isize..hi as isize);
        source_ranges[d] = Slice::from((lo + offset[d]) as isize..(hi + offset[d]) as isize);
    }

    let from = source.slice(s![source_ranges[0], source_ranges[1], source_ranges[2]]);
    out.slice_mut(s![out_ranges[0], out_ranges[1], out_ranges[2]])
        .assign(&from);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_to_multiple_splits_symmetrically() {
        let volume = Volume::new(Array3::ones([30, 32, 1]), Affine::identity());
        let (padded, pad) = pad_to_multiple(&volume, 32).unwrap();
        assert_eq!(padded.shape(), [32, 32, 32]);
        // 2 → 1 before, 1 after; 31 → 15 before, 16 after (MONAI's width // 2 first).
        assert_eq!(pad.offset, [-1, 0, -15]);
        assert_eq!(padded.data[[0, 0, 15]], 0.0);
        assert_eq!(padded.data[[1, 0, 15]], 1.0);
    }

    #[test]
    fn crop_foreground_applies_margin_and_clamps() {
        let mut data = Array3::zeros([10, 10, 10]);
        data[[1, 4, 8]] = 1.0;
        data[[3, 5, 9]] = 2.0;
        let volume = Volume::new(data, Affine::identity());
        let (cropped, crop) = crop_foreground(&volume, 0.0, 2);
        assert_eq!(crop.offset, [0, 2, 6]);
        assert_eq!(cropped.shape(), [6, 6, 4]);
    }
}
