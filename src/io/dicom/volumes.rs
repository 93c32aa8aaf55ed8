//! 4-D series: several images at each slice position of one series (echoes of a
//! multi-echo scan, time points of a dynamic scan, diffusion weightings).
//!
//! Images at one position (within [`SAME_POSITION_MM`] along the slice normal) are
//! ordered by echo number, echo time, b-value, gradient direction, temporal
//! position, trigger time, acquisition number and instance number, and the n-th
//! image of every position goes into volume n. Every position must hold the same
//! number of images, and the images of one volume must agree in echo number, echo
//! time, b-value, gradient direction and temporal position. Otherwise the slices
//! cannot be matched into volumes, and loading fails. Two images at one position
//! that agree in all of these attributes and in trigger time and acquisition
//! number are duplicates, which is an error too.

use std::cmp::Ordering;
use std::path::Path;

use super::header::ImageHeader;
use super::series::slice_offset;
use crate::{Error, Result};

/// Images whose positions along the slice normal differ by less than this (mm)
/// are at the same position.
pub const SAME_POSITION_MM: f64 = 1e-3;

/// The attributes that tell apart the volumes of a 4-D series, as stored in DICOM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeParameters {
    /// EchoNumbers (0018,0086).
    pub echo_number: Option<i64>,
    /// EchoTime (0018,0081), ms.
    pub echo_time: Option<f64>,
    /// TemporalPositionIdentifier (0020,0100).
    pub temporal_position: Option<i64>,
    /// TriggerTime (0018,1060), ms.
    pub trigger_time: Option<f64>,
    /// AcquisitionNumber (0020,0012).
    pub acquisition_number: Option<i64>,
    /// Diffusion b-value, s/mm².
    pub b_value: Option<f64>,
    /// Diffusion gradient direction, unit vector in LPS patient coordinates.
    pub gradient: Option<[f64; 3]>,
}

impl VolumeParameters {
    /// Returns whether two images can belong to one volume: equal echo, diffusion and temporal position.
    fn same_volume(&self, other: &Self) -> bool {
        self.echo_number == other.echo_number
            && self.echo_time == other.echo_time
            && self.b_value == other.b_value
            && self.gradient == other.gradient
            && self.temporal_position == other.temporal_position
    }
}

/// Orders images of one slice position into volume order.
pub fn volume_order(a: &ImageHeader, b: &ImageHeader) -> Ordering {
    let (p, q) = (&a.parameters, &b.parameters);
    let float = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (x, y) => x.is_some().cmp(&y.is_some()),
    };
    let gradient = |x: Option<[f64; 3]>, y: Option<[f64; 3]>| match (x, y) {
        (Some(x), Some(y)) => (0..3).map(|d| x[d].total_cmp(&y[d])).find(|o| o.is_ne()).unwrap_or(Ordering::Equal),
        (x, y) => x.is_some().cmp(&y.is_some()),
    };
    p.echo_number
        .cmp(&q.echo_number)
        .then_with(|| float(p.echo_time, q.echo_time))
        .then_with(|| float(p.b_value, q.b_value))
        .then_with(|| gradient(p.gradient, q.gradient))
        .then_with(|| p.temporal_position.cmp(&q.temporal_position))
        .then_with(|| float(p.trigger_time, q.trigger_time))
        .then_with(|| p.acquisition_number.cmp(&q.acquisition_number))
        .then_with(|| a.instance_number.cmp(&b.instance_number))
        .then_with(|| a.path.cmp(&b.path))
}

/// Groups images sorted along the normal into slice positions.
fn positions(images: &[ImageHeader]) -> Vec<Vec<&ImageHeader>> {
    let mut groups: Vec<Vec<&ImageHeader>> = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for image in images {
        let offset = slice_offset(image);
        match groups.last_mut() {
            Some(group) if offset - last < SAME_POSITION_MM => group.push(image),
            _ => groups.push(vec![image]),
        }
        last = offset;
    }
    groups
}

/// Number of volumes of single-frame images sorted along the normal: the number of
/// images at the first slice position (1 when any image lacks a position).
pub fn count(images: &[ImageHeader]) -> usize {
    if images.iter().any(|h| h.orientation.is_none() || h.position.is_none()) {
        return 1;
    }
    positions(images).first().map_or(1, Vec::len)
}

/// Splits single-frame images sorted along the normal into volumes, each a list of
/// images in slice order. `source` and `series_id` name the series in errors.
pub fn split<'a>(images: &'a [ImageHeader], source: &Path, series_id: &str) -> Result<Vec<Vec<&'a ImageHeader>>> {
    let mut by_position = positions(images);
    let n_volumes = by_position[0].len();
    if n_volumes == 1 {
        return Ok(vec![images.iter().collect()]);
    }

    for (k, group) in by_position.iter_mut().enumerate() {
        if group.len() != n_volumes {
            return Err(Error::file(
                source,
                format!(
                    "series {series_id}: slice position {k} ({:.3} mm along the normal) has {} images, \
                     the first position has {n_volumes}; the images cannot be split into volumes",
                    slice_offset(group[0]),
                    group.len()
                ),
            ));
        }
        group.sort_by(|a, b| volume_order(a, b));
        if let Some(pair) = group.windows(2).find(|w| w[0].parameters == w[1].parameters) {
            return Err(Error::file(
                &pair[1].path,
                format!(
                    "series {series_id}: same slice position ({:.3} mm along the normal) and the same echo, \
                     diffusion, temporal and acquisition attributes as {}; remove the duplicate file",
                    slice_offset(pair[0]),
                    pair[0].path.display()
                ),
            ));
        }
    }

    let volumes: Vec<Vec<&ImageHeader>> =
        (0..n_volumes).map(|v| by_position.iter().map(|group| group[v]).collect()).collect();
    for (v, volume) in volumes.iter().enumerate() {
        if let Some(odd) = volume.iter().find(|h| !h.parameters.same_volume(&volume[0].parameters)) {
            return Err(Error::file(
                &odd.path,
                format!(
                    "series {series_id}: volume {v} would mix images with different echo, diffusion or \
                     temporal attributes ({:?} and {:?}); the images cannot be split into volumes",
                    volume[0].parameters, odd.parameters
                ),
            ));
        }
    }
    Ok(volumes)
}
