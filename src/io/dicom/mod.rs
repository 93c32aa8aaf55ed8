//! DICOM input: finding the image series in a folder and loading each as a
//! [`Volume`] with its acquisition metadata.
//!
//! - [`scan_folder`] / [`scan_files`] read the headers and group images into
//!   [`DicomSeries`]: by SeriesInstanceUID, split further where
//!   ImageOrientationPatient or Rows/Columns differ. Files that are not DICOM,
//!   DICOMDIR files and non-image objects are skipped without a message; a file
//!   that repeats the SOPInstanceUID of an earlier one (by path) is skipped with a
//!   warning at load time.
//! - [`load_series`] decodes the pixels (RescaleSlope/Intercept applied, `f32`) onto
//!   the voxel grid described in [`placement`]: `[i = column, j = row, k = slice]`,
//!   slices in ascending position along row cosine x column cosine (never by file
//!   name or InstanceNumber), slice spacing from ImagePositionPatient (not
//!   SliceThickness), RAS+ affine. Uneven spacing or missing slices are an error
//!   unless [`DicomOptions::allow_nonuniform`] requests linear resampling onto
//!   uniform slices. Several images at each slice position are the volumes of a
//!   4-D series, ordered by echo, diffusion and time attributes ([`volumes`]).
//! - Enhanced multi-frame images are placed frame by frame from the per-frame
//!   functional groups (PlanePositionSequence, PlaneOrientationSequence), falling
//!   back to the shared groups. Without any orientation they get dcm2niix's
//!   placeholder grid and a warning ([`SeriesInfo::placeholder_geometry`]).
//!   NOTE: frames of several volumes in one enhanced object are still rejected.
//! - Siemens mosaics (ImageType contains MOSAIC) are cut into their tiles, one
//!   volume per file ([`mosaic`]).
//!
//! Series ids: `<SeriesNumber>_<SeriesDescription>` with every character outside
//! `[A-Za-z0-9.-]` replaced by `_` (runs collapsed, `_` trimmed at the ends);
//! `na` stands for a missing SeriesNumber and the `_<description>` part is left out
//! when the description is empty. When two series with different
//! SeriesInstanceUIDs in one scan share that id, each gets `_` and the last 8
//! characters of its UID appended. A UID split into several grids gets `_part<N>`
//! (1-based, in grid order) appended.

mod csa;
mod enhanced;
mod header;
pub mod metadata;
pub mod mosaic;
mod pixels;
pub mod placement;
mod series;
pub mod volumes;

use std::path::{Path, PathBuf};

use ndarray::Array3;
use rayon::prelude::*;

pub use self::header::is_dicom_file;
pub use self::metadata::{read_sidecar, write_sidecar, PatientInfo, PerVolume, SequenceMetadata};
pub use self::series::{sanitize, scan_files, scan_folder, DicomScan, DicomSeries};
pub use self::volumes::VolumeParameters;
use self::header::{open, tags, ImageHeader};
use self::placement::{build_grid, Grid, Placement};
use crate::volume::Volume;
use crate::{Error, Result};

/// Choices for loading a series.
#[derive(Debug, Clone, Copy, Default)]
pub struct DicomOptions {
    /// Resample unevenly spaced slices (or a series with missing slices) onto
    /// uniform slices by linear interpolation along the normal, instead of failing.
    pub allow_nonuniform: bool,
    /// Read PatientName, PatientID, PatientBirthDate, PatientSex, PatientAge and
    /// PatientWeight into the metadata (and so into sidecars).
    pub include_patient: bool,
}

