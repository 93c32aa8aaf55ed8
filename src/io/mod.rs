//! Image file input and output: NIfTI-1 (`.nii`, `.nii.gz`), and DICOM input ([`dicom`]).
//!
//! - [`load_volume`] reads one 3-D volume as `f32` (any scalar datatype, scaled by
//!   `scl_slope`/`scl_inter`) with its affine chosen as nibabel does, and
//!   [`read_header`] reads the header alone ([`NiftiHeaderInfo`]).
//! - [`write_volume`] writes a volume as float32 or an integer label map,
//!   atomically, with sform and qform set from the affine ([`WriteOptions`]).
//!
//! Every failure is an [`Error`](crate::Error) naming the file, never a panic:
//! NIfTI-2, RGB, complex and float128 data, `.hdr/.img` pairs, 2-D and 5-D images
//! and truncated or corrupt files are rejected with the reason.

pub mod atomic;
pub mod dicom;
mod nifti;
mod nifti_write;
mod qform;
mod stream;

pub use self::nifti::{load_volume, read_header, AffineSource, NiftiHeaderInfo, MAX_VOXELS};
pub use self::nifti_write::{write_volume, write_volumes, OutputDtype, WriteOptions};
use crate::volume::Volume;

/// Number of NaN and infinite voxels; the reader keeps them, so callers that
/// cannot handle them check here.
pub fn count_non_finite(vol: &Volume) -> usize {
    vol.data.iter().filter(|v| !v.is_finite()).count()
}
