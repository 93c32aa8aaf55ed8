//! Enhanced (multi-frame) images: one file, many frames, each placed by its
//! functional groups. Per-frame PlanePositionSequence/PlaneOrientationSequence and
//! PixelMeasuresSequence take precedence over the shared groups, which take
//! precedence over top-level ImagePositionPatient/ImageOrientationPatient/PixelSpacing.
//!
//! An object with no orientation anywhere (no PlaneOrientationSequence and no
//! ImageOrientationPatient, which DICOM requires) gets the placeholder grid that
//! dcm2niix v1.0.20260724 writes for it. Its frames are in file order, with voxel sizes
//! PixelSpacing (else 1 mm) and SpacingBetweenSlices (else SliceThickness, else
//! 1 mm), and the affine that NIfTI readers derive from those sizes alone
//! (`diag(-dx, dy, dz)` centred on the grid, see [`placeholder_affine`]). The
//! series then carries a warning and is written with sform and qform codes 0, so
//! no reader takes the placement as real.

use dicom_object::{InMemDicomObject, Tag};
use ndarray::Array3;

use super::header::{first_item, float, floats, items, open, tags, ImageHeader};
use super::placement::{build_grid, Placement};
use super::series::{dot, normal, DicomSeries};
use super::{assemble, pixels, resample_warning, series_source, DicomOptions, Loaded};
use crate::geometry::Affine;
use crate::volume::Volume;
use crate::{Error, Result};

/// The orientation of an enhanced object (shared groups, then the first frame,
/// then top level), for metadata.
pub fn orientation(object: &InMemDicomObject) -> Option<[f64; 6]> {
    let per_frame = items(object, tags::PER_FRAME_FUNCTIONAL_GROUPS).first();
    frame_attribute(object, per_frame, tags::PLANE_ORIENTATION, tags::IMAGE_ORIENTATION_PATIENT)
}

/// `attribute` from the first item of `sequence` in the frame's groups, then in the
/// shared groups, then at top level.
fn frame_attribute<const N: usize>(
    object: &InMemDicomObject,
    frame: Option<&InMemDicomObject>,
    sequence: Tag,
    attribute: Tag,
) -> Option<[f64; N]> {
    let shared = first_item(object, tags::SHARED_FUNCTIONAL_GROUPS);
    [frame, shared]
        .into_iter()
        .flatten()
        .find_map(|groups| first_item(groups, sequence).and_then(|s| floats::<N>(s, attribute)))
        .or_else(|| floats::<N>(object, attribute))
}

pub(super) fn load(series: &DicomSeries, options: &DicomOptions) -> Result<Loaded> {
    let [image] = series.images.as_slice() else {
        return Err(Error::file(
            series_source(series),
            format!(
                "series {}: {} multi-frame files in one series; only one is supported",
                series.id,
                series.images.len()
            ),
        ));
    };
    let path = &image.path;
    let object = open(path, true)?;
    let per_frame = items(&object, tags::PER_FRAME_FUNCTIONAL_GROUPS);
    let has_orientation = (0..image.frames).any(|f| {
        frame_attribute::<6>(&object, per_frame.get(f), tags::PLANE_ORIENTATION, tags::IMAGE_ORIENTATION_PATIENT).is_some()
    });
    if !has_orientation {
        return load_without_orientation(series, image, &object);
    }

    let mut placed = Vec::with_capacity(image.frames);
    for f in 0..image.frames {
        let frame = per_frame.get(f);
        let orientation = frame_attribute::<6>(&object, frame, tags::PLANE_ORIENTATION, tags::IMAGE_ORIENTATION_PATIENT)
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "frame {f} has no orientation: ImageOrientationPatient is missing from \
                         PlaneOrientationSequence (per-frame and shared functional groups) and from the top level, \
                         so the frames cannot be placed"
                    ),
                )
            })?;
        let position = frame_attribute::<3>(&object, frame, tags::PLANE_POSITION, tags::IMAGE_POSITION_PATIENT)
            .ok_or_else(|| Error::file(path, format!("frame {f} has no ImagePositionPatient (PlanePositionSequence)")))?;
        let spacing = frame_attribute::<2>(&object, frame, tags::PIXEL_MEASURES, tags::PIXEL_SPACING)
            .ok_or_else(|| Error::file(path, format!("frame {f} has no PixelSpacing (PixelMeasuresSequence)")))?;
        placed.push((f, orientation, position, spacing));
    }

    let (_, orientation, _, spacing) = placed[0];
    if let Some((f, ..)) = placed.iter().find(|p| !same(&p.1, &orientation) || !same(&p.3, &spacing)) {
        return Err(Error::file(
            path,
            format!("frame {f} differs from frame 0 in orientation or pixel spacing; one grid cannot hold both"),
        ));
    }
    let n = normal(&orientation);
    placed.sort_by(|a, b| dot(a.2, n).total_cmp(&dot(b.2, n)).then(a.0.cmp(&b.0)));

    let placement = Placement {
        series_id: &series.id,
        source: path,
        orientation,
        pixel_spacing: spacing,
        positions: placed.iter().map(|p| p.2).collect(),
        single_slice_spacing: super::header::float(&object, tags::SPACING_BETWEEN_SLICES),
    };
    let grid = build_grid(&placement, options.allow_nonuniform)?;

    let mut frames = pixels::decode_frames(path, series.rows, series.columns)?;
    if frames.len() != image.frames {
        return Err(Error::file(
            path,
            format!("NumberOfFrames is {} but the pixel data holds {} frames", image.frames, frames.len()),
        ));
    }
    let ordered: Vec<Vec<f32>> = placed.iter().map(|p| std::mem::take(&mut frames[p.0])).collect();
    let warnings = resample_warning(&grid, ordered.len());
    let data = assemble(&ordered, series.rows, series.columns, &grid);
    Ok(Loaded {
        volumes: vec![Volume::new(data, grid.affine)],
        parameters: vec![image.parameters.clone()],
        warnings,
        placeholder_geometry: false,
    })
}

