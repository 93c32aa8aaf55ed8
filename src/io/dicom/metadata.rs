//! Acquisition metadata of a series: the MR sequence parameters, the acquisition
//! plane, a best-effort sequence family, and the JSON sidecar that stores them.
//!
//! Sidecar field names follow BIDS where BIDS has the field (RepetitionTime,
//! EchoTime and InversionTime in seconds, FlipAngle in degrees,
//! MagneticFieldStrength in tesla, ManufacturersModelName, ...), and dcm2niix's
//! `ImageOrientationPatientDICOM` for the raw orientation. `AcquisitionPlane` and
//! `SequenceFamily` are this toolkit's own fields. Multi-valued DICOM strings
//! (ScanningSequence `SE\IR`) are joined with `_`, as dcm2niix writes them.
//! Patient-identifying attributes are read only on request ([`PatientInfo`]).

use std::path::Path;

use dicom_object::InMemDicomObject;
use serde::{Deserialize, Serialize};

use super::header::{first_item, float, strings, tags, text};
use super::series::{dot, normal};
use super::volumes::VolumeParameters;
use crate::geometry::Affine;
use crate::{Error, Result};

/// Below this absolute value of the largest component of the slice normal a
/// series is oblique: about 25.8 degrees away from the nearest cardinal plane
/// (cos 25.8° = 0.9).
pub const OBLIQUE_THRESHOLD: f64 = 0.9;

/// MR acquisition parameters, named as in BIDS sidecars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SequenceMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_number: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "SeriesInstanceUID")]
    pub series_instance_uid: Option<String>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_time: Option<f64>,
    /// Seconds; a list with one value per volume for a 4-D series whose volumes
    /// differ in echo time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_time: Option<PerVolume>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inversion_time: Option<f64>,
    /// Degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip_angle: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanning_sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_options: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_name: Option<String>,
    /// Tesla.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnetic_field_strength: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturers_model_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ImageOrientationPatientDICOM")]
    pub image_orientation_patient_dicom: Option<[f64; 6]>,
    /// `sagittal`, `coronal`, `axial` or `oblique` ([`acquisition_plane`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquisition_plane: Option<String>,
    /// `T1w`, `T2w`, `FLAIR`, `PD`, `DWI` or `other` ([`sequence_family`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_family: Option<String>,
    /// Diffusion b-value of each volume (s/mm²), when the images have one.
    #[serde(default, rename = "bvals", skip_serializing_if = "Option::is_none")]
    pub bvals: Option<Vec<f64>>,
    /// Diffusion gradient direction of each volume, in FSL's convention: relative to
    /// the voxel axes i, j, k of the written image, with the first component negated
    /// when the affine's determinant is positive. Zero for b = 0 or no direction.
    #[serde(default, rename = "bvecs", skip_serializing_if = "Option::is_none")]
    pub bvecs: Option<Vec<[f64; 3]>>,
    /// Present only when patient attributes were requested.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientInfo>,
}

/// A value that is one number for the series, or one number per volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerVolume {
    Series(f64),
    Volumes(Vec<f64>),
}

impl PerVolume {
    /// Returns the value of volume `v` (the series value for every volume), `None` past the list.
    pub fn get(&self, v: usize) -> Option<f64> {
        match self {
            PerVolume::Series(x) => Some(*x),
            PerVolume::Volumes(list) => list.get(v).copied(),
        }
    }
}

/// Patient-identifying attributes, read and written only on request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PatientInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_name: Option<String>,
    #[serde(default, rename = "PatientID", skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_birth_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_sex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_age: Option<String>,
    /// Kilograms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_weight: Option<f64>,
}

/// Reads the sequence metadata from one image's header. Enhanced MR objects keep
/// TR, flip angle and TE in functional group sequences; those are searched when
/// the top-level attribute is absent.
pub fn read_metadata(object: &InMemDicomObject, orientation: Option<[f64; 6]>, with_patient: bool) -> SequenceMetadata {
    let shared = first_item(object, tags::SHARED_FUNCTIONAL_GROUPS);
    let timing = shared.and_then(|s| first_item(s, tags::MR_TIMING_AND_RELATED));
    let echo = shared.and_then(|s| first_item(s, tags::MR_ECHO));
    let ms_to_s = |v: f64| v / 1000.0;

    let mut meta = SequenceMetadata {
        series_description: text(object, tags::SERIES_DESCRIPTION),
        series_number: super::header::int(object, tags::SERIES_NUMBER),
        series_instance_uid: text(object, tags::SERIES_INSTANCE_UID),
        repetition_time: float(object, tags::REPETITION_TIME)
            .or_else(|| timing.and_then(|t| float(t, tags::REPETITION_TIME)))
            .map(ms_to_s),
        echo_time: float(object, tags::ECHO_TIME)
            .or_else(|| echo.and_then(|e| float(e, tags::EFFECTIVE_ECHO_TIME)))
            .map(|te| PerVolume::Series(ms_to_s(te))),
        inversion_time: float(object, tags::INVERSION_TIME).map(ms_to_s),
        flip_angle: float(object, tags::FLIP_ANGLE).or_else(|| timing.and_then(|t| float(t, tags::FLIP_ANGLE))),
        scanning_sequence: joined(object, tags::SCANNING_SEQUENCE),
        sequence_variant: joined(object, tags::SEQUENCE_VARIANT),
        scan_options: joined(object, tags::SCAN_OPTIONS),
        sequence_name: text(object, tags::SEQUENCE_NAME),
        magnetic_field_strength: float(object, tags::MAGNETIC_FIELD_STRENGTH),
        manufacturer: text(object, tags::MANUFACTURER),
        manufacturers_model_name: text(object, tags::MANUFACTURER_MODEL_NAME),
        image_orientation_patient_dicom: orientation,
        acquisition_plane: orientation.map(|o| acquisition_plane(&o).to_string()),
        sequence_family: None,
        bvals: None,
        bvecs: None,
        patient: with_patient.then(|| read_patient(object)),
    };
    meta.sequence_family = Some(sequence_family(&meta).to_string());
    meta
}