/// Description of a loaded series besides its voxels.
#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub id: String,
    pub series_uid: String,
    pub description: String,
    pub number: Option<i64>,
    pub file_count: usize,
    /// Sequence parameters; per-volume values of a 4-D series are lists
    /// (EchoTime, bvals, bvecs).
    pub metadata: SequenceMetadata,
    /// The echo, time and diffusion attributes of each volume, in volume order.
    pub volumes: Vec<VolumeParameters>,
    /// Notes about the conversion (resampling applied, placeholder geometry), for the user.
    pub warnings: Vec<String>,
    /// The affine is a placeholder because the files do not say where the scan is;
    /// NIfTI output then gets sform and qform codes 0.
    pub placeholder_geometry: bool,
}

/// The voxels of a series before its metadata is read.
struct Loaded {
    /// One or more volumes on one grid (same shape and affine).
    volumes: Vec<Volume>,
    /// The attributes of each volume.
    parameters: Vec<VolumeParameters>,
    warnings: Vec<String>,
    /// The affine is a placeholder, not the position of the scan (see [`enhanced`]).
    placeholder_geometry: bool,
}

/// Loads one series onto its voxel grid: one volume, or several for a 4-D series
/// (all with the same shape and affine, in the order of [`volumes`]).
pub fn load_series(series: &DicomSeries, options: &DicomOptions) -> Result<(Vec<Volume>, SeriesInfo)> {
    let Loaded { volumes, parameters, mut warnings, placeholder_geometry } = if series.is_mosaic() {
        mosaic::load(series, options)?
    } else if series.is_multiframe() {
        enhanced::load(series, options)?
    } else {
        load_slices(series, options)?
    };

    let first = &series.images[0];
    let object = open(&first.path, true)?;
    let orientation = series.orientation().or_else(|| enhanced::orientation(&object));
    let mut metadata = metadata::read_metadata(&object, orientation, options.include_patient);
    metadata::add_volume_parameters(&mut metadata, &parameters, &volumes[0].affine);
    if let Some(first_duplicate) = series.duplicates.first() {
        warnings.push(format!(
            "{} file(s) skipped because they repeat the SOPInstanceUID of another file, e.g. {}",
            series.duplicates.len(),
            first_duplicate.display()
        ));
    }
    if volumes.iter().any(|v| v.data.iter().any(|x| !x.is_finite())) {
        warnings.push("some voxels are NaN or infinite".to_string());
    }

    let info = SeriesInfo {
        id: series.id.clone(),
        series_uid: series.series_uid.clone(),
        description: series.description.clone(),
        number: series.number,
        file_count: series.files.len(),
        metadata,
        volumes: parameters,
        warnings,
        placeholder_geometry,
    };
    Ok((volumes, info))
}

/// Scans `files` and loads the single series with id `series_id` among them.
pub fn load_series_files(files: &[PathBuf], series_id: &str, options: &DicomOptions) -> Result<(Vec<Volume>, SeriesInfo)> {
    let mut scan = scan_files(files);
    if let Some(error) = scan.unreadable.pop() {
        return Err(error);
    }
    let source = files.first().map(PathBuf::as_path).unwrap_or(Path::new(""));
    let series = match scan.series.len() {
        1 => scan.series.pop(),
        _ => scan.series.into_iter().find(|s| s.id == series_id),
    }
    .ok_or_else(|| Error::file(source, format!("DICOM series {series_id} not found")))?;

    let (volumes, mut info) = load_series(&series, options)?;
    info.id = series_id.to_string();
    Ok((volumes, info))
}

/// The folder messages about a series name: where its first file is.
fn series_source(series: &DicomSeries) -> PathBuf {
    let first = &series.images[0].path;
    first.parent().map_or_else(|| first.clone(), Path::to_path_buf)
}

