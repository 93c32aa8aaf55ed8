//! Segmentation training cases: the case lists (a CSV or an nnU-Net v2 raw dataset),
//! loading a case onto one RAS+ grid at a target spacing, and the split into training
//! and validation cases.
//!
//! A loaded [`Case`] holds z-scored image channels and a label map of class indices
//! `0..n_classes` (0 is background) on the same voxel grid, plus the voxel positions
//! of each foreground class so that patches can be centred on foreground cheaply.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::io::load_volume;
use crate::preprocess::{resample_to_spacing, to_ras, zscore_nonzero, Interp};
use crate::volume::Volume;

/// Column of a case list CSV that names the case; without it the label file name is the id.
pub const ID_COLUMN: &str = "id";

/// Column of a case list CSV that fixes the subset of each case (`train` or `val`).
pub const SPLIT_COLUMN: &str = "split";

/// Largest tolerated difference between two affine elements (mm, or mm per voxel) for
/// image and label files to count as one grid. Values stored as float32 in NIfTI
/// headers round to about 1e-5 mm, well inside it.
const GRID_TOLERANCE: f64 = 1e-3;

/// Largest number of classes, so that class indices fit the u16 range.
pub const MAX_CLASSES: usize = 1 << 16;

/// The part of training a case is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    Train,
    Validation,
}

/// One case on disk: its image channels in channel order and its label map.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseSource {
    pub id: String,
    pub images: Vec<PathBuf>,
    pub label: PathBuf,
    /// Subset fixed by the case list (a CSV `split` column); `None` leaves the choice to
    /// [`split_cases`].
    pub subset: Option<Subset>,
}

/// Cases of a dataset with the names of their channels and classes.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseList {
    /// Channel names in channel order: CSV column names, or nnU-Net's `channel_names`.
    pub channel_names: Vec<String>,
    /// Class names by label value, from nnU-Net's `dataset.json`; empty when the source
    /// names no classes.
    pub class_names: BTreeMap<u32, String>,
    pub cases: Vec<CaseSource>,
}

impl CaseList {
    /// Number of classes the dataset declares (largest label value + 1), when it names them.
    pub fn declared_classes(&self) -> Option<usize> {
        self.class_names.keys().max().map(|max| *max as usize + 1)
    }
}

/// Reads a case list CSV with a header row.
///
/// The column `label_column` holds label map paths, the optional columns `id` and
/// `split` (`train` or `val`) name the case and fix its subset, and every other column
/// is an image channel, in column order (`t1,flair,label` gives two channels). Relative
/// paths are resolved against the CSV's folder.
pub fn read_csv(path: &Path, label_column: &str) -> Result<CaseList> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let columns = CsvColumns::find(path, &header, label_column)?;
    let folder = path.parent().unwrap_or(Path::new("."));

    let mut cases = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(path, e))?;
        // Row 1 is the header, so data rows start at 2 as a spreadsheet numbers them.
        let row = index + 2;
        cases.push(columns.case(path, folder, &record, row)?);
    }
    if cases.is_empty() {
        return Err(Error::file(path, "case list has a header but no cases"));
    }

    let channel_names = columns.images.iter().map(|c| header[*c].clone()).collect();
    Ok(CaseList {
        channel_names,
        class_names: BTreeMap::new(),
        cases,
    })
}

fn csv_error(path: &Path, error: csv::Error) -> Error {
    match error.kind() {
        csv::ErrorKind::Io(_) => match error.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(path, io),
            _ => unreachable!("kind checked above"),
        },
        _ => Error::file(path, format!("invalid CSV: {error}")),
    }
}

/// Positions of the case list columns in the header.
struct CsvColumns {
    names: Vec<String>,
    label: usize,
    id: Option<usize>,
    split: Option<usize>,
    images: Vec<usize>,
}

impl CsvColumns {
    fn find(path: &Path, header: &[String], label_column: &str) -> Result<CsvColumns> {
        let mut seen = HashSet::new();
        if let Some(duplicate) = header.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(Error::file(
                path,
                format!("column '{duplicate}' appears twice in the header; rename one"),
            ));
        }

