//! Siemens mosaic images: one file whose pixel data tiles many slices.

use super::series::DicomSeries;
use super::{series_source, DicomOptions};
use crate::volume::Volume;
use crate::{Error, Result};

/// NOTE: mosaic unpacking is not implemented; every mosaic series is rejected.
pub fn load(series: &DicomSeries, _options: &DicomOptions) -> Result<(Volume, Vec<String>)> {
    Err(Error::file(
        series_source(series),
        format!("series {}: Siemens mosaic not supported yet; convert it with dcm2niix", series.id),
    ))
}