/// One slice per file; several files at one position are volumes of a 4-D series.
fn load_slices(series: &DicomSeries, options: &DicomOptions) -> Result<Loaded> {
    let source = series_source(series);
    slice_geometry(&series.images.iter().collect::<Vec<_>>())?;
    let volumes = volumes::split(&series.images, &source, &series.id)?;

    let (orientation, pixel_spacing, positions) = slice_geometry(&volumes[0])?;
    let placement = Placement {
        series_id: &series.id,
        source: &source,
        orientation,
        pixel_spacing,
        positions,
        single_slice_spacing: single_slice_spacing(&series.images[0])?,
    };
    let grid = build_grid(&placement, options.allow_nonuniform)?;

    let mut loaded = Loaded {
        volumes: Vec::with_capacity(volumes.len()),
        parameters: volumes.iter().map(|v| v[0].parameters.clone()).collect(),
        warnings: resample_warning(&grid, volumes[0].len()),
        placeholder_geometry: false,
    };
    for images in &volumes {
        let slices: Vec<Vec<f32>> = images
            .par_iter()
            .map(|h| single_frame(h, series.rows, series.columns))
            .collect::<Result<_>>()?;
        let data = assemble(&slices, series.rows, series.columns, &grid);
        loaded.volumes.push(Volume::new(data, grid.affine));
    }
    Ok(loaded)
}

fn single_frame(h: &ImageHeader, rows: usize, columns: usize) -> Result<Vec<f32>> {
    let mut frames = pixels::decode_frames(&h.path, rows, columns)?;
    match frames.len() {
        1 => Ok(frames.remove(0)),
        n => Err(Error::file(&h.path, format!("{n} frames where one was expected"))),
    }
}

/// Orientation, pixel spacing and the positions of every image, or an error
/// naming the first file that lacks one.
fn slice_geometry(images: &[&ImageHeader]) -> Result<([f64; 6], [f64; 2], Vec<[f64; 3]>)> {
    let mut positions = Vec::with_capacity(images.len());
    for h in images {
        if h.orientation.is_none() {
            return Err(Error::file(
                &h.path,
                "ImageOrientationPatient (0020,0037) is missing or invalid; the slice cannot be placed",
            ));
        }
        if h.pixel_spacing.is_none() {
            return Err(Error::file(&h.path, "PixelSpacing (0028,0030) is missing or invalid"));
        }
        let position = h.position.ok_or_else(|| {
            Error::file(
                &h.path,
                "ImagePositionPatient (0020,0032) is missing or invalid; the slice cannot be placed",
            )
        })?;
        positions.push(position);
    }
    let first = &images[0];
    match (first.orientation, first.pixel_spacing) {
        (Some(o), Some(s)) => Ok((o, s, positions)),
        _ => Err(Error::file(&first.path, "geometry attributes are missing")),
    }
}

/// SpacingBetweenSlices, else SliceThickness: the third voxel size of a single slice.
fn single_slice_spacing(first: &ImageHeader) -> Result<Option<f64>> {
    let object = open(&first.path, true)?;
    Ok(header::float(&object, tags::SPACING_BETWEEN_SLICES)
        .filter(|s| *s > 0.0)
        .or_else(|| header::float(&object, tags::SLICE_THICKNESS)))
}

fn resample_warning(grid: &Grid, input_slices: usize) -> Vec<String> {
    match &grid.resample {
        Some(blends) => vec![format!(
            "uneven slice spacing: {input_slices} slices resampled linearly onto {} evenly spaced slices",
            blends.len()
        )],
        None => Vec::new(),
    }
}

/// Places row-major slices into `[column, row, slice]`, blending slices when the grid resamples.
fn assemble(slices: &[Vec<f32>], rows: usize, columns: usize, grid: &Grid) -> Array3<f32> {
    let depth = grid.resample.as_ref().map_or(slices.len(), Vec::len);
    let mut data = Array3::<f32>::zeros((columns, rows, depth));
    for k in 0..depth {
        let blend = grid.resample.as_ref().map(|b| b[k]);
        for row in 0..rows {
            for column in 0..columns {
                let index = row * columns + column;
                data[[column, row, k]] = match blend {
                    None => slices[k][index],
                    Some(b) => {
                        let w = b.weight as f32;
                        (1.0 - w) * slices[b.below][index] + w * slices[b.above][index]
                    }
                };
            }
        }
    }
    data
}