        let position = |name: &str| header.iter().position(|h| h == name);
        let label = position(label_column).ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "no label column '{label_column}' in the header ({}); name the label column",
                    header.join(",")
                ),
            )
        })?;
        let id = position(ID_COLUMN);
        let split = position(SPLIT_COLUMN);
        let images: Vec<usize> = (0..header.len())
            .filter(|c| *c != label && Some(*c) != id && Some(*c) != split)
            .collect();
        if images.is_empty() {
            return Err(Error::file(
                path,
                format!(
                    "no image column besides '{label_column}', '{ID_COLUMN}' and '{SPLIT_COLUMN}'; \
                     add one column per input channel"
                ),
            ));
        }
        Ok(CsvColumns {
            names: header.to_vec(),
            label,
            id,
            split,
            images,
        })
    }

    fn case(
        &self,
        path: &Path,
        folder: &Path,
        record: &csv::StringRecord,
        row: usize,
    ) -> Result<CaseSource> {
        let cell = |column: usize| -> Result<&str> {
            match record.get(column) {
                Some(value) if !value.is_empty() => Ok(value),
                _ => Err(Error::file(
                    path,
                    format!("row {row}: column '{}' is empty", self.names[column]),
                )),
            }
        };

        let images = self
            .images
            .iter()
            .map(|c| cell(*c).map(|value| folder.join(value)))
            .collect::<Result<Vec<_>>>()?;
        let label = folder.join(cell(self.label)?);
        let id = match self.id {
            Some(column) => cell(column)?.to_string(),
            None => nifti_stem(&label),
        };
        let subset = match self.split {
            Some(column) => Some(parse_subset(cell(column)?).ok_or_else(|| {
                Error::file(
                    path,
                    format!(
                        "row {row}: split '{}' is invalid; use 'train' or 'val'",
                        record.get(column).unwrap_or_default()
                    ),
                )
            })?),
            None => None,
        };
        Ok(CaseSource {
            id,
            images,
            label,
            subset,
        })
    }
}

fn parse_subset(value: &str) -> Option<Subset> {
    match value.to_ascii_lowercase().as_str() {
        "train" | "training" => Some(Subset::Train),
        "val" | "validation" => Some(Subset::Validation),
        _ => None,
    }
}

/// File name without `.nii.gz` or `.nii`.
fn nifti_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ending in [".nii.gz", ".nii"] {
        if let Some(stem) = name.strip_suffix(ending) {
            return stem.to_string();
        }
    }
    name
}

/// Reads an nnU-Net v2 raw dataset folder: `imagesTr/CASE_XXXX<ending>` (XXXX the
/// 4-digit channel index) and `labelsTr/CASE<ending>`.
///
/// `dataset.json`, when present, supplies `channel_names`, `labels` (name to value)
/// and `file_ending` (default `.nii.gz`). Without it the channel count is the largest
/// channel index found plus one. Every case must have every channel and a label file.
/// Region-based label definitions (a list of values for one name) are rejected.
pub fn read_nnunet(folder: &Path) -> Result<CaseList> {
    let description = read_dataset_json(folder)?;
    let ending = description.file_ending.as_deref().unwrap_or(".nii.gz");
    let images_folder = folder.join("imagesTr");
    let channels_by_case = list_channel_files(&images_folder, ending)?;
    if channels_by_case.is_empty() {
        return Err(Error::file(
            &images_folder,
            format!("no image files named CASE_XXXX{ending}; is this an nnU-Net v2 raw dataset?"),
        ));
    }

    let found_channels = channels_by_case
        .values()
        .flat_map(|channels| channels.iter().copied())
        .max()
        .map_or(0, |max| max + 1);
    let channel_names = match description.channel_names {
        Some(names) => names,
        None => (0..found_channels).map(|c| format!("{c:04}")).collect(),
    };

    let mut cases = Vec::new();
    for (id, channels) in &channels_by_case {
        let images: Vec<PathBuf> = (0..channel_names.len())
            .map(|c| images_folder.join(format!("{id}_{c:04}{ending}")))
            .collect();
        for (c, image) in images.iter().enumerate() {
            if !channels.contains(&c) {
                return Err(Error::file(
                    image,
                    format!("image file not found: case {id} lacks channel {c}"),
                ));
            }
        }
        if let Some(extra) = channels.iter().find(|c| **c >= channel_names.len()) {
            return Err(Error::file(
                images_folder.join(format!("{id}_{extra:04}{ending}")),
                format!(
                    "channel {extra} is beyond the {} channels that dataset.json names",
                    channel_names.len()
                ),
            ));
        }

        let label = folder.join("labelsTr").join(format!("{id}{ending}"));
        if !label.is_file() {
            return Err(Error::file(
                &label,
                format!("label file not found for case {id}"),
            ));
        }
        cases.push(CaseSource {
            id: id.clone(),
            images,
            label,
            subset: None,
        });
    }

    Ok(CaseList {
        channel_names,
        class_names: description.class_names,
        cases,
    })
}

