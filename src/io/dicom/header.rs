//! Recognizing DICOM files and reading the per-file attributes that decide how
//! files group into series and where each image sits.
//!
//! Only the header is parsed here (reading stops at PixelData), so scanning a
//! folder costs one short read per file.

use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions, Tag};

use super::csa;
use super::volumes::VolumeParameters;
use crate::{Error, Result};

/// The attributes read, by (group, element).
pub(crate) mod tags {
    use dicom_object::Tag;

    pub const IMAGE_TYPE: Tag = Tag(0x0008, 0x0008);
    pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
    pub const MANUFACTURER: Tag = Tag(0x0008, 0x0070);
    pub const SERIES_DESCRIPTION: Tag = Tag(0x0008, 0x103E);
    pub const MANUFACTURER_MODEL_NAME: Tag = Tag(0x0008, 0x1090);
    pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
    pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
    pub const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
    pub const PATIENT_SEX: Tag = Tag(0x0010, 0x0040);
    pub const PATIENT_AGE: Tag = Tag(0x0010, 0x1010);
    pub const PATIENT_WEIGHT: Tag = Tag(0x0010, 0x1030);
    pub const SCANNING_SEQUENCE: Tag = Tag(0x0018, 0x0020);
    pub const SEQUENCE_VARIANT: Tag = Tag(0x0018, 0x0021);
    pub const SCAN_OPTIONS: Tag = Tag(0x0018, 0x0022);
    pub const SLICE_THICKNESS: Tag = Tag(0x0018, 0x0050);
    pub const REPETITION_TIME: Tag = Tag(0x0018, 0x0080);
    pub const ECHO_TIME: Tag = Tag(0x0018, 0x0081);
    pub const INVERSION_TIME: Tag = Tag(0x0018, 0x0082);
    pub const ECHO_NUMBERS: Tag = Tag(0x0018, 0x0086);
    pub const MAGNETIC_FIELD_STRENGTH: Tag = Tag(0x0018, 0x0087);
    pub const SPACING_BETWEEN_SLICES: Tag = Tag(0x0018, 0x0088);
    pub const SEQUENCE_NAME: Tag = Tag(0x0018, 0x0024);
    pub const FLIP_ANGLE: Tag = Tag(0x0018, 0x1314);
    pub const TRIGGER_TIME: Tag = Tag(0x0018, 0x1060);
    pub const DIFFUSION_B_VALUE: Tag = Tag(0x0018, 0x9087);
    pub const DIFFUSION_GRADIENT_DIRECTION: Tag = Tag(0x0018, 0x9076);
    pub const DIFFUSION_GRADIENT_ORIENTATION: Tag = Tag(0x0018, 0x9089);
    pub const MR_DIFFUSION: Tag = Tag(0x0018, 0x9117);
    pub const SERIES_INSTANCE_UID: Tag = Tag(0x0020, 0x000E);
    pub const SERIES_NUMBER: Tag = Tag(0x0020, 0x0011);
    pub const ACQUISITION_NUMBER: Tag = Tag(0x0020, 0x0012);
    pub const INSTANCE_NUMBER: Tag = Tag(0x0020, 0x0013);
    pub const TEMPORAL_POSITION_IDENTIFIER: Tag = Tag(0x0020, 0x0100);
    pub const IMAGE_POSITION_PATIENT: Tag = Tag(0x0020, 0x0032);
    pub const IMAGE_ORIENTATION_PATIENT: Tag = Tag(0x0020, 0x0037);
    pub const SAMPLES_PER_PIXEL: Tag = Tag(0x0028, 0x0002);
    pub const NUMBER_OF_FRAMES: Tag = Tag(0x0028, 0x0008);
    pub const ROWS: Tag = Tag(0x0028, 0x0010);
    pub const COLUMNS: Tag = Tag(0x0028, 0x0011);
    pub const PIXEL_SPACING: Tag = Tag(0x0028, 0x0030);
    pub const SHARED_FUNCTIONAL_GROUPS: Tag = Tag(0x5200, 0x9229);
    pub const PER_FRAME_FUNCTIONAL_GROUPS: Tag = Tag(0x5200, 0x9230);
    pub const PIXEL_MEASURES: Tag = Tag(0x0028, 0x9110);
    pub const PLANE_POSITION: Tag = Tag(0x0020, 0x9113);
    pub const PLANE_ORIENTATION: Tag = Tag(0x0020, 0x9116);
    pub const MR_ECHO: Tag = Tag(0x0018, 0x9114);
    pub const EFFECTIVE_ECHO_TIME: Tag = Tag(0x0018, 0x9082);
    pub const MR_TIMING_AND_RELATED: Tag = Tag(0x0018, 0x9112);
    pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
}

