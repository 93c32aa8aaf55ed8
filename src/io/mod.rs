//! Image file input and output: NIfTI-1 (`.nii`, `.nii.gz`).
//!
//! - [`load_volume`] reads one 3-D volume as `f32` (any scalar datatype, scaled by
//!   `scl_slope`/`scl_inter`) with its affine chosen as nibabel does, and
//!   [`read_header`] reads the header alone ([`NiftiHeaderInfo`]).
//! - [`write_volume`] writes a volume as float32 or an integer label map,
//!   atomically, with sform and qform set from the affine ([`WriteOptions`]).
//! - [`parse_volume_spec`] splits the `scan.nii.gz:2` syntax that selects one
//!   volume of a 4-D series on the command line.
//!
//! Every failure is an [`Error`](crate::Error) naming the file, never a panic:
//! NIfTI-2, RGB, complex and float128 data, `.hdr/.img` pairs, 2-D and 5-D images
//! and truncated or corrupt files are rejected with the reason.

mod nifti;
mod nifti_write;
mod qform;
mod stream;

use std::path::PathBuf;

pub use self::nifti::{load_volume, read_header, AffineSource, NiftiHeaderInfo, MAX_VOXELS};
pub use self::nifti_write::{write_volume, OutputDtype, WriteOptions};
use crate::volume::Volume;

/// Splits `scan.nii.gz:2` into the path and a 0-based volume index.
///
/// The suffix counts only when everything after the last `:` is decimal digits and
/// the part before it ends in `.nii` or `.nii.gz`. Any other argument is returned
/// whole as a path with no index.
pub fn parse_volume_spec(arg: &str) -> (PathBuf, Option<usize>) {
    if let Some((path, index)) = arg.rsplit_once(':') {
        let is_nifti = path.ends_with(".nii") || path.ends_with(".nii.gz");
        let is_index = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
        if is_nifti && is_index {
            if let Ok(n) = index.parse::<usize>() {
                return (PathBuf::from(path), Some(n));
            }
        }
    }
    (PathBuf::from(arg), None)
}

/// Number of NaN and infinite voxels; the reader keeps them, so callers that
/// cannot handle them check here.
pub fn count_non_finite(vol: &Volume) -> usize {
    vol.data.iter().filter(|v| !v.is_finite()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_spec_with_index() {
        assert_eq!(
            parse_volume_spec("scan.nii.gz:2"),
            (PathBuf::from("scan.nii.gz"), Some(2))
        );
        assert_eq!(
            parse_volume_spec("dir/a.nii:0"),
            (PathBuf::from("dir/a.nii"), Some(0))
        );
    }

    #[test]
    fn volume_spec_without_index() {
        assert_eq!(
            parse_volume_spec("scan.nii.gz"),
            (PathBuf::from("scan.nii.gz"), None)
        );
        assert_eq!(
            parse_volume_spec("scan.nii.gz:"),
            (PathBuf::from("scan.nii.gz:"), None)
        );
        assert_eq!(
            parse_volume_spec("scan.nii.gz:x1"),
            (PathBuf::from("scan.nii.gz:x1"), None)
        );
        assert_eq!(
            parse_volume_spec("notes.txt:3"),
            (PathBuf::from("notes.txt:3"), None)
        );
        assert_eq!(
            parse_volume_spec("C:scan.nii"),
            (PathBuf::from("C:scan.nii"), None)
        );
    }

    #[test]
    fn volume_spec_index_too_large_is_a_path() {
        let arg = "scan.nii:99999999999999999999999";
        assert_eq!(parse_volume_spec(arg), (PathBuf::from(arg), None));
    }
}
