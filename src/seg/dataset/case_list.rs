//! Case lists: which files make up each case, read from a CSV or an nnU-Net v2 raw
//! dataset folder.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{CaseSource, Subset};
use crate::error::{Error, Result};

/// Column of a case list CSV that names the case; without it the label file name is the id.
pub const ID_COLUMN: &str = "id";

/// Column of a case list CSV that fixes the subset of each case (`train` or `val`).
pub const SPLIT_COLUMN: &str = "split";

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
/// The column `label_column` contains label map paths, the optional columns `id` and
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
/// Region-based label definitions (a list of values for one name) and the `ignore` label
/// of sparse annotations are rejected.
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

/// The fields of nnU-Net's `dataset.json` that case lists use.
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
        if name == "ignore" {
            return Err(Error::file(
                path,
                "the 'ignore' label (sparse annotation) is not supported; remove it from labels",
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nifti_stem_strips_both_endings() {
        assert_eq!(nifti_stem(Path::new("a/case_01.nii.gz")), "case_01");
        assert_eq!(nifti_stem(Path::new("case_02.nii")), "case_02");
    }

    #[test]
    fn class_names_reject_regions() {
        let json = serde_json::json!({"background": 0, "whole tumour": [1, 2]});
        assert!(parse_class_names(Path::new("dataset.json"), &json).is_err());
    }
}
