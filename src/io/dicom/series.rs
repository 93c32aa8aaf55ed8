//! Grouping DICOM image files into series, splitting series whose images cannot
//! share one voxel grid, ordering slices along the slice normal, and naming series.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::header::{classify_file, FileKind, ImageHeader};
use crate::{Error, Result};

/// One series: images sharing SeriesInstanceUID, orientation and Rows/Columns.
/// Several images at one slice position are volumes of a 4-D series
/// ([`super::volumes`]).
#[derive(Debug, Clone)]
pub struct DicomSeries {
    /// Stable id, unique within one scan (rules in the module documentation).
    pub id: String,
    pub series_uid: String,
    pub number: Option<i64>,
    pub description: String,
    pub rows: usize,
    pub columns: usize,
    /// The files, slices in ascending position along the slice normal when every
    /// file has a position and orientation, otherwise sorted by path.
    pub files: Vec<PathBuf>,
    pub(crate) images: Vec<ImageHeader>,
    /// Files skipped because an earlier file (by path) has the same SOPInstanceUID.
    pub duplicates: Vec<PathBuf>,
}

impl DicomSeries {
    /// ImageOrientationPatient shared by the images (LPS direction cosines).
    pub fn orientation(&self) -> Option<[f64; 6]> {
        self.images.first().and_then(|h| h.orientation)
    }

    /// Number of 2-D images: files times frames (mosaic tiles are not counted).
    /// For a 4-D series this counts the images of all volumes.
    pub fn image_count(&self) -> usize {
        self.images.iter().map(|h| h.frames).sum()
    }

    /// Number of volumes, from the headers: one per file for mosaics, one for a
    /// multi-frame object, else the number of images at the first slice position.
    pub fn volume_count(&self) -> usize {
        if self.is_mosaic() {
            self.images.len()
        } else if self.is_multiframe() {
            1
        } else {
            super::volumes::count(&self.images)
        }
    }

    pub fn is_mosaic(&self) -> bool {
        self.images.iter().any(ImageHeader::is_mosaic)
    }

    pub fn is_multiframe(&self) -> bool {
        self.images.iter().any(|h| h.frames > 1 || h.enhanced)
    }
}

/// The series found among a set of files, and the DICOM files that could not be read.
#[derive(Debug, Default)]
pub struct DicomScan {
    pub series: Vec<DicomSeries>,
    /// One error per DICOM file whose header could not be parsed, naming the file.
    pub unreadable: Vec<Error>,
}