/// What nnU-Net's `dataset.json` contributes.
#[derive(Default)]
struct DatasetDescription {
    channel_names: Option<Vec<String>>,
    class_names: BTreeMap<u32, String>,
    file_ending: Option<String>,
}

fn read_dataset_json(folder: &Path) -> Result<DatasetDescription> {
    let path = folder.join("dataset.json");
    if !path.is_file() {
        return Ok(DatasetDescription::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))?;

    let channel_names = match json.get("channel_names").or_else(|| json.get("modality")) {
        Some(value) => Some(parse_channel_names(&path, value)?),
        None => None,
    };
    let class_names = match json.get("labels") {
        Some(value) => parse_class_names(&path, value)?,
        None => BTreeMap::new(),
    };
    let file_ending = match json.get("file_ending") {
        Some(serde_json::Value::String(ending)) => Some(ending.clone()),
        Some(other) => {
            return Err(Error::file(
                &path,
                format!("file_ending {other} is not a string such as \".nii.gz\""),
            ))
        }
        None => None,
    };
    Ok(DatasetDescription {
        channel_names,
        class_names,
        file_ending,
    })
}

/// Parses `{"0": "T1", "1": "FLAIR"}`; the keys must be exactly 0..n.
fn parse_channel_names(path: &Path, value: &serde_json::Value) -> Result<Vec<String>> {
    let invalid = |why: String| Error::file(path, format!("channel_names {why}"));
    let map = value
        .as_object()
        .ok_or_else(|| invalid("is not an object such as {\"0\": \"T1\"}".into()))?;

    let mut by_index = BTreeMap::new();
    for (key, name) in map {
        let index: usize = key
            .parse()
            .map_err(|_| invalid(format!("key '{key}' is not a channel index")))?;
        let name = name
            .as_str()
            .ok_or_else(|| invalid(format!("entry {key} is not a string")))?;
        by_index.insert(index, name.to_string());
    }
    if by_index.keys().copied().ne(0..by_index.len()) {
        return Err(invalid(format!(
            "keys {:?} are not the indices 0..{}",
            by_index.keys().collect::<Vec<_>>(),
            by_index.len()
        )));
    }
    if by_index.is_empty() {
        return Err(invalid("is empty; name at least one channel".into()));
    }
    Ok(by_index.into_values().collect())
}

/// Parses `{"background": 0, "tumour": 1}` into value → name.
fn parse_class_names(path: &Path, value: &serde_json::Value) -> Result<BTreeMap<u32, String>> {
    let map = value
        .as_object()
        .ok_or_else(|| Error::file(path, "labels is not an object such as {\"background\": 0}"))?;
    let mut classes = BTreeMap::new();
    for (name, label) in map {
        let Some(label) = label.as_u64().and_then(|v| u32::try_from(v).ok()) else {
            return Err(Error::file(
                path,
                format!(
                    "label '{name}' has value {label}, not one class index; \
                     region-based labels (lists of values) are not supported"
                ),
            ));
        };
        if let Some(other) = classes.insert(label, name.clone()) {
            return Err(Error::file(
                path,
                format!("labels '{other}' and '{name}' share the value {label}"),
            ));
        }
    }
    Ok(classes)
}