/// Frames in file order on the placeholder grid described in the module documentation.
fn load_without_orientation(series: &DicomSeries, image: &ImageHeader, object: &InMemDicomObject) -> Result<Loaded> {
    let path = &image.path;
    let per_frame = items(object, tags::PER_FRAME_FUNCTIONAL_GROUPS);
    let in_plane = frame_attribute::<2>(object, per_frame.first(), tags::PIXEL_MEASURES, tags::PIXEL_SPACING)
        .filter(|s| s.iter().all(|v| *v > 0.0))
        .unwrap_or([1.0, 1.0]);
    let slice = float(object, tags::SPACING_BETWEEN_SLICES)
        .filter(|s| *s > 0.0)
        .or_else(|| float(object, tags::SLICE_THICKNESS).filter(|s| *s > 0.0))
        .unwrap_or(1.0);
    // Voxel sizes along i (columns), j (rows), k (frames).
    let sizes = [in_plane[1], in_plane[0], slice];

    let frames = pixels::decode_frames(path, series.rows, series.columns)?;
    if frames.len() != image.frames {
        return Err(Error::file(
            path,
            format!("NumberOfFrames is {} but the pixel data holds {} frames", image.frames, frames.len()),
        ));
    }
    let mut data = Array3::<f32>::zeros((series.columns, series.rows, frames.len()));
    for (k, frame) in frames.iter().enumerate() {
        for row in 0..series.rows {
            for column in 0..series.columns {
                data[[column, row, k]] = frame[row * series.columns + column];
            }
        }
    }

    let shape = [series.columns, series.rows, frames.len()];
    let warning = format!(
        "ImageOrientationPatient (0020,0037) is missing from the file and its functional groups, so the \
         position and orientation of the frames are unknown; the image was written on a placeholder grid \
         ({} x {} x {} mm voxels, no rotation, centred on the origin) with sform and qform codes 0",
        sizes[0], sizes[1], sizes[2]
    );
    Ok(Loaded {
        volumes: vec![Volume::new(data, placeholder_affine(shape, sizes))],
        parameters: vec![image.parameters.clone()],
        warnings: vec![warning],
        placeholder_geometry: true,
    })
}

/// Returns the affine nibabel 5.4 reports for a NIfTI file with sform and qform codes 0
/// (`Nifti1Header.get_base_affine`): `diag(-dx, dy, dz)`, with the grid centre at
/// the origin.
pub fn placeholder_affine(shape: [usize; 3], sizes: [f64; 3]) -> Affine {
    let mut m = [[0.0; 4]; 4];
    for d in 0..3 {
        let sign = if d == 0 { -1.0 } else { 1.0 };
        m[d][d] = sign * sizes[d];
        m[d][3] = -sign * sizes[d] * (shape[d] as f64 - 1.0) / 2.0;
    }
    m[3][3] = 1.0;
    Affine(m)
}

fn same<const N: usize>(a: &[f64; N], b: &[f64; N]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}