/// Adds what differs between the volumes of a 4-D series: EchoTime as a list when
/// the echo times differ, and `bvals`/`bvecs` whenever every volume has a b-value.
/// `affine` is the written image's, whose voxel axes the bvecs refer to.
pub fn add_volume_parameters(meta: &mut SequenceMetadata, volumes: &[VolumeParameters], affine: &Affine) {
    let echo_times: Option<Vec<f64>> = volumes.iter().map(|v| v.echo_time.map(|te| te / 1000.0)).collect();
    if let Some(times) = echo_times.filter(|t| t.len() > 1 && t.iter().any(|x| *x != t[0])) {
        meta.echo_time = Some(PerVolume::Volumes(times));
    }

    let bvals: Option<Vec<f64>> = volumes.iter().map(|v| v.b_value).collect();
    if let Some(bvals) = bvals {
        meta.bvecs = Some(volumes.iter().map(|v| fsl_bvec(v, affine)).collect());
        meta.bvals = Some(bvals);
    }
}

/// Converts the gradient direction to FSL's convention (see [`SequenceMetadata::bvecs`]).
fn fsl_bvec(volume: &VolumeParameters, affine: &Affine) -> [f64; 3] {
    let Some(g) = volume.gradient.filter(|_| volume.b_value.is_some_and(|b| b > 0.0)) else {
        return [0.0; 3];
    };
    let ras = [-g[0], -g[1], g[2]];
    let m = affine.0;
    let mut bvec = [0.0; 3];
    for (axis, component) in bvec.iter_mut().enumerate() {
        let column = [m[0][axis], m[1][axis], m[2][axis]];
        let length = dot(column, column).sqrt();
        *component = if length > 0.0 { dot(ras, column) / length } else { 0.0 };
    }
    let determinant = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if determinant > 0.0 {
        bvec[0] = -bvec[0];
    }
    bvec.map(|c| if c == 0.0 { 0.0 } else { c })
}

/// Writes `stem.bval` (b-values on one line) and `stem.bvec` (three lines: x, y and
/// z components) in FSL's text format, as dcm2niix does, when `meta` has b-values.
/// Returns the paths written.
pub fn write_bval_bvec(dir: &Path, stem: &str, meta: &SequenceMetadata) -> Result<Vec<std::path::PathBuf>> {
    let (Some(bvals), Some(bvecs)) = (&meta.bvals, &meta.bvecs) else {
        return Ok(Vec::new());
    };
    let line = |values: &mut dyn Iterator<Item = f64>| values.map(|v| format!("{v} ")).collect::<String>() + "\n";
    let bval_path = dir.join(format!("{stem}.bval"));
    let bvec_path = dir.join(format!("{stem}.bvec"));
    let bvec_text: String = (0..3).map(|d| line(&mut bvecs.iter().map(|b| b[d]))).collect();
    std::fs::write(&bval_path, line(&mut bvals.iter().copied())).map_err(|e| Error::io(&bval_path, e))?;
    std::fs::write(&bvec_path, bvec_text).map_err(|e| Error::io(&bvec_path, e))?;
    Ok(vec![bval_path, bvec_path])
}

fn joined(object: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let values = strings(object, tag);
    (!values.is_empty()).then(|| values.join("_"))
}

