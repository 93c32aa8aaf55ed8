//! An image volume in memory: voxel values and their place in the world.

use ndarray::Array3;

use crate::geometry::Affine;

/// A scalar 3-D image.
///
/// `data[[i, j, k]]` is the value of voxel `(i, j, k)` (NIfTI voxel axes, see
/// [`crate::geometry`]), after any scaling stored in the file was applied.
#[derive(Debug, Clone)]
pub struct Volume {
    pub data: Array3<f32>,
    /// Voxel index to RAS+ world millimetres.
    pub affine: Affine,
}

impl Volume {
    pub fn new(data: Array3<f32>, affine: Affine) -> Self {
        Volume { data, affine }
    }

    /// Array shape `[ni, nj, nk]`.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Voxel spacing in mm along i, j, k.
    pub fn spacing(&self) -> [f64; 3] {
        self.affine.spacing()
    }
}
