//! Siemens mosaic images: one file whose pixel data tiles the slices of one volume.
//! Several mosaic files of one series (diffusion directions, time points) are the
//! volumes of a 4-D series.
//!
//! The number of slices is NumberOfImagesInMosaic from the CSA image header, else
//! from the private (0019,xx0A), else `sSliceArray.lSize` of the protocol in the
//! CSA series header. With `n` slices the mosaic has `s = ceil(sqrt(n))`
//! tiles per side, each `Columns / s` by `Rows / s` pixels (integer division), and
//! slice `t` is the tile in mosaic row `t / s`, column `t % s`.
//!
//! Geometry follows dcm2niix v1.0.20260724 and nibabel 5.4. ImagePositionPatient is
//! the centre of the mosaic's first pixel. The first slice's first pixel lies
//! `(Columns - Columns / s) / 2` pixels along the row direction and
//! `(Rows - Rows / s) / 2` pixels along the column direction from it (real-valued
//! division). Slices run along the CSA SliceNormalVector (else row cosine x column
//! cosine), SpacingBetweenSlices apart (else SliceThickness).

use dicom_object::InMemDicomObject;
use rayon::prelude::*;

use super::header::{float, open, tags, ImageHeader};
use super::placement::lps_to_ras;
use super::series::{dot, normal, DicomSeries};
use super::{csa, pixels, volumes, DicomOptions, Loaded};
use crate::geometry::Affine;
use crate::volume::Volume;
use crate::{Error, Result};

/// Tile layout and slice geometry of one mosaic file.
#[derive(Debug, Clone, PartialEq)]
struct MosaicLayout {
    slices: usize,
    tiles_per_side: usize,
    tile_rows: usize,
    tile_columns: usize,
    /// Slice normal, LPS unit vector.
    normal: [f64; 3],
    /// Slice spacing in mm.
    spacing: f64,
    /// Distance in pixels (row-major index into the mosaic) from the start of one
    /// row of tiles to the next (see [`tile_start`]).
    row_stride: usize,
}

/// Loads every mosaic file of the series, one volume per file, in volume order.
pub(super) fn load(series: &DicomSeries, _options: &DicomOptions) -> Result<Loaded> {
    let mut images: Vec<&ImageHeader> = series.images.iter().collect();
    images.sort_by(|a, b| volumes::volume_order(a, b));

    let first = images[0];
    let (layout, affine, mut warnings) = read_layout(first, series)?;
    let decoded: Vec<Vec<f32>> = images
        .par_iter()
        .map(|h| {
            check_same_grid(h, first, series)?;
            let frames = pixels::decode_frames(&h.path, series.rows, series.columns)?;
            frames
                .into_iter()
                .next()
                .ok_or_else(|| Error::file(&h.path, "mosaic without pixel data"))
        })
        .collect::<Result<_>>()?;

    let volumes = decoded
        .iter()
        .map(|pixels| Volume::new(cut_tiles(pixels, series.columns, &layout), affine))
        .collect();
    if series.rows % layout.tiles_per_side != 0 || series.columns % layout.tiles_per_side != 0 {
        warnings.push(format!(
            "the {} x {} mosaic is not a whole number of {} x {} tiles; tiles were cut where dcm2niix cuts them",
            series.rows, series.columns, layout.tiles_per_side, layout.tiles_per_side
        ));
    }
    Ok(Loaded {
        volumes,
        parameters: images.iter().map(|h| h.parameters.clone()).collect(),
        warnings,
        placeholder_geometry: false,
    })
}

/// Reads the mosaic layout and the affine of the first slice from one file.
fn read_layout(image: &ImageHeader, series: &DicomSeries) -> Result<(MosaicLayout, Affine, Vec<String>)> {
    let path = &image.path;
    let object = open(path, true)?;
    let mut warnings = Vec::new();
    let csa = match csa::image_header(&object) {
        Some(Ok(header)) => Some(header),
        Some(Err(problem)) => return Err(Error::file(path, format!("invalid CSA Image Header Info (0029,1010): {problem}"))),
        None => None,
    };

    let slices = csa
        .as_ref()
        .and_then(|h| h.number("NumberOfImagesInMosaic"))
        .or_else(|| csa::images_in_mosaic(&object))
        .or_else(|| slices_from_protocol(&object))
        .filter(|n| *n >= 1.0 && n.fract() == 0.0)
        .ok_or_else(|| {
            Error::file(
                path,
                "mosaic without NumberOfImagesInMosaic (CSA image header or (0019,100A)); the tiles cannot be cut",
            )
        })? as usize;
    let tiles_per_side = (slices as f64).sqrt().ceil() as usize;
    let (rows, columns) = (series.rows, series.columns);
    let (tile_rows, tile_columns) = (rows / tiles_per_side, columns / tiles_per_side);
    if tile_rows == 0 || tile_columns == 0 {
        return Err(Error::file(
            path,
            format!("a {rows} x {columns} mosaic cannot hold {slices} tiles ({tiles_per_side} per side)"),
        ));
    }

    let (Some(orientation), Some(position), Some(pixel_spacing)) = (image.orientation, image.position, image.pixel_spacing) else {
        return Err(Error::file(
            path,
            "ImageOrientationPatient, ImagePositionPatient or PixelSpacing is missing; the mosaic cannot be placed",
        ));
    };
    let slice_normal = match csa.as_ref().and_then(|h| h.numbers("SliceNormalVector")) {
        Some(v) if v.len() == 3 => [v[0], v[1], v[2]],
        _ => {
            warnings.push("the CSA header has no SliceNormalVector; slices follow row cosine x column cosine".into());
            normal(&orientation)
        }
    };
    let spacing = slice_spacing(&object).ok_or_else(|| {
        Error::file(path, "SpacingBetweenSlices and SliceThickness are missing; the slice spacing is unknown")
    })?;

    let layout = MosaicLayout {
        slices,
        tiles_per_side,
        tile_rows,
        tile_columns,
        normal: slice_normal,
        spacing,
        // dcm2niix v1.0.20260724 (nii_demosaic) steps `Columns * Rows / s` pixels
        // (integer division) from one mosaic row of tiles to the next; this is
        // `tile_rows * Columns` when Rows is a multiple of s, as in every mosaic a
        // scanner writes.
        row_stride: columns * rows / tiles_per_side,
    };
    let affine = first_slice_affine(&orientation, pixel_spacing, position, &layout, rows, columns);
    Ok((layout, affine, warnings))
}

