//! The pretraining dataset in memory: every manifest entry loaded once and prepared
//! (RAS+, 1 mm; scans z-scored), from which training and validation samples are cut.
//!
//! Memory: a scan is kept as f32, 4 bytes per 1 mm voxel, so the ICBM152 2009a brain
//! (197 × 233 × 189 voxels) takes 34.7 MB. A label map takes 2 bytes per voxel (u16),
//! and tissue maps 4 bytes per voxel per tissue. [`Dataset::memory_bytes`] gives the total.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use rand::Rng;
use rayon::prelude::*;

use super::manifest::{ManifestEntry, SourceKind};
use super::sample::{self, prepare_scan, to_ras_1mm, zscore_array};
use crate::cli::inputs::{expand_inputs, load_input};
use crate::error::{Error, Result};
use crate::geometry::Affine;
use crate::preprocess::Interp;
use crate::pretrain::synth::{self, Anatomy, SynthConfig};
use crate::volume::Volume;

/// Largest difference between two affine elements (mm) for tissue maps to count as one
/// grid; float32 header storage rounds to about 1e-5 mm.
const GRID_TOLERANCE_MM: f64 = 1e-3;

/// A prepared entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// A z-scored image on its RAS+ 1 mm grid.
    Scan(Array3<f32>),
    /// A label map or tissue maps on the RAS+ 1 mm grid, rendered at every draw.
    Anatomy(Anatomy),
}

impl Prepared {
    pub fn shape(&self) -> [usize; 3] {
        let dims = match self {
            Prepared::Scan(data) => data.dim(),
            Prepared::Anatomy(Anatomy::Labels(labels)) => labels.dim(),
            Prepared::Anatomy(Anatomy::Tissue(maps)) => maps.first().map_or((0, 0, 0), Array3::dim),
        };
        [dims.0, dims.1, dims.2]
    }

    /// Bytes of voxel data held.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Prepared::Scan(data) => data.len() * size_of::<f32>(),
            Prepared::Anatomy(Anatomy::Labels(labels)) => labels.len() * size_of::<u16>(),
            Prepared::Anatomy(Anatomy::Tissue(maps)) => {
                maps.iter().map(|m| m.len() * size_of::<f32>()).sum()
            }
        }
    }
}

/// Manifest entries with their prepared volumes, shared read-only by the loader threads.
#[derive(Debug, Clone)]
pub struct Dataset {
    entries: Vec<ManifestEntry>,
    prepared: Vec<Prepared>,
    synth: SynthConfig,
}

impl Dataset {
    /// Loads and prepares every entry, in parallel. Fails on the first entry that
    /// cannot be read, naming its file; fails on an empty list.
    pub fn load(entries: Vec<ManifestEntry>, synth: SynthConfig) -> Result<Dataset> {
        let prepared: Vec<Prepared> = entries.par_iter().map(load_entry).collect::<Result<_>>()?;
        Dataset::from_prepared(entries, prepared, synth)
    }

