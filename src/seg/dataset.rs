//! Segmentation training cases: the case lists (a CSV or an nnU-Net v2 raw dataset, in
//! [`case_list`]), loading a case onto one RAS+ grid at a target spacing, and the split
//! into training and validation cases.
//!
//! A loaded [`Case`] contains z-scored image channels and a label map of class indices
//! `0..n_classes` (0 is background) on the same voxel grid, plus the voxel positions
//! of each foreground class so that patches can be centred on foreground cheaply.

use std::collections::HashSet;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::io::load_volume;
use crate::preprocess::{resample_to_spacing, to_ras, zscore_nonzero, Interp};
use crate::volume::Volume;

pub mod case_list;

pub use case_list::{read_csv, read_nnunet, CaseList, ID_COLUMN, SPLIT_COLUMN};

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

/// Target grid and class count for loading cases.
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

/// Finds the first voxel value that is not an integer in `0..n_classes`, if any.
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
/// crate's version. A case keeps its subset when unrelated cases are added, unless the
/// validation count changes. Fails on a fraction outside `[0, 1)` or a list that
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
}
