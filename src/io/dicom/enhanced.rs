//! Enhanced (multi-frame) images: one file, many frames, each placed by its
//! functional groups. Per-frame PlanePositionSequence/PlaneOrientationSequence and
//! PixelMeasuresSequence take precedence over the shared groups, which take
//! precedence over top-level ImagePositionPatient/ImageOrientationPatient/PixelSpacing.

use dicom_object::{InMemDicomObject, Tag};

use super::header::{first_item, floats, items, open, tags};
use super::placement::{build_grid, Placement};
use super::series::{dot, normal, DicomSeries};
use super::{assemble, pixels, resample_warning, series_source, DicomOptions};
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

pub fn load(series: &DicomSeries, options: &DicomOptions) -> Result<(Volume, Vec<String>)> {
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
    Ok((Volume::new(data, grid.affine), warnings))
}

fn same<const N: usize>(a: &[f64; N], b: &[f64; N]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}