    /// Builds a dataset from volumes prepared elsewhere (they must already be RAS+,
    /// 1 mm and, for scans, z-scored). Fails when the counts differ, a volume's kind does
    /// not match its entry's source, or the list is empty.
    pub fn from_prepared(
        entries: Vec<ManifestEntry>,
        prepared: Vec<Prepared>,
        synth: SynthConfig,
    ) -> Result<Dataset> {
        if entries.is_empty() {
            return Err(Error::invalid(
                "the dataset has no entries; list at least one image",
            ));
        }
        if entries.len() != prepared.len() {
            return Err(Error::invalid(format!(
                "{} entries but {} prepared volumes; give one volume per entry",
                entries.len(),
                prepared.len()
            )));
        }
        for (entry, volume) in entries.iter().zip(&prepared) {
            let matches = matches!(
                (entry.source, volume),
                (SourceKind::Scan, Prepared::Scan(_))
                    | (SourceKind::Labels, Prepared::Anatomy(Anatomy::Labels(_)))
                    | (SourceKind::Tissue, Prepared::Anatomy(Anatomy::Tissue(_)))
            );
            if !matches {
                return Err(Error::invalid(format!(
                    "{}: the prepared volume does not match the entry's source '{}'",
                    entry.path_text(),
                    entry.source.name()
                )));
            }
            // Checked here because rendering runs in the loader threads, where a malformed map
            // would otherwise panic.
            if let Prepared::Anatomy(anatomy) = volume {
                anatomy.validate().map_err(|e| Error::invalid(format!("{}: {e}", entry.path_text())))?;
            }
        }
        synth.validate()?;
        Ok(Dataset {
            entries,
            prepared,
            synth,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    pub fn prepared(&self, index: usize) -> Option<&Prepared> {
        self.prepared.get(index)
    }

    /// Bytes of voxel data held by all prepared volumes.
    pub fn memory_bytes(&self) -> usize {
        self.prepared.iter().map(Prepared::memory_bytes).sum()
    }

    /// Makes a training sample of entry `index` ([`sample::train_sample`]). A label or
    /// tissue entry is first rendered with a random contrast drawn from `rng` and
    /// z-scored over its non-zero voxels. Panics if `index` is out of range.
    pub fn train_sample(&self, index: usize, roi: [usize; 3], rng: &mut impl Rng) -> Array3<f32> {
        match &self.prepared[index] {
            Prepared::Scan(data) => sample::train_sample(data.view(), roi, rng),
            Prepared::Anatomy(anatomy) => {
                let rendered = self.render(anatomy, rng);
                sample::train_sample(rendered.view(), roi, rng)
            }
        }
    }

    /// Makes the validation sample of entry `index` ([`sample::validation_sample`]); `rng`
    /// is used only to render a label or tissue entry. Panics if `index` is out of range.
    pub fn validation_sample(
        &self,
        index: usize,
        roi: [usize; 3],
        rng: &mut impl Rng,
    ) -> Array3<f32> {
        match &self.prepared[index] {
            Prepared::Scan(data) => sample::validation_sample(data.view(), roi),
            Prepared::Anatomy(anatomy) => {
                sample::validation_sample(self.render(anatomy, rng).view(), roi)
            }
        }
    }

    fn render(&self, anatomy: &Anatomy, rng: &mut impl Rng) -> Array3<f32> {
        zscore_array(synth::render(anatomy, &self.synth, rng))
    }
}

/// Loads and prepares the files of one entry according to its source.
pub fn load_entry(entry: &ManifestEntry) -> Result<Prepared> {
    let Some(first) = entry.paths.first() else {
        return Err(Error::invalid("a manifest entry has no path"));
    };
    match entry.source {
        SourceKind::Scan => {
            let volume = load_image(first)?;
            let data = prepare_scan(volume).map_err(|e| with_path(first, e))?;
            Ok(Prepared::Scan(data))
        }
        SourceKind::Labels => Ok(Prepared::Anatomy(Anatomy::Labels(load_labels(first)?))),
        SourceKind::Tissue => Ok(Prepared::Anatomy(Anatomy::Tissue(load_tissue(
            &entry.paths,
        )?))),
    }
}

/// Reads a 3-D image: a NIfTI file, or a DICOM folder or file with one series.
/// Rejects images with NaN or infinite voxels, which would poison every loss.
pub fn load_image(path: &Path) -> Result<Volume> {
    let name = path.to_string_lossy();
    let volume = if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        crate::io::load_volume(path, None)?.0
    } else {
        load_dicom(path)?
    };

    let non_finite = crate::io::count_non_finite(&volume);
    if non_finite > 0 {
        return Err(Error::file(
            path,
            format!("{non_finite} voxels are NaN or infinite; replace them (with 0 for background) before pretraining"),
        ));
    }
    Ok(volume)
}

fn load_dicom(path: &Path) -> Result<Volume> {
    let argument = path.to_string_lossy().into_owned();
    let items = expand_inputs(&[argument], &mut Cursor::new(Vec::new()))?;
    match items.as_slice() {
        [item] => load_input(item, None),
        [] => Err(Error::file(
            path,
            "no image found; give a NIfTI file or a DICOM series folder",
        )),
        many => Err(Error::file(
            path,
            format!(
                "{} images found (NIfTI files or DICOM series); give one per manifest row",
                many.len()
            ),
        )),
    }
}

/// Loads a label map on the RAS+ 1 mm grid (nearest neighbour). Fails when a voxel is
/// not an integer in 0..=65535.
fn load_labels(path: &Path) -> Result<Array3<u16>> {
    let volume = load_image(path)?;
    let volume = to_ras_1mm(volume, Interp::Nearest).map_err(|e| with_path(path, e))?;
    let invalid = volume
        .data
        .iter()
        .find(|v| !(v.fract() == 0.0 && **v >= 0.0 && **v <= u16::MAX as f32));
    if let Some(value) = invalid {
        return Err(Error::file(
            path,
            format!("label value {value} is not an integer in 0..=65535; give an integer label map or set source to scan"),
        ));
    }
    Ok(volume.data.mapv(|v| v as u16))
}

/// Loads tissue probability maps, which must share one grid, onto the RAS+ 1 mm grid
/// (trilinear).
fn load_tissue(paths: &[PathBuf]) -> Result<Vec<Array3<f32>>> {
    let mut maps = Vec::with_capacity(paths.len());
    let mut reference: Option<([usize; 3], Affine)> = None;
    for path in paths {
        let volume = load_image(path)?;
        match reference {
            Some(grid) => check_same_grid(path, &volume, grid, &paths[0])?,
            None => reference = Some((volume.shape(), volume.affine)),
        }
        let prepared = to_ras_1mm(volume, Interp::Linear).map_err(|e| with_path(path, e))?;
        maps.push(prepared.data);
    }
    Ok(maps)
}

fn check_same_grid(
    path: &Path,
    volume: &Volume,
    (shape, affine): ([usize; 3], Affine),
    first: &Path,
) -> Result<()> {
    let difference = volume.affine.max_abs_diff(&affine);
    if volume.shape() != shape || difference.is_nan() || difference > GRID_TOLERANCE_MM {
        return Err(Error::file(
            path,
            format!(
                "tissue map is not on the grid of {} (shape {:?} against {shape:?}, affines differ by up to \
                 {difference:.3e} mm); resample the maps onto one grid",
                first.display(),
                volume.shape(),
            ),
        ));
    }
    Ok(())
}

/// Adds the file to an error that lacks it.
fn with_path(path: &Path, error: Error) -> Error {
    match error {
        Error::Invalid(message) => Error::file(path, message),
        other => other,
    }
}
