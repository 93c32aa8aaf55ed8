//! Preprocessing shared by the PRISM tools: reorientation to RAS+, resampling,
//! intensity normalization, foreground crop and padding, and conversion to the
//! network's input tensor.
//!
//! Every function takes a [`Volume`] (f32 voxels indexed `[i, j, k]`, affine from
//! voxel index to RAS+ mm) and is deterministic: results do not depend on the number
//! of threads. [`PreprocessOptions`] chains the steps and returns an [`Applied`]
//! record that maps network outputs back to the input grid.
//!
//! Tensor convention: the network input is `[batch, channel, i, j, k]`, with i, j, k
//! the NIfTI voxel axes in file order (after any reorientation), which is what MONAI
//! gets from nibabel. The tensor is row-major, so k varies fastest, as in ndarray's
//! standard layout of `[i, j, k]`.

pub mod crop;
pub mod intensity;
pub mod orient;
pub mod pipeline;
pub mod resample;

use candle_core::{Device, Tensor};
use ndarray::Array3;

pub use crop::{crop_foreground, pad_to_multiple, CropPad};
pub use intensity::{clip_percentiles, zscore_nonzero, ClipRange, NonZeroStats};
pub use orient::{to_ras, Reorientation};
pub use pipeline::{Applied, AppliedIntensity, Normalize, PreprocessOptions, Resampling};
pub use resample::{
    resample_to_grid, resample_to_grid_border, resample_to_spacing, spacing_grid, Interp,
};

use crate::volume::Volume;

/// Copies a volume into a `[1, 1, ni, nj, nk]` f32 tensor on `device`.
pub fn volume_to_tensor(volume: &Volume, device: &Device) -> candle_core::Result<Tensor> {
    let [ni, nj, nk] = volume.shape();
    let data = volume.data.as_standard_layout();
    match data.as_slice() {
        Some(values) => Tensor::from_slice(values, (1, 1, ni, nj, nk), device),
        None => Err(candle_core::Error::Msg(
            "standard-layout array is not contiguous".into(),
        )),
    }
}

/// Copies a tensor with three spatial axes and leading axes of size 1 (such as
/// `[1, 1, ni, nj, nk]`) into an `[i, j, k]` array of f32.
pub fn tensor_to_array(tensor: &Tensor) -> candle_core::Result<Array3<f32>> {
    let dims = tensor.dims();
    let leading = dims.len().checked_sub(3);
    if leading.is_none_or(|n| dims[..n].iter().any(|d| *d != 1)) {
        return Err(candle_core::Error::Msg(format!(
            "expected a tensor of shape [1, .., ni, nj, nk], got {dims:?}"
        )));
    }

    let n = dims.len();
    let shape = [dims[n - 3], dims[n - 2], dims[n - 1]];
    let values = tensor
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Array3::from_shape_vec(shape, values).map_err(|e| candle_core::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Affine;

    #[test]
    fn volume_to_tensor_keeps_k_fastest() {
        // A Fortran-order array must come out in C order all the same.
        let data = Array3::from_shape_fn([2, 3, 4], |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        let fortran = data.t().as_standard_layout().reversed_axes().to_owned();
        assert!(!fortran.is_standard_layout());
        let volume = Volume::new(fortran, Affine::identity());
        let tensor = volume_to_tensor(&volume, &Device::Cpu).unwrap();
        assert_eq!(tensor.dims(), &[1, 1, 2, 3, 4]);
        let flat = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat[1], 1.0);
        assert_eq!(flat[4], 10.0);
        assert_eq!(tensor_to_array(&tensor).unwrap(), data);
    }
}