fn read_patient(object: &InMemDicomObject) -> PatientInfo {
    PatientInfo {
        patient_name: text(object, tags::PATIENT_NAME),
        patient_id: text(object, tags::PATIENT_ID),
        patient_birth_date: text(object, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(object, tags::PATIENT_SEX),
        patient_age: text(object, tags::PATIENT_AGE),
        patient_weight: float(object, tags::PATIENT_WEIGHT),
    }
}

/// Names the plane from the slice normal (row cosine x column cosine): the axis of
/// its largest component (LPS x: sagittal, y: coronal, z: axial), or `oblique`
/// when that component is below [`OBLIQUE_THRESHOLD`].
pub fn acquisition_plane(orientation: &[f64; 6]) -> &'static str {
    let n = normal(orientation).map(f64::abs);
    let (axis, largest) = n
        .iter()
        .enumerate()
        .fold((0, 0.0), |best, (d, &v)| if v > best.1 { (d, v) } else { best });
    if largest < OBLIQUE_THRESHOLD {
        return "oblique";
    }
    ["sagittal", "coronal", "axial"][axis]
}

/// Guesses the contrast from the series description, then from TR/TE/TI.
///
/// Description keywords (case-insensitive, first match wins): `flair`, `dark-fluid`
/// → FLAIR; `dwi`, `dti`, `diff`, `trace`, `adc`, `ep2d_diff` → DWI; `t2` → T2w;
/// `t1`, `mprage`, `spgr`, `bravo`, `tfl` → T1w; `pd`, `proton` → PD. Otherwise, with
/// times in ms: TI > 1500 with TR > 4000 → FLAIR; TR < 800 and TE < 30 → T1w;
/// TR > 2000 and TE > 80 → T2w; TR > 2000 and TE < 35 → PD; anything else `other`.
/// A heuristic: a mislabelled description gives a wrong family.
pub fn sequence_family(meta: &SequenceMetadata) -> &'static str {
    let description = meta.series_description.as_deref().unwrap_or("").to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| description.contains(w));
    if has(&["flair", "dark-fluid", "dark_fluid"]) {
        return "FLAIR";
    }
    if has(&["dwi", "dti", "diff", "trace", "adc"]) {
        return "DWI";
    }
    if has(&["t2"]) {
        return "T2w";
    }
    if has(&["t1", "mprage", "spgr", "bravo", "tfl"]) {
        return "T1w";
    }
    if has(&["pd", "proton"]) {
        return "PD";
    }

    let ms = |v: Option<f64>| v.map(|s| s * 1000.0);
    let echo_time = meta.echo_time.as_ref().and_then(|te| te.get(0));
    let (Some(tr), Some(te)) = (ms(meta.repetition_time), ms(echo_time)) else {
        return "other";
    };
    let ti = ms(meta.inversion_time).unwrap_or(0.0);
    if ti > 1500.0 && tr > 4000.0 {
        "FLAIR"
    } else if tr < 800.0 && te < 30.0 {
        "T1w"
    } else if tr > 2000.0 && te > 80.0 {
        "T2w"
    } else if tr > 2000.0 && te < 35.0 {
        "PD"
    } else {
        "other"
    }
}

/// Writes the sidecar as pretty-printed JSON.
pub fn write_sidecar(path: &Path, meta: &SequenceMetadata) -> Result<()> {
    let text = serde_json::to_string_pretty(meta)
        .map_err(|e| Error::file(path, format!("cannot encode sidecar: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Reads a sidecar written by [`write_sidecar`] or by dcm2niix (unknown fields are ignored).
pub fn read_sidecar(path: &Path) -> Result<SequenceMetadata> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut meta: SequenceMetadata =
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON sidecar: {e}")))?;
    // A flattened optional struct always deserializes as Some; no patient field means None.
    if meta.patient.as_ref() == Some(&PatientInfo::default()) {
        meta.patient = None;
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plane_of_cardinal_orientations() {
        assert_eq!(acquisition_plane(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), "axial");
        assert_eq!(acquisition_plane(&[0.0, 1.0, 0.0, 0.0, 0.0, -1.0]), "sagittal");
        assert_eq!(acquisition_plane(&[1.0, 0.0, 0.0, 0.0, 0.0, -1.0]), "coronal");
    }

    #[test]
    fn plane_oblique_beyond_threshold() {
        // Rotated 45 degrees about x: normal (0, -0.707, 0.707).
        let c = std::f64::consts::FRAC_1_SQRT_2;
        assert_eq!(acquisition_plane(&[1.0, 0.0, 0.0, 0.0, c, c]), "oblique");
    }

    #[test]
    fn family_from_description_then_timing() {
        let mut meta = SequenceMetadata {
            series_description: Some("t2_tse_dark-fluid_tra".into()),
            ..Default::default()
        };
        assert_eq!(sequence_family(&meta), "FLAIR");
        meta.series_description = Some("unnamed".into());
        meta.repetition_time = Some(0.5);
        meta.echo_time = Some(PerVolume::Series(0.01));
        assert_eq!(sequence_family(&meta), "T1w");
        meta.repetition_time = Some(4.0);
        meta.echo_time = Some(PerVolume::Series(0.1));
        assert_eq!(sequence_family(&meta), "T2w");
    }
}
