//! Siemens mosaic images: one file whose pixel data tiles many slices.

use super::series::DicomSeries;
use super::{series_source, DicomOptions};
use crate::volume::Volume;
use crate::{Error, Result};

/// NOTE: mosaic unpacking is not implemented; every mosaic series is rejected.
/// Cutting `ceil(sqrt(N))` tiles per side row by row (N from (0019,100A)) and moving
/// the origin as nibabel does gives dcm2niix's affine for a 256x256 mosaic of 48
/// tiles of 36x36, but dcm2niix's slices 7 and later are not the row-major tiles,
/// so the tile order needs checking against dcm2niix before this is implemented.
pub fn load(series: &DicomSeries, _options: &DicomOptions) -> Result<(Volume, Vec<String>)> {
    Err(Error::file(
        series_source(series),
        format!("series {}: Siemens mosaic not supported yet; convert it with dcm2niix", series.id),
    ))
}