/// Scans `dir` and everything below it. Hidden entries (name starting with `.`) are
/// skipped, as are files that are not DICOM, DICOMDIR files and non-image objects.
pub fn scan_folder(dir: &Path) -> Result<DicomScan> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    Ok(scan_files(&files))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // file_type does not follow links, so a link back up the tree cannot loop.
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if file_type.is_dir() {
            collect_files(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads the headers of `paths` (in parallel) and groups the images into series.
pub fn scan_files(paths: &[PathBuf]) -> DicomScan {
    let results: Vec<Result<FileKind>> = paths.par_iter().map(|p| classify_file(p)).collect();

    let mut scan = DicomScan::default();
    let mut images = Vec::new();
    for result in results {
        match result {
            Ok(FileKind::Image(header)) => images.push(*header),
            Ok(FileKind::Ignored) => {}
            Err(e) => scan.unreadable.push(e),
        }
    }
    scan.series = group_images(images);
    scan
}

/// Key of the grid an image belongs to. Orientation is compared after rounding
/// the cosines to 1e-4, because scanners write them with limited decimals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GridKey {
    orientation: Option<[i64; 6]>,
    rows: usize,
    columns: usize,
}

fn grid_key(h: &ImageHeader) -> GridKey {
    GridKey {
        orientation: h.orientation.map(|o| o.map(|c| (c * 1e4).round() as i64)),
        rows: h.rows,
        columns: h.columns,
    }
}

fn group_images(mut images: Vec<ImageHeader>) -> Vec<DicomSeries> {
    // One image stored in several files (same SOPInstanceUID) is kept once, from the first path.
    images.sort_by(|a, b| a.path.cmp(&b.path));
    let mut seen = HashSet::new();
    let mut duplicates: HashMap<String, Vec<PathBuf>> = HashMap::new();
    images.retain(|h| match &h.sop_instance_uid {
        Some(uid) if !seen.insert(uid.clone()) => {
            duplicates.entry(h.series_uid.clone()).or_default().push(h.path.clone());
            false
        }
        _ => true,
    });

    // BTreeMap keeps series in UID order and sub-groups in key order: deterministic.
    let mut by_uid: BTreeMap<String, BTreeMap<GridKey, Vec<ImageHeader>>> = BTreeMap::new();
    for image in images {
        by_uid
            .entry(image.series_uid.clone())
            .or_default()
            .entry(grid_key(&image))
            .or_default()
            .push(image);
    }

    let mut series = Vec::new();
    for (uid, groups) in by_uid {
        let parts = groups.len();
        for (index, mut images) in groups.into_values().enumerate() {
            sort_along_normal(&mut images);
            let first = &images[0];
            let part = (parts > 1).then(|| format!("part{}", index + 1));
            series.push(Pending {
                part,
                series: DicomSeries {
                    id: String::new(),
                    series_uid: uid.clone(),
                    number: first.series_number,
                    description: first.description.clone(),
                    rows: first.rows,
                    columns: first.columns,
                    files: images.iter().map(|h| h.path.clone()).collect(),
                    images,
                    duplicates: if index == 0 { duplicates.remove(&uid).unwrap_or_default() } else { Vec::new() },
                },
            });
        }
    }
    assign_ids(series)
}

/// Orders images by their position along the slice normal (row cosine x column
/// cosine), ties and images without geometry by path.
fn sort_along_normal(images: &mut [ImageHeader]) {
    images.sort_by(|a, b| a.path.cmp(&b.path));
    if images.iter().any(|h| h.orientation.is_none() || h.position.is_none()) {
        return;
    }
    images.sort_by(|a, b| {
        let (da, db) = (slice_offset(a), slice_offset(b));
        da.total_cmp(&db).then_with(|| a.path.cmp(&b.path))
    });
}

/// Distance of the image plane from the origin along its normal, in mm.
pub(crate) fn slice_offset(h: &ImageHeader) -> f64 {
    match (h.orientation, h.position) {
        (Some(o), Some(p)) => dot(normal(&o), p),
        _ => 0.0,
    }
}

/// Slice normal: row cosine x column cosine.
pub(crate) fn normal(o: &[f64; 6]) -> [f64; 3] {
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    [
        r[1] * c[2] - r[2] * c[1],
        r[2] * c[0] - r[0] * c[2],
        r[0] * c[1] - r[1] * c[0],
    ]
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

struct Pending {
    part: Option<String>,
    series: DicomSeries,
}

/// Replaces every character outside `[A-Za-z0-9.-]` with `_`, collapsing runs and
/// trimming `_` at both ends.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if keep {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

fn base_id(series: &DicomSeries) -> String {
    let number = series.number.map_or_else(|| "na".to_string(), |n| n.to_string());
    let description = sanitize(&series.description);
    if description.is_empty() {
        number
    } else {
        format!("{number}_{description}")
    }
}

fn assign_ids(pending: Vec<Pending>) -> Vec<DicomSeries> {
    let bases: Vec<String> = pending.iter().map(|p| base_id(&p.series)).collect();
    let mut uids_per_base: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (base, p) in bases.iter().zip(&pending) {
        uids_per_base.entry(base).or_default().insert(&p.series.series_uid);
    }

    let mut ids: Vec<String> = Vec::with_capacity(pending.len());
    for (base, p) in bases.iter().zip(&pending) {
        let mut id = base.clone();
        if uids_per_base[base.as_str()].len() > 1 {
            let uid = &p.series.series_uid;
            let tail = &uid[uid.len().saturating_sub(8)..];
            id = format!("{id}_{}", sanitize(tail));
        }
        if let Some(part) = &p.part {
            id = format!("{id}_{part}");
        }
        ids.push(id);
    }
    make_unique(&mut ids);

    pending
        .into_iter()
        .zip(ids)
        .map(|(p, id)| DicomSeries { id, ..p.series })
        .collect()
}

/// Numbers later holders of an id that is still taken (`_2`, `_3`, ...); only
/// UIDs equal in their last 8 characters get here.
fn make_unique(ids: &mut [String]) {
    let mut seen = HashSet::new();
    for id in ids.iter_mut() {
        let mut candidate = id.clone();
        let mut n = 2;
        while !seen.insert(candidate.clone()) {
            candidate = format!("{id}_{n}");
            n += 1;
        }
        *id = candidate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_keeps_safe_characters() {
        assert_eq!(sanitize("SYNTH T1 AX 1.2mm"), "SYNTH_T1_AX_1.2mm");
        assert_eq!(sanitize("  t2/tse (tra) "), "t2_tse_tra");
        assert_eq!(sanitize("../x"), ".._x");
    }

    #[test]
    fn normal_of_axial_is_plus_z() {
        assert_eq!(normal(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]);
    }
}