/// Groups `CASE_XXXX<ending>` files by case id, with the channel indices found.
fn list_channel_files(folder: &Path, ending: &str) -> Result<BTreeMap<String, Vec<usize>>> {
    let entries = std::fs::read_dir(folder).map_err(|e| Error::io(folder, e))?;
    let mut cases: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(folder, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(ending) {
            continue;
        }
        let parsed = name
            .strip_suffix(ending)
            .and_then(|stem| stem.rsplit_once('_'))
            .filter(|(_, digits)| digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()));
        let Some((id, digits)) = parsed else {
            return Err(Error::file(
                entry.path(),
                format!("image file name does not end in _XXXX{ending} (a 4-digit channel index)"),
            ));
        };
        let channel: usize = digits.parse().unwrap_or_default();
        cases.entry(id.to_string()).or_default().push(channel);
    }
    for channels in cases.values_mut() {
        channels.sort_unstable();
    }
    Ok(cases)
}

/// How cases are put on a common grid.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Voxel size in mm after resampling.
    pub spacing: [f64; 3],
    /// Number of classes including background; label values must be in `0..n_classes`.
    pub n_classes: usize,
}

/// A case in memory, ready for patch sampling.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    /// Image channels on one RAS+ grid, each z-scored over its non-zero voxels.
    pub channels: Vec<Volume>,
    /// Class index of each voxel (stored as exact integers in f32), on the channels' grid.
    pub label: Volume,
    pub n_classes: usize,
    /// For class `c ≥ 1` at position `c − 1`: C-order flat indices of its voxels.
    class_voxels: Vec<Vec<u32>>,
}

impl Case {
    /// Builds a case from channels and a label map that share one grid. Fails when the
    /// grids differ, a label is not an integer in `0..n_classes`, or there is no channel.
    pub fn new(id: String, channels: Vec<Volume>, label: Volume, n_classes: usize) -> Result<Case> {
        check_class_count(n_classes)?;
        if channels.is_empty() {
            return Err(Error::invalid(format!("case {id} has no image channel")));
        }
        for (c, channel) in channels.iter().enumerate() {
            if let Some(problem) = grid_mismatch(channel, &label) {
                return Err(Error::invalid(format!(
                    "case {id}: channel {c} and the label map are on different grids ({problem})"
                )));
            }
        }
        if let Some(value) = first_invalid_label(&label, n_classes) {
            return Err(Error::invalid(format!(
                "case {id}: {}",
                invalid_label_message(value, n_classes)
            )));
        }

        let class_voxels = class_voxels(&label, n_classes)?;
        Ok(Case {
            id,
            channels,
            label,
            n_classes,
            class_voxels,
        })
    }

    /// Grid shape `[ni, nj, nk]`.
    pub fn shape(&self) -> [usize; 3] {
        self.label.shape()
    }

    /// Voxel-to-world affine of the grid.
    pub fn affine(&self) -> Affine {
        self.label.affine
    }

    /// Foreground classes (`≥ 1`) with at least one voxel, in increasing order.
    pub fn present_classes(&self) -> Vec<usize> {
        (1..self.n_classes)
            .filter(|c| !self.class_voxels[c - 1].is_empty())
            .collect()
    }

    /// C-order flat indices of the voxels of class `class`; empty for background or an
    /// absent class.
    pub fn class_voxels(&self, class: usize) -> &[u32] {
        match class.checked_sub(1).and_then(|c| self.class_voxels.get(c)) {
            Some(voxels) => voxels,
            None => &[],
        }
    }
}

fn check_class_count(n_classes: usize) -> Result<()> {
    if !(2..=MAX_CLASSES).contains(&n_classes) {
        return Err(Error::invalid(format!(
            "number of classes {n_classes} is invalid; give 2 to {MAX_CLASSES} (background counts as one)"
        )));
    }
    Ok(())
}