/// Media Storage SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
const DICOMDIR_SOP_CLASS: &str = "1.2.840.10008.1.3.10";

/// The contribution of one DICOM image file to a series.
#[derive(Debug, Clone)]
pub struct ImageHeader {
    pub path: PathBuf,
    pub series_uid: String,
    /// SOPInstanceUID: the same image stored twice (in two transfer syntaxes, say) has the same one.
    pub sop_instance_uid: Option<String>,
    pub series_number: Option<i64>,
    pub description: String,
    pub rows: usize,
    pub columns: usize,
    /// NumberOfFrames (1 for a single-frame image).
    pub frames: usize,
    /// ImageOrientationPatient: row direction cosine, then column direction cosine (LPS).
    pub orientation: Option<[f64; 6]>,
    /// ImagePositionPatient in LPS mm: centre of the first transmitted pixel.
    pub position: Option<[f64; 3]>,
    /// PixelSpacing as stored: spacing between rows, then between columns, in mm.
    pub pixel_spacing: Option<[f64; 2]>,
    pub instance_number: Option<i64>,
    /// The attributes that tell apart volumes at the same slice positions.
    pub parameters: VolumeParameters,
    pub image_type: Vec<String>,
    /// Per-frame functional groups present (enhanced multi-frame object).
    pub enhanced: bool,
}

impl ImageHeader {
    pub fn is_mosaic(&self) -> bool {
        self.image_type.iter().any(|t| t.eq_ignore_ascii_case("MOSAIC"))
    }
}

/// Result of [`classify_file`].
pub enum FileKind {
    Image(Box<ImageHeader>),
    /// Not DICOM, a DICOMDIR, or a DICOM object without an image (report, presentation state).
    Ignored,
}

/// Returns whether `path` starts like a DICOM file: `DICM` at byte 128 (Part 10
/// preamble), or a file meta group (0002,xxxx) at byte 0 (Part 10 without preamble).
///
/// NOTE: bare datasets without a file meta group are not recognized.
pub fn is_dicom_file(path: &Path) -> bool {
    sniff(path).is_some()
}

