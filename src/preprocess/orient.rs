//! Reorientation to RAS+ voxel order by axis permutation and flips.
//!
//! No voxel value is interpolated: the output array contains the input's values in a
//! different order, and its affine maps each new index to the same world point as
//! before. The voxel axes are chosen by [`Affine::orientation`] (nibabel's
//! `io_orientation`), so an oblique scan goes to the closest RAS+ axes and keeps its
//! obliquity in the affine, as MONAI's `Orientation(axcodes="RAS")` does.

use ndarray::{Array3, Axis};

use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::volume::Volume;

/// The axis permutation and flips that [`to_ras`] applied, with the input grid, so
/// that arrays on the RAS+ grid can be put back on the input grid exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Reorientation {
    /// For each output axis (R, A, S), the input voxel axis it comes from.
    pub source_axis: [usize; 3],
    /// Whether output axis `d` runs opposite to input axis `source_axis[d]`.
    pub flipped: [bool; 3],
    /// Input array shape `[ni, nj, nk]`.
    pub original_shape: [usize; 3],
    /// Input voxel-to-world affine.
    pub original_affine: Affine,
}

/// Reorders a volume's voxels so that i, j, k run closest to R, A, S.
///
/// The output is in standard (C-order) layout. Its affine is the input affine composed
/// with the index permutation, so `out.affine.apply(o)` equals the input affine applied
/// to the input index that voxel `o` was copied from.
pub fn to_ras(volume: &Volume) -> (Volume, Reorientation) {
    let orientation = volume.affine.orientation();

    let mut source_axis = [0usize; 3];
    let mut flipped = [false; 3];
    for (input_axis, &(world_axis, sign)) in orientation.iter().enumerate() {
        source_axis[world_axis] = input_axis;
        flipped[world_axis] = sign < 0.0;
    }

    let reorientation = Reorientation {
        source_axis,
        flipped,
        original_shape: volume.shape(),
        original_affine: volume.affine,
    };
    let data = reorientation.apply_array(&volume.data);
    let affine = reorientation.output_affine();
    (Volume::new(data, affine), reorientation)
}

impl Reorientation {
    /// Returns whether the input was already in RAS+ voxel order (nothing was moved).
    pub fn is_identity(&self) -> bool {
        self.source_axis == [0, 1, 2] && self.flipped == [false; 3]
    }

    /// Output array shape.
    pub fn output_shape(&self) -> [usize; 3] {
        self.source_axis.map(|axis| self.original_shape[axis])
    }

    /// Computes the affine of the reoriented grid, `original_affine · P`, where `P` maps an
    /// output index to the input index it was copied from. The linear part only
    /// permutes and negates columns, so it is exact; the translation moves to the
    /// world position of the flipped axes' last voxel.
    pub fn output_affine(&self) -> Affine {
        let mut output_to_input = Affine([[0.0; 4]; 4]);
        output_to_input.0[3][3] = 1.0;
        for d in 0..3 {
            let axis = self.source_axis[d];
            if self.flipped[d] {
                output_to_input.0[axis][d] = -1.0;
                output_to_input.0[axis][3] = self.original_shape[axis] as f64 - 1.0;
            } else {
                output_to_input.0[axis][d] = 1.0;
            }
        }
        self.original_affine.compose(&output_to_input)
    }

    /// Applies the permutation and flips to any array on the input grid, such as a
    /// second channel or a label map. The array's shape is not checked; an array of
    /// another shape is permuted all the same.
    pub fn apply_array<T: Clone>(&self, array: &Array3<T>) -> Array3<T> {
        let mut view = array.view().permuted_axes(self.source_axis);
        for d in 0..3 {
            if self.flipped[d] {
                view.invert_axis(Axis(d));
            }
        }
        view.as_standard_layout().into_owned()
    }

    /// Puts an array on the RAS+ grid back on the input grid. Fails when its shape
    /// is not the RAS+ grid's shape.
    pub fn undo_array<T: Clone>(&self, array: &Array3<T>) -> Result<Array3<T>> {
        let shape = [array.shape()[0], array.shape()[1], array.shape()[2]];
        if shape != self.output_shape() {
            return Err(Error::invalid(format!(
                "cannot undo reorientation: array shape {shape:?} is not the reoriented shape {:?}",
                self.output_shape()
            )));
        }

        let mut view = array.view();
        for d in 0..3 {
            if self.flipped[d] {
                view.invert_axis(Axis(d));
            }
        }
        let mut inverse = [0usize; 3];
        for (d, &axis) in self.source_axis.iter().enumerate() {
            inverse[axis] = d;
        }
        Ok(view
            .permuted_axes(inverse)
            .as_standard_layout()
            .into_owned())
    }

    /// Puts a volume on the RAS+ grid back on the input grid, with the input's
    /// affine restored bit for bit.
    pub fn undo(&self, volume: &Volume) -> Result<Volume> {
        let data = self.undo_array(&volume.data)?;
        Ok(Volume::new(data, self.original_affine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: [usize; 3]) -> Array3<f32> {
        Array3::from_shape_fn(shape, |(i, j, k)| (i * 10_000 + j * 100 + k) as f32)
    }

    #[test]
    fn to_ras_identity_for_ras_input() {
        let volume = Volume::new(ramp([3, 4, 5]), Affine::from_spacing([1.0, 2.0, 3.0]));
        let (out, reorientation) = to_ras(&volume);
        assert!(reorientation.is_identity());
        assert_eq!(out.data, volume.data);
        assert_eq!(out.affine, volume.affine);
    }

    #[test]
    fn to_ras_flips_las_first_axis() {
        let affine = Affine([
            [-2.0, 0.0, 0.0, 10.0],
            [0.0, 2.0, 0.0, 0.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        let volume = Volume::new(ramp([3, 4, 5]), affine);
        let (out, reorientation) = to_ras(&volume);
        assert_eq!(reorientation.source_axis, [0, 1, 2]);
        assert_eq!(reorientation.flipped, [true, false, false]);
        assert_eq!(out.data[[0, 1, 2]], volume.data[[2, 1, 2]]);
        // Input voxel i = 2 sits at x = 10 - 4 = 6 mm, and becomes output voxel 0.
        assert_eq!(out.affine.translation(), [6.0, 0.0, 0.0]);
        assert_eq!(out.affine.0[0][0], 2.0);
    }
}
