//! Voxel grid of a series: the RAS+ affine from DICOM's patient geometry, and the
//! check that slices are evenly spaced.
//!
//! Voxel order is `[i = column index, j = row index, k = slice]`: `i` runs along the
//! row direction cosine (ImageOrientationPatient[0..3]) in steps of PixelSpacing[1]
//! (the spacing between columns), `j` along the column direction cosine
//! (ImageOrientationPatient[3..6]) in steps of PixelSpacing[0] (the spacing between
//! rows), and `k` along row cosine x column cosine, in ascending position. This is
//! the order dcm2niix and nibabel build before their own flips. DICOM's LPS+
//! coordinates become RAS+ by negating x and y.

use std::path::Path;

use super::series::{dot, normal};
use crate::geometry::Affine;
use crate::{Error, Result};

/// Relative deviation of one slice step from the median step above which a
/// series counts as unevenly spaced.
pub const SPACING_TOLERANCE: f64 = 0.01;

/// A step larger than this multiple of the median step is reported as missing slices.
pub const GAP_FACTOR: f64 = 1.5;

/// Slice positions of a series, in ascending order along the normal.
pub struct Placement<'a> {
    /// Series id, for messages.
    pub series_id: &'a str,
    /// Folder or file the messages name.
    pub source: &'a Path,
    pub orientation: [f64; 6],
    /// PixelSpacing: between rows, then between columns (mm).
    pub pixel_spacing: [f64; 2],
    /// ImagePositionPatient of each slice (LPS mm), sorted along the normal.
    pub positions: Vec<[f64; 3]>,
    /// Slice spacing for a single slice: SpacingBetweenSlices, else SliceThickness.
    pub single_slice_spacing: Option<f64>,
}

/// Recipe for output slice `k` from the input slices: `value = (1 - w) * below + w * above`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceBlend {
    pub below: usize,
    pub above: usize,
    pub weight: f64,
}

/// The voxel grid a series is written on.
#[derive(Debug, Clone)]
pub struct Grid {
    pub affine: Affine,
    /// `None` when the input slices are the output slices; otherwise one blend per output slice.
    pub resample: Option<Vec<SliceBlend>>,
}

/// Builds the grid: the affine, and a resampling plan onto uniform spacing when
/// `allow_nonuniform` is set and the spacing is uneven (otherwise an error that
/// names the series, where the irregular step is and how large it is).
pub fn build_grid(p: &Placement, allow_nonuniform: bool) -> Result<Grid> {
    let n = normal(&p.orientation);
    let norm = dot(n, n).sqrt();
    if !(0.99..=1.01).contains(&norm) {
        return Err(Error::file(
            p.source,
            format!(
                "series {}: ImageOrientationPatient {:?} is not two orthogonal unit vectors",
                p.series_id, p.orientation
            ),
        ));
    }
    if p.pixel_spacing.iter().any(|s| *s <= 0.0) {
        return Err(Error::file(
            p.source,
            format!("series {}: invalid PixelSpacing {:?}", p.series_id, p.pixel_spacing),
        ));
    }

    let first = p.positions[0];
    if p.positions.len() == 1 {
        let step = p.single_slice_spacing.filter(|s| *s > 0.0).unwrap_or(1.0);
        let affine = lps_to_ras(&p.orientation, p.pixel_spacing, n.map(|c| c * step), first);
        return Ok(Grid { affine, resample: None });
    }

    let offsets: Vec<f64> = p.positions.iter().map(|&x| dot(x, n)).collect();
    let steps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
    check_distinct(p, &offsets, &steps)?;
    let median = median(&steps);

    let irregular = steps
        .iter()
        .position(|s| ((s - median) / median).abs() > SPACING_TOLERANCE);
    let Some(at) = irregular else {
        let last = p.positions[p.positions.len() - 1];
        let count = (p.positions.len() - 1) as f64;
        let step = [0, 1, 2].map(|d| (last[d] - first[d]) / count);
        let affine = lps_to_ras(&p.orientation, p.pixel_spacing, step, first);
        return Ok(Grid { affine, resample: None });
    };

    if !allow_nonuniform {
        return Err(irregular_spacing_error(p, &offsets, &steps, at, median));
    }
    let (blends, step) = uniform_blends(&offsets, median);
    let affine = lps_to_ras(&p.orientation, p.pixel_spacing, n.map(|c| c * step), first);
    Ok(Grid { affine, resample: Some(blends) })
}