/// Loads a case: each file is reoriented to RAS+ and checked against the label map's
/// grid, resampled to `options.spacing` (images trilinear, labels nearest neighbour)
/// and, for images, z-scored over its non-zero voxels.
///
/// Fails naming the file on an unreadable file, a label value that is not an integer
/// in `0..n_classes`, or an image whose grid differs from the label map's.
pub fn load_case(source: &CaseSource, options: &LoadOptions) -> Result<Case> {
    check_class_count(options.n_classes)?;

    let (label, _) = load_volume(&source.label, None)?;
    if let Some(value) = first_invalid_label(&label, options.n_classes) {
        return Err(Error::file(
            &source.label,
            invalid_label_message(value, options.n_classes),
        ));
    }
    let (label, _) = to_ras(&label);

    let mut channels = Vec::with_capacity(source.images.len());
    for image_path in &source.images {
        let (image, _) = load_volume(image_path, None)?;
        let (image, _) = to_ras(&image);
        if let Some(problem) = grid_mismatch(&image, &label) {
            return Err(Error::file(
                image_path,
                format!(
                    "image and label map {} are on different grids ({problem}); \
                     resample them onto one grid first",
                    source.label.display()
                ),
            ));
        }
        let mut image = resample_to_spacing(&image, options.spacing, Interp::Linear)
            .map_err(|e| Error::file(image_path, e.to_string()))?;
        zscore_nonzero(&mut image);
        channels.push(image);
    }

    let label = resample_to_spacing(&label, options.spacing, Interp::Nearest)
        .map_err(|e| Error::file(&source.label, e.to_string()))?;
    let class_voxels = class_voxels(&label, options.n_classes)
        .map_err(|e| Error::file(&source.label, e.to_string()))?;
    Ok(Case {
        id: source.id.clone(),
        channels,
        label,
        n_classes: options.n_classes,
        class_voxels,
    })
}

/// Loads several cases in parallel, in order; fails on the first case that fails.
pub fn load_cases(sources: &[CaseSource], options: &LoadOptions) -> Result<Vec<Case>> {
    sources
        .par_iter()
        .map(|source| load_case(source, options))
        .collect()
}

/// Describes how `volume`'s grid differs from `reference`'s, or `None` when they agree
/// within [`GRID_TOLERANCE`].
fn grid_mismatch(volume: &Volume, reference: &Volume) -> Option<String> {
    if volume.shape() != reference.shape() {
        return Some(format!(
            "shape {:?} against {:?}",
            volume.shape(),
            reference.shape()
        ));
    }
    let difference = volume.affine.max_abs_diff(&reference.affine);
    if difference.is_nan() || difference > GRID_TOLERANCE {
        return Some(format!("affines differ by up to {difference:.3e}"));
    }
    None
}

/// The first voxel value that is not an integer in `0..n_classes`, if any.
fn first_invalid_label(label: &Volume, n_classes: usize) -> Option<f32> {
    label
        .data
        .iter()
        .find(|v| !(v.fract() == 0.0 && **v >= 0.0 && (**v as f64) < n_classes as f64))
        .copied()
}

fn invalid_label_message(value: f32, n_classes: usize) -> String {
    if value.is_finite() && value.fract() == 0.0 && value > 0.0 {
        format!(
            "label value {value} is outside the classes 0..{}; \
             raise the number of classes to at least {} or fix the label map",
            n_classes - 1,
            value + 1.0
        )
    } else {
        format!(
            "label value {value} is not a class index; labels must be integers 0..{}",
            n_classes - 1
        )
    }
}

/// Flat indices of the voxels of each foreground class. Labels must be valid already.
fn class_voxels(label: &Volume, n_classes: usize) -> Result<Vec<Vec<u32>>> {
    let data = label.data.as_standard_layout();
    let values = data
        .as_slice()
        .ok_or_else(|| Error::invalid("label array is not contiguous"))?;
    if values.len() > u32::MAX as usize {
        return Err(Error::invalid(format!(
            "label map has {} voxels, above the {} that patch sampling indexes",
            values.len(),
            u32::MAX
        )));
    }

    let mut voxels = vec![Vec::new(); n_classes - 1];
    for (index, value) in values.iter().enumerate() {
        let class = *value as usize;
        if class > 0 {
            voxels[class - 1].push(index as u32);
        }
    }
    Ok(voxels)
}

/// Training and validation cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub train: Vec<CaseSource>,
    pub validation: Vec<CaseSource>,
}