/// `sSliceArray.lSize` from MrPhoenixProtocol in the CSA series header: the number
/// of slices the protocol prescribed.
fn slices_from_protocol(object: &InMemDicomObject) -> Option<f64> {
    let header = csa::series_header(object)?.ok()?;
    header.protocol_value("sSliceArray.lSize")?.parse().ok()
}

/// SpacingBetweenSlices when positive, else SliceThickness.
fn slice_spacing(object: &InMemDicomObject) -> Option<f64> {
    float(object, tags::SPACING_BETWEEN_SLICES)
        .filter(|s| *s > 0.0)
        .or_else(|| float(object, tags::SLICE_THICKNESS).filter(|s| *s > 0.0))
}

fn first_slice_affine(
    orientation: &[f64; 6],
    pixel_spacing: [f64; 2],
    position: [f64; 3],
    layout: &MosaicLayout,
    rows: usize,
    columns: usize,
) -> Affine {
    let side = layout.tiles_per_side as f64;
    let shift_columns = (columns as f64 - columns as f64 / side) / 2.0 * pixel_spacing[1];
    let shift_rows = (rows as f64 - rows as f64 / side) / 2.0 * pixel_spacing[0];
    let origin = [0, 1, 2].map(|d| position[d] + orientation[d] * shift_columns + orientation[3 + d] * shift_rows);
    let step = layout.normal.map(|c| c * layout.spacing);
    lps_to_ras(orientation, pixel_spacing, step, origin)
}

/// Pixel index in the mosaic of the first pixel of tile `t`.
fn tile_start(t: usize, layout: &MosaicLayout) -> usize {
    let (mosaic_row, mosaic_column) = (t / layout.tiles_per_side, t % layout.tiles_per_side);
    mosaic_row * layout.row_stride + mosaic_column * layout.tile_columns
}

/// Cuts the row-major mosaic (`columns` wide) into `[column, row, slice]`.
fn cut_tiles(mosaic: &[f32], columns: usize, layout: &MosaicLayout) -> ndarray::Array3<f32> {
    let mut data = ndarray::Array3::<f32>::zeros((layout.tile_columns, layout.tile_rows, layout.slices));
    for t in 0..layout.slices {
        let start = tile_start(t, layout);
        for row in 0..layout.tile_rows {
            for column in 0..layout.tile_columns {
                // Only a mosaic that is not a whole number of tiles can put a
                // tile pixel past the end; such pixels stay 0.
                if let Some(&v) = mosaic.get(start + row * columns + column) {
                    data[[column, row, t]] = v;
                }
            }
        }
    }
    data
}

/// The volumes of a 4-D mosaic series must share their geometry.
fn check_same_grid(image: &ImageHeader, first: &ImageHeader, series: &DicomSeries) -> Result<()> {
    let same = |a: Option<[f64; 3]>, b: Option<[f64; 3]>| match (a, b) {
        (Some(a), Some(b)) => (0..3).all(|d| (a[d] - b[d]).abs() < 1e-3),
        (a, b) => a.is_none() && b.is_none(),
    };
    if same(image.position, first.position) {
        return Ok(());
    }
    let offset = |h: &ImageHeader| match (h.orientation, h.position) {
        (Some(o), Some(p)) => dot(normal(&o), p),
        _ => 0.0,
    };
    Err(Error::file(
        &image.path,
        format!(
            "series {}: this mosaic is at {:.3} mm along the normal, the first ({}) at {:.3} mm; \
             mosaics of one series must share their position",
            series.id,
            offset(image),
            first.path.display(),
            offset(first)
        ),
    ))
}