/// Two images at one position mean several volumes (time points, b-values) in one series.
fn check_distinct(p: &Placement, offsets: &[f64], steps: &[f64]) -> Result<()> {
    let Some(k) = steps.iter().position(|s| *s < 1e-4) else {
        return Ok(());
    };
    Err(Error::file(
        p.source,
        format!(
            "series {}: slices {k} and {} are both at {:.3} mm along the slice normal; \
             the series holds several volumes (time points, diffusion directions or echoes), \
             which is not supported",
            p.series_id,
            k + 1,
            offsets[k]
        ),
    ))
}

fn irregular_spacing_error(p: &Placement, offsets: &[f64], steps: &[f64], at: usize, median: f64) -> Error {
    let step = steps[at];
    let problem = if step > GAP_FACTOR * median {
        format!(
            "missing slices: a gap of {step:.3} mm ({:.1} x the median step {median:.3} mm) \
             between slice {at} ({:.3} mm along the normal) and slice {} ({:.3} mm)",
            step / median,
            offsets[at],
            at + 1,
            offsets[at + 1]
        )
    } else {
        format!(
            "uneven slice spacing: step {step:.3} mm between slice {at} ({:.3} mm along the normal) \
             and slice {}, the median step is {median:.3} mm (tolerance {:.0} %)",
            offsets[at],
            at + 1,
            SPACING_TOLERANCE * 100.0
        )
    };
    Error::file(
        p.source,
        format!(
            "series {}: {problem}; allow non-uniform spacing (--allow-nonuniform) to resample to uniform spacing",
            p.series_id
        ),
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Linear interpolation along the normal onto slices `median` apart, from the first
/// slice to the last (the last output slice may end short of the last input slice
/// by less than one step). Returns the blends and the uniform step in mm.
fn uniform_blends(offsets: &[f64], median: f64) -> (Vec<SliceBlend>, f64) {
    let start = offsets[0];
    let extent = offsets[offsets.len() - 1] - start;
    let count = (extent / median).round() as usize + 1;
    let step = if count > 1 { extent / (count - 1) as f64 } else { median };

    let mut blends = Vec::with_capacity(count);
    let mut below = 0;
    for k in 0..count {
        let target = start + k as f64 * step;
        while below + 2 < offsets.len() && offsets[below + 1] <= target {
            below += 1;
        }
        let above = (below + 1).min(offsets.len() - 1);
        let span = offsets[above] - offsets[below];
        let weight = if span > 0.0 {
            ((target - offsets[below]) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        blends.push(SliceBlend { below, above, weight });
    }
    (blends, step)
}

/// The RAS+ affine from LPS geometry: columns are the row cosine times the column
/// spacing, the column cosine times the row spacing, and the slice step.
pub fn lps_to_ras(orientation: &[f64; 6], pixel_spacing: [f64; 2], slice_step: [f64; 3], origin: [f64; 3]) -> Affine {
    let row_cosine = [orientation[0], orientation[1], orientation[2]];
    let column_cosine = [orientation[3], orientation[4], orientation[5]];
    let mut m = [[0.0; 4]; 4];
    for d in 0..3 {
        let flip = if d < 2 { -1.0 } else { 1.0 };
        m[d][0] = flip * row_cosine[d] * pixel_spacing[1];
        m[d][1] = flip * column_cosine[d] * pixel_spacing[0];
        m[d][2] = flip * slice_step[d];
        m[d][3] = flip * origin[d];
    }
    m[3][3] = 1.0;
    Affine(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_blends_fill_one_missing_slice() {
        let (blends, step) = uniform_blends(&[0.0, 2.0, 6.0, 8.0], 2.0);
        assert_eq!(step, 2.0);
        assert_eq!(blends.len(), 5);
        assert_eq!(blends[2], SliceBlend { below: 1, above: 2, weight: 0.5 });
        assert_eq!(blends[4], SliceBlend { below: 2, above: 3, weight: 1.0 });
    }

    #[test]
    fn lps_to_ras_axial_negates_x_and_y() {
        let a = lps_to_ras(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1.2, 1.5], [0.0, 0.0, 2.0], [10.0, 20.0, 30.0]);
        assert_eq!(a.0[0], [-1.5, 0.0, 0.0, -10.0]);
        assert_eq!(a.0[1], [0.0, -1.2, 0.0, -20.0]);
        assert_eq!(a.0[2], [0.0, 0.0, 2.0, 30.0]);
    }
}