/// Splits cases into training and validation.
///
/// When every case has a fixed subset (a CSV `split` column) that subset is used.
/// Otherwise `round(n · validation_fraction)` cases go to validation, at least one
/// when the fraction is positive and at most `n − 1`. The choice ranks cases by a hash
/// of `seed` and the case id, so it depends on neither the list order nor the rand
/// crate's version, and a case keeps its subset when unrelated cases are added unless
/// the validation count changes. Fails on a fraction outside `[0, 1)` or a list that
/// fixes the subset of only some cases.
pub fn split_cases(cases: &[CaseSource], validation_fraction: f64, seed: u64) -> Result<Split> {
    let fixed = cases.iter().filter(|c| c.subset.is_some()).count();
    if fixed == cases.len() && fixed > 0 {
        let (train, validation) = cases
            .iter()
            .cloned()
            .partition(|c| c.subset == Some(Subset::Train));
        return Ok(Split { train, validation });
    }
    if fixed > 0 {
        return Err(Error::invalid(format!(
            "{fixed} of {} cases have a fixed split; give a split for every case or for none",
            cases.len()
        )));
    }
    if !(0.0..1.0).contains(&validation_fraction) {
        return Err(Error::invalid(format!(
            "validation fraction {validation_fraction} is invalid; give a value in [0, 1)"
        )));
    }

    let n = cases.len();
    let mut n_validation = (n as f64 * validation_fraction).round() as usize;
    if validation_fraction > 0.0 && n >= 2 {
        n_validation = n_validation.clamp(1, n - 1);
    }
    n_validation = n_validation.min(n.saturating_sub(1));

    let mut ranked: Vec<(u64, usize)> = cases
        .iter()
        .enumerate()
        .map(|(index, case)| (splitmix64(fnv1a(case.id.as_bytes()) ^ seed), index))
        .collect();
    ranked.sort_unstable();
    let validation_indices: HashSet<usize> = ranked[..n_validation]
        .iter()
        .map(|(_, index)| *index)
        .collect();

    let (validation, train): (Vec<_>, Vec<_>) = cases
        .iter()
        .enumerate()
        .partition(|(index, _)| validation_indices.contains(index));
    Ok(Split {
        train: train.into_iter().map(|(_, c)| c.clone()).collect(),
        validation: validation.into_iter().map(|(_, c)| c.clone()).collect(),
    })
}

/// 64-bit FNV-1a hash.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ *byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's output function, which spreads nearby inputs over the whole range.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str) -> CaseSource {
        CaseSource {
            id: id.into(),
            images: vec![PathBuf::from(format!("{id}_0000.nii.gz"))],
            label: PathBuf::from(format!("{id}.nii.gz")),
            subset: None,
        }
    }

    #[test]
    fn nifti_stem_strips_both_endings() {
        assert_eq!(nifti_stem(Path::new("a/case_01.nii.gz")), "case_01");
        assert_eq!(nifti_stem(Path::new("case_02.nii")), "case_02");
    }

    #[test]
    fn split_cases_ignores_list_order() {
        let cases: Vec<CaseSource> = (0..20).map(|i| source(&format!("case{i:02}"))).collect();
        let mut reversed = cases.clone();
        reversed.reverse();
        let a = split_cases(&cases, 0.2, 7).unwrap();
        let b = split_cases(&reversed, 0.2, 7).unwrap();
        let ids = |s: &[CaseSource]| {
            let mut ids: Vec<String> = s.iter().map(|c| c.id.clone()).collect();
            ids.sort();
            ids
        };
        assert_eq!(a.validation.len(), 4);
        assert_eq!(ids(&a.validation), ids(&b.validation));
    }

    #[test]
    fn split_cases_keeps_one_of_each() {
        let cases = vec![source("a"), source("b")];
        let split = split_cases(&cases, 0.01, 0).unwrap();
        assert_eq!(split.validation.len(), 1);
        assert_eq!(split.train.len(), 1);
        let single = split_cases(&cases[..1], 0.5, 0).unwrap();
        assert_eq!(single.train.len(), 1);
    }

    #[test]
    fn split_cases_rejects_partial_fixed_split() {
        let mut cases = vec![source("a"), source("b")];
        cases[0].subset = Some(Subset::Validation);
        assert!(split_cases(&cases, 0.2, 0).is_err());
    }

    #[test]
    fn class_names_reject_regions() {
        let json = serde_json::json!({"background": 0, "whole tumour": [1, 2]});
        assert!(parse_class_names(Path::new("dataset.json"), &json).is_err());
    }
}