/// Presence of the 128-byte preamble, or `None` when the file is not DICOM.
fn sniff(path: &Path) -> Option<bool> {
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path).ok()?;
    let n = read_up_to(&mut file, &mut head).ok()?;
    if n >= 132 && &head[128..132] == b"DICM" {
        return Some(true);
    }
    // Group 0x0002 little endian, then an explicit VR (file meta is always explicit VR LE).
    let meta_start = n >= 6 && head[0] == 0x02 && head[1] == 0x00 && head[4].is_ascii_uppercase();
    meta_start.then_some(false)
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        let n = file.read(&mut buf[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// Opens a DICOM file, the whole of it or only the header (up to PixelData).
pub(crate) fn open(path: &Path, header_only: bool) -> Result<DefaultDicomObject> {
    let preamble = match sniff(path) {
        Some(true) => dicom_object::file::ReadPreamble::Always,
        Some(false) => dicom_object::file::ReadPreamble::Never,
        None => return Err(Error::file(path, "not a DICOM file (no DICM marker at byte 128)")),
    };
    let options = OpenFileOptions::new().read_preamble(preamble);
    let options = if header_only {
        options.read_until(tags::PIXEL_DATA)
    } else {
        options
    };
    options
        .open_file(path)
        .map_err(|e| Error::file(path, format!("invalid DICOM file: {}", error_chain(&e))))
}

/// Joins an error and its sources into one line; dicom-rs errors put the cause in the source.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads a file's header and decides whether it is an image to group into a series.
/// Files that are not DICOM at all return `Ignored`; DICOM files that cannot be
/// parsed return an error naming the file.
pub fn classify_file(path: &Path) -> Result<FileKind> {
    let is_dicomdir = path
        .file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
    if is_dicomdir || sniff(path).is_none() {
        return Ok(FileKind::Ignored);
    }

    let object = open(path, true)?;
    if object.meta().media_storage_sop_class_uid().trim_end_matches('\0') == DICOMDIR_SOP_CLASS {
        return Ok(FileKind::Ignored);
    }
    match read_image_header(path, &object)? {
        Some(header) => Ok(FileKind::Image(Box::new(header))),
        None => Ok(FileKind::Ignored),
    }
}

fn read_image_header(path: &Path, object: &InMemDicomObject) -> Result<Option<ImageHeader>> {
    let (Some(rows), Some(columns)) = (int(object, tags::ROWS), int(object, tags::COLUMNS)) else {
        return Ok(None);
    };
    let Some(series_uid) = text(object, tags::SERIES_INSTANCE_UID) else {
        return Err(Error::file(path, "SeriesInstanceUID (0020,000E) is missing"));
    };
    let samples = int(object, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples != 1 {
        return Err(Error::file(
            path,
            format!("{samples} samples per pixel (colour image); only greyscale images are supported"),
        ));
    }
    if rows <= 0 || columns <= 0 {
        return Err(Error::file(path, format!("invalid image size {rows} x {columns}")));
    }

    Ok(Some(ImageHeader {
        path: path.to_path_buf(),
        series_uid,
        sop_instance_uid: text(object, tags::SOP_INSTANCE_UID),
        series_number: int(object, tags::SERIES_NUMBER),
        description: text(object, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        rows: rows as usize,
        columns: columns as usize,
        frames: int(object, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize,
        orientation: floats::<6>(object, tags::IMAGE_ORIENTATION_PATIENT),
        position: floats::<3>(object, tags::IMAGE_POSITION_PATIENT),
        pixel_spacing: floats::<2>(object, tags::PIXEL_SPACING),
        instance_number: int(object, tags::INSTANCE_NUMBER),
        parameters: volume_parameters(object),
        image_type: strings(object, tags::IMAGE_TYPE),
        enhanced: object.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS).ok().flatten().is_some(),
    }))
}

/// Echo, time and diffusion attributes of one image. The b-value and gradient come
/// from DiffusionBValue (0018,9087) and DiffusionGradientOrientation (0018,9089),
/// at top level or in MRDiffusionSequence, else from the Siemens private
/// B_value (0019,xx0C) and DiffusionGradientDirection (0019,xx0E).
fn volume_parameters(object: &InMemDicomObject) -> VolumeParameters {
    let diffusion = first_item(object, tags::MR_DIFFUSION);
    let b_value = float(object, tags::DIFFUSION_B_VALUE)
        .or_else(|| diffusion.and_then(|d| float(d, tags::DIFFUSION_B_VALUE)))
        .or_else(|| csa::b_value(object));
    let gradient = floats::<3>(object, tags::DIFFUSION_GRADIENT_ORIENTATION)
        .or_else(|| {
            let direction = diffusion.and_then(|d| first_item(d, tags::DIFFUSION_GRADIENT_DIRECTION))?;
            floats::<3>(direction, tags::DIFFUSION_GRADIENT_ORIENTATION)
        })
        .or_else(|| csa::gradient_direction(object));
    VolumeParameters {
        echo_number: int(object, tags::ECHO_NUMBERS),
        echo_time: float(object, tags::ECHO_TIME),
        temporal_position: int(object, tags::TEMPORAL_POSITION_IDENTIFIER),
        trigger_time: float(object, tags::TRIGGER_TIME),
        acquisition_number: int(object, tags::ACQUISITION_NUMBER),
        b_value,
        gradient,
    }
}

/// The trimmed text of an attribute; `None` when absent or empty.
pub(crate) fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    let element = object.element_opt(tag).ok()??;
    let value = element.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

/// The values of a multi-valued string attribute, trimmed.
pub(crate) fn strings(object: &InMemDicomObject, tag: Tag) -> Vec<String> {
    let Some(element) = object.element_opt(tag).ok().flatten() else {
        return Vec::new();
    };
    match element.to_multi_str() {
        Ok(values) => values
            .iter()
            .map(|v| v.trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string())
            .filter(|v| !v.is_empty())
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn int(object: &InMemDicomObject, tag: Tag) -> Option<i64> {
    object.element_opt(tag).ok()??.to_int::<i64>().ok()
}

pub(crate) fn float(object: &InMemDicomObject, tag: Tag) -> Option<f64> {
    let value = object.element_opt(tag).ok()??.to_float64().ok()?;
    value.is_finite().then_some(value)
}

/// Exactly `N` finite numbers, or `None`.
pub(crate) fn floats<const N: usize>(object: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let values = object.element_opt(tag).ok()??.to_multi_float64().ok()?;
    let array: [f64; N] = values.try_into().ok()?;
    array.iter().all(|v| v.is_finite()).then_some(array)
}

/// The first item of a sequence attribute.
pub(crate) fn first_item(object: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    object.element_opt(tag).ok()??.items()?.first()
}

/// The items of a sequence attribute (empty when absent).
pub(crate) fn items(object: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    object
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}
